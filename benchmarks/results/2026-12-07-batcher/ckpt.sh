#!/usr/bin/env bash
# [checkpoint] entries_max against each other at 16 writers, long enough for several checkpoints:
# commit latency tail, the leader's apply stalls, checkpoints and object-store requests. A fresh
# group per setting and round; two rounds alternating. Arguments: the settings.
set -euo pipefail
. "$(dirname "$0")/common.sh"
use base
for round in 1 2; do
  for n in "$@"; do
    node_extra() { printf '[checkpoint]\nentries_max = %s\n' "$n"; }
    start_local "$WORK/g-$round-$n"
    r=$("$BENCH" commit --addr "$leader" --count "${COUNT:-60000}" --pages 1 --writers 16 | tr '\n' ' ')
    m=$(curl -s "http://$leader_metrics/metrics")
    over() { echo "$m" | awk -v le="$1" -F'[{}" ]' '/^folio_raft_apply_latency_seconds_bucket/ {if ($3==le) b=$NF} /^folio_raft_apply_latency_seconds_count/ {c=$NF} END {print c-b}'; }
    ck=$(echo "$m" | awk '/^folio_checkpoints_total/ {print $2}')
    req=$(echo "$m" | awk '/^folio_object_store_requests_total/ {s+=$NF} END {print s}')
    echo "round $round entries_max $n: $r | applies over 12.8ms $(over 0.0128) over 51ms $(over 0.0512) | checkpoints $ck | store requests $req"
    stop_local
  done
done
