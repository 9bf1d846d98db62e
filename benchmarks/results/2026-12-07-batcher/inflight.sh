#!/usr/bin/env bash
# [limits] inflight_batches_max against each other: a fresh group per setting and round, 1 to 16
# writers, one page; two rounds alternating. Arguments: the settings.
set -euo pipefail
. "$(dirname "$0")/common.sh"
use base
for round in 1 2; do
  for n in "$@"; do
    node_extra() { printf '[limits]\ninflight_batches_max = %s\n' "$n"; }
    start_local "$WORK/g-$round-$n"
    for w in 1 2 4 8 16; do
      echo "round $round inflight $n writers $w: $("$BENCH" commit --addr "$leader" --count $((w < 4 ? 2000 : 4000)) --pages 1 --writers $w | tr '\n' ' ')"
    done
    stop_local
  done
done
