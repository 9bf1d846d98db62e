#!/usr/bin/env bash
# commit-latency.sh's one-writer measurement, twice, after 20,000 one-page commits from 16
# writers (about 85 MiB of log), so that each node's Raft log is past its first segment (created
# sparse) and appends into segments written in full beforehand, as a node that has run a while
# does. FOLIO_BIN runs the group on another `folio` binary (an A/B run).
#   benchmarks/commit-latency-warm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. benchmarks/lib.sh
OBJECT_STORE_TOML="kind = \"local\"
path = \"$WORK/objects\""
start_group
echo "machine: $(nproc) cores, $(uname -r), data dir on $(df --output=source "$WORK" | tail -1)"
"$BENCH" commit --addr "$leader" --count 20000 --pages 1 --writers 16 --warmup 1 | sed 's/^/warm-up: /'
for d in "$WORK"/node-*/raft-log; do echo "$d: $(ls "$d" | tr '\n' ' ')"; done
mkdir -p "$WORK/fsync"
for round in 1 2; do
  "$BENCH" fsync --dir "$WORK/fsync" --count 2000
  "$BENCH" rpc --addr "$leader" --count 2000
  "$BENCH" commit --addr "$leader" --count 2000 --pages 1
done
