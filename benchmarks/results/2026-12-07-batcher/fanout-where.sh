#!/usr/bin/env bash
# folio-fanout with every watcher on the leader, then every watcher on the two followers.
set -euo pipefail
. "$(dirname "$0")/common.sh"
use "${1:-base}"
start_local
followers=$(printf '%s\n' "${addrs[@]}" | grep -v -x "$leader" | paste -sd,)
for round in 1 2; do
  for where in leader followers; do
    a=$leader; [ "$where" = followers ] && a=$followers
    echo "round $round watchers on $where ($a): $("$BENCH" --addr "$a" --workloads folio-fanout --out "$WORK/o" 2>&1 | grep 'done in')"
  done
done
