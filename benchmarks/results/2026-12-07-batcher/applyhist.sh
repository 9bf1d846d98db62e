#!/usr/bin/env bash
set -euo pipefail
cd /work/main
. benchmarks/lib.sh
BIN=/var/tmp/folio-base
OBJECT_STORE_TOML="kind = \"local\"
path = \"$WORK/objects\""
start_group
"$BENCH" commit --addr "$leader" --count ${COUNT:-60000} --pages 1 --writers 16 | tail -2
curl -s "http://$leader_metrics/metrics" | grep -E "folio_raft_apply_latency_seconds_(bucket|count|sum)|folio_raft_append_latency_seconds_(bucket|count|sum)|checkpoint" | grep -v "^#" 
