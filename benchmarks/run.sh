#!/usr/bin/env bash
# The benchmark of record: on this machine, runs the `folio-bench` suite RUNS times (default 3) and
# writes every run's results plus a summary of medians and ratios to the baselines:
#   benchmarks/results/<date>/run-N/{results.json,latency.svg}, .../summary.md
# Each run starts its own 3-node Folio group, a second group with flush.early_seal = false (the
# acknowledge-after-flush baseline) and a 3-member etcd cluster, all on 127.0.0.1, and flushes to
# moto (an S3-compatible server) started here. On a fresh Debian machine it first installs what
# is missing (build tools, moto, etcd-server) and builds the release binaries (`folio` and
# `folio-bench`, which starts its groups from that `folio`). Everything started is torn down on
# exit.
#   benchmarks/run.sh [RUNS]
# Environment: FOLIO_BENCH_STORE=local flushes to a local directory instead of moto;
# FOLIO_BENCH_ARGS adds arguments to every `folio-bench` run (e.g. "--secs 5").
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
[[ "$RUNS" =~ ^[1-9][0-9]?$ ]] || { echo "usage: benchmarks/run.sh [RUNS] (1 to 99)" >&2; exit 2; }
STORE=${FOLIO_BENCH_STORE:-s3}
[[ "$STORE" == s3 || "$STORE" == local ]] || { echo "FOLIO_BENCH_STORE must be s3 or local" >&2; exit 2; }

# etcd 3.x from Debian for the etcd baseline.
if ! command -v etcd >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "run.sh: installing etcd-server" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq etcd-server >/dev/null
fi
ETCD_BIN=$(command -v etcd)

# Installs the rest, builds the release binaries, and sets BIN, BENCH, WORK and the cleanup trap.
. benchmarks/lib.sh

STORE_ARGS=()
if [ "$STORE" = s3 ]; then
  start_moto
  STORE_ARGS=(--s3-endpoint "$S3_ENDPOINT" --s3-bucket folio)
fi

OUT="benchmarks/results/$(date -u +%Y-%m-%d-%H%M%S)"
mkdir -p "$OUT"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/{print $2}') GiB RAM, Linux $(uname -r)"
  echo "disk under test: $(df --output=source "$WORK" | tail -1) ($WORK)"
  echo "etcd: $("$ETCD_BIN" --version | head -1)"
  echo "object store: $STORE"
  echo "command: $BENCH --folio-bin $BIN --etcd-bin $ETCD_BIN ${STORE_ARGS[*]} ${FOLIO_BENCH_ARGS:-}"
} > "$OUT/machine.txt"
cat "$OUT/machine.txt"

for i in $(seq 1 "$RUNS"); do
  echo "=== run $i of $RUNS"
  # shellcheck disable=SC2086  # FOLIO_BENCH_ARGS is a list of arguments
  "$BENCH" --folio-bin "$BIN" --out "$OUT/run-$i" --work-dir "$WORK/run-$i" \
    --etcd-bin "$ETCD_BIN" "${STORE_ARGS[@]}" ${FOLIO_BENCH_ARGS:-}
  rm -rf "$WORK/run-$i"
done

python3 benchmarks/report.py "$OUT"/run-*/results.json > "$OUT/summary.md"
cat "$OUT/summary.md"
echo "results in $OUT"
