#!/usr/bin/env bash
# Node state stays bounded while history grows: runs `folio-bench history` (a 3-node group of
# release-built `folio server` processes, 64 writers, until 1,000,000 page versions or 600 s) and
# writes its table, history.json and history.svg to benchmarks/results/<date>-history/. Flushes to
# moto (an S3-compatible server started here; bucket bytes are then estimated from node metrics)
# or, with FOLIO_BENCH_STORE=local, to a local directory (bucket bytes walked exactly). Builds the
# binaries first (see lib.sh) and tears everything down on exit.
#   benchmarks/history.sh
# Environment: FOLIO_BENCH_STORE=s3|local (default s3); FOLIO_BENCH_ARGS adds arguments to
# `folio-bench history` (e.g. "--secs 60 --writers 16").
set -euo pipefail
cd "$(dirname "$0")/.."
STORE=${FOLIO_BENCH_STORE:-s3}
[[ "$STORE" == s3 || "$STORE" == local ]] || { echo "FOLIO_BENCH_STORE must be s3 or local" >&2; exit 2; }

# Installs what is missing, builds the release binaries, and sets BIN, BENCH, WORK and cleanup.
. benchmarks/lib.sh

STORE_ARGS=()
if [ "$STORE" = s3 ]; then
  start_moto
  STORE_ARGS=(--s3-endpoint "$S3_ENDPOINT" --s3-bucket folio)
fi

OUT="benchmarks/results/$(date -u +%Y-%m-%d-%H%M%S)-history"
mkdir -p "$OUT"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/{print $2}') GiB RAM, Linux $(uname -r)"
  echo "disk under test: $(df --output=source "$WORK" | tail -1) ($WORK)"
  echo "object store: $STORE"
  echo "command: $BENCH history --folio-bin $BIN ${STORE_ARGS[*]} ${FOLIO_BENCH_ARGS:-}"
} > "$OUT/machine.txt"
cat "$OUT/machine.txt"

# shellcheck disable=SC2086  # FOLIO_BENCH_ARGS is a list of arguments
"$BENCH" history --folio-bin "$BIN" --out "$OUT" --work-dir "$WORK" "${STORE_ARGS[@]}" \
  ${FOLIO_BENCH_ARGS:-} | tee "$OUT/table.txt"
echo "results in $OUT"
