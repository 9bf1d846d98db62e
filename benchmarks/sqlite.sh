#!/usr/bin/env bash
# SQLite through the Folio VFS on this machine (issue 19): starts a 3-node group of release-built
# `folio server` processes on 127.0.0.1 (local-directory object store) and runs `folio-bench
# sqlite` against its leader: one-row insert transactions against a local SQLite file with
# synchronous=FULL on the same disk, and a cold open plus first query of a DB_MB MiB database,
# lazily against downloading it whole. Writes the output and machine details to
# benchmarks/results/<date>-sqlite/. Everything started is torn down on exit.
#   benchmarks/sqlite.sh [COUNT] [DB_MB] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-1000}
DB_MB=${2:-100}
ROUNDS=${3:-3}
for n in "$COUNT" "$DB_MB" "$ROUNDS"; do
  [[ "$n" =~ ^[1-9][0-9]{0,5}$ ]] || { echo "usage: benchmarks/sqlite.sh [COUNT] [DB_MB] [ROUNDS]" >&2; exit 2; }
done
. benchmarks/lib.sh

OBJECT_STORE_TOML="kind = \"local\"
path = \"$WORK/objects\""
start_group

OUT="benchmarks/results/$(date -u +%Y-%m-%d-%H%M%S)-sqlite"
mkdir -p "$OUT"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/{print $2}') GiB RAM, Linux $(uname -r)"
  echo "group: 3 nodes on 127.0.0.1, local-directory object store; local SQLite files in $WORK (same disk)"
  echo "command: benchmarks/sqlite.sh $COUNT $DB_MB $ROUNDS"
} > "$OUT/machine.txt"
"$BENCH" sqlite --addr "$leader" --count "$COUNT" --db-mb "$DB_MB" --rounds "$ROUNDS" --dir "$WORK" --json \
  | tee "$OUT/output.txt"
echo "results in $OUT"
