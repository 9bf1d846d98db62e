#!/usr/bin/env bash
# What an overwrite workload costs in the bucket, with garbage collection on and off: runs
# `folio-bench lifecycle` (for each mode a 3-node group of release-built `folio server` processes
# on a local store; 16 writers rewrite 1,000 hot pages for 600 s under a 60 s retention) and
# writes its table, lifecycle.json and lifecycle.svg to benchmarks/results/<date>-lifecycle/.
# Builds the binaries first (see lib.sh) and tears everything down on exit.
#   benchmarks/lifecycle.sh
# Environment: FOLIO_BENCH_ARGS adds arguments to `folio-bench lifecycle` (e.g. "--secs 120",
# "--gc on", or prices: "--put-per-1k 0.0054 --gb-month 0.025").
set -euo pipefail
cd "$(dirname "$0")/.."

# Installs what is missing, builds the release binaries, and sets BIN, BENCH, WORK and cleanup.
. benchmarks/lib.sh

OUT="benchmarks/results/$(date -u +%Y-%m-%d-%H%M%S)-lifecycle"
mkdir -p "$OUT"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/{print $2}') GiB RAM, Linux $(uname -r)"
  echo "disk under test: $(df --output=source "$WORK" | tail -1) ($WORK)"
  echo "command: $BENCH lifecycle --folio-bin $BIN ${FOLIO_BENCH_ARGS:-}"
} > "$OUT/machine.txt"
cat "$OUT/machine.txt"

# shellcheck disable=SC2086  # FOLIO_BENCH_ARGS is a list of arguments
"$BENCH" lifecycle --folio-bin "$BIN" --out "$OUT" --work-dir "$WORK" ${FOLIO_BENCH_ARGS:-} \
  | tee "$OUT/table.txt"
echo "results in $OUT"
