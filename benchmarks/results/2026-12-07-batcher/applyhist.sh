#!/usr/bin/env bash
# 16 writers, COUNT (60,000) one-page commits; then the leader's apply and append histograms
# and checkpoint metrics.
set -euo pipefail
. "$(dirname "$0")/common.sh"
use "${1:-base}"
start_local
"$BENCH" commit --addr "$leader" --count "${COUNT:-60000}" --pages 1 --writers 16 | tail -2
curl -s "http://$leader_metrics/metrics" \
  | grep -E "folio_raft_(apply|append)_latency_seconds_(bucket|count|sum)|checkpoint" | grep -v "^#"
