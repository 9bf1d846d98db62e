#!/usr/bin/env bash
# inflight_batches_max sweep: 1-16 writers, one page, per setting; rounds alternating.
set -euo pipefail
cd /work/main
. benchmarks/lib.sh
BIN=/var/tmp/folio-base
for round in 1 2; do
  for n in "$@"; do
    node_extra() { printf '[limits]\ninflight_batches_max = %s\n' "$n"; }
    export GROUP_DIR="$WORK/g-$round-$n"
    OBJECT_STORE_TOML="kind = \"local\"
path = \"$GROUP_DIR/objects\""
    start_group 2>/dev/null || { echo "round $round inflight $n: no leader"; tail -5 "$GROUP_DIR"/node-*.log; exit 1; }
    for w in 1 2 4 8 16; do
      echo "round $round inflight $n writers $w: $("$BENCH" commit --addr "$leader" --count $((w < 4 ? 2000 : 4000)) --pages 1 --writers $w | tr '\n' ' ')"
    done
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pids=()
  done
done
