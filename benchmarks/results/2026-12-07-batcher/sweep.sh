#!/usr/bin/env bash
# Binaries against each other: a fresh group per binary and round, 1 to 16 writers, one page;
# three rounds alternating. Arguments: binary names (/var/tmp/folio-NAME).
set -euo pipefail
. "$(dirname "$0")/common.sh"
for round in 1 2 3; do
  for b in "$@"; do
    use "$b"
    start_local "$WORK/g-$round-$b"
    for w in 1 2 4 8 16; do
      echo "round $round bin $b writers $w: $("$BENCH" commit --addr "$leader" --count $((w < 4 ? 2000 : 4000)) --pages 1 --writers $w | tr '\n' ' ')"
    done
    stop_local
  done
done
