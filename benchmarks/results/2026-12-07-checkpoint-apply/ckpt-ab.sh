#!/usr/bin/env bash
# Two builds against each other at 16 writers, long enough for the checkpoints to fall inside
# the run: commit latency tail, the leader's apply stalls, checkpoints. A fresh group per build
# and round, ROUNDS (default 2) rounds alternating. Arguments: the names of the builds, run from
# /var/tmp/folio-NAME (see ../2026-12-07-batcher/common.sh).
set -euo pipefail
. "$(dirname "$0")/../2026-12-07-batcher/common.sh"
for round in $(seq "${ROUNDS:-2}"); do
  for name in "$@"; do
    use "$name"
    start_local "$WORK/g-$round-$name"
    r=$("$BENCH" commit --addr "$leader" --count "${COUNT:-60000}" --pages 1 --writers 16 | tr '\n' ' ')
    m=$(curl -s "http://$leader_metrics/metrics")
    over() { echo "$m" | awk -v le="$1" -F'[{}" ]' '/^folio_raft_apply_latency_seconds_bucket/ {if ($3==le) b=$NF} /^folio_raft_apply_latency_seconds_count/ {c=$NF} END {print c-b}'; }
    ck=$(echo "$m" | awk '/^folio_checkpoints_total/ {print $2}')
    echo "round $round $name: $r | applies over 12.8ms $(over 0.0128) over 51ms $(over 0.0512) | checkpoints $ck"
    stop_local
  done
done
