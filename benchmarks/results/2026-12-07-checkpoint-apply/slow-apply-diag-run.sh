#!/usr/bin/env bash
# Runs /var/tmp/folio-diag (built with slow-apply-diag.patch applied) under 16 writers, with and
# without the history compaction after each checkpoint, two rounds alternating; keeps the nodes logs
# (their "DIAGNOSTIC slow apply" lines) in $OUT.
set -euo pipefail
. "$(dirname "$0")/../2026-12-07-batcher/common.sh"
use diag
for round in 1 2; do
for variant in compact nocompact; do
if [ $variant = nocompact ]; then export FOLIO_DIAG_NO_COMPACT=1; else unset FOLIO_DIAG_NO_COMPACT; fi
start_local "$WORK/g-$variant-$round"
r=$("$BENCH" commit --addr "$leader" --count 60000 --pages 1 --writers 16 | tr '\n' ' ')
echo "round $round $variant: $r"
mkdir -p ${OUT:-/tmp/slow-apply-logs}/$round-$variant && cp "$GROUP_DIR"/node-*.log ${OUT:-/tmp/slow-apply-logs}/$round-$variant/
stop_local
done
done
