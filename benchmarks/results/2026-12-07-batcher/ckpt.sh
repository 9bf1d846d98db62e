#!/usr/bin/env bash
# checkpoint.entries_max A/B at 16 writers, long enough for several checkpoints: commit latency
# tail, the leader's apply stalls, checkpoints and object-store requests. Rounds alternate.
set -euo pipefail
cd /work/main
. benchmarks/lib.sh
BIN=/var/tmp/folio-base
for round in 1 2; do
  for n in "$@"; do
    node_extra() { printf '[checkpoint]\nentries_max = %s\n' "$n"; }
    export GROUP_DIR="$WORK/g-$round-$n"
    OBJECT_STORE_TOML="kind = \"local\"
path = \"$GROUP_DIR/objects\""
    start_group 2>/dev/null || { echo "round $round $n: no leader"; exit 1; }
    r=$("$BENCH" commit --addr "$leader" --count ${COUNT:-60000} --pages 1 --writers 16 | tr '\n' ' ')
    m=$(curl -s "http://$leader_metrics/metrics")
    over() { echo "$m" | awk -v le="$1" -F'[{}" ]' '/^folio_raft_apply_latency_seconds_bucket/ {if ($3==le) b=$NF} /^folio_raft_apply_latency_seconds_count/ {c=$NF} END {print c-b}'; }
    ck=$(echo "$m" | awk '/^folio_checkpoints_total/ {print $2}')
    req=$(echo "$m" | awk '/^folio_object_store_requests_total/ {s+=$NF} END {print s}')
    echo "round $round entries_max $n: $r | applies over 12.8ms $(over 0.0128) over 51ms $(over 0.0512) | checkpoints $ck | store requests $req"
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pids=()
    rm -rf "$GROUP_DIR"
  done
done
