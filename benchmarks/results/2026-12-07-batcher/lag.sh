#!/usr/bin/env bash
# W (16) writers make COUNT (30,000) one-page commits while `folio admin status` samples every
# member's applied index and last log index 15 times (L: the leader).
set -euo pipefail
. "$(dirname "$0")/common.sh"
use "${1:-base}"
start_local
"$BENCH" commit --addr "$leader" --count "${COUNT:-30000}" --pages 1 --writers "${W:-16}" > "$WORK/c.log" 2>&1 &
cpid=$!
sleep 2
for _ in $(seq 1 15); do
  "$BIN" admin status --addr "$leader" --json | python3 -c '
import json,sys; d=json.load(sys.stdin)
print(" ".join("%s:%s/%s" % (n["node_id"] if n["node_id"]!=d["leader_id"] else "L", n.get("applied_index"), n.get("last_log_index")) for n in d["nodes"]))'
done
wait "$cpid"; tail -2 "$WORK/c.log"
