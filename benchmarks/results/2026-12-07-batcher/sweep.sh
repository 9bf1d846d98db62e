#!/usr/bin/env bash
# binaries sweep: 1-16 writers, one page; rounds alternating. args: binary names (/var/tmp/folio-X)
set -euo pipefail
cd /work/main
. benchmarks/lib.sh
for round in 1 2 3; do
  for b in "$@"; do
    BIN=/var/tmp/folio-$b
    export GROUP_DIR="$WORK/g-$round-$b"
    OBJECT_STORE_TOML="kind = \"local\"
path = \"$GROUP_DIR/objects\""
    start_group 2>/dev/null || { echo "round $round $b: no leader"; exit 1; }
    for w in 1 2 4 8 16; do
      echo "round $round bin $b writers $w: $("$BENCH" commit --addr "$leader" --count $((w < 4 ? 2000 : 4000)) --pages 1 --writers $w | tr '\n' ' ')"
    done
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pids=()
  done
done
