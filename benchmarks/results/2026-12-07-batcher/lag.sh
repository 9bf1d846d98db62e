#!/usr/bin/env bash
set -euo pipefail
cd /work/main
. benchmarks/lib.sh
BIN=/var/tmp/folio-base
OBJECT_STORE_TOML="kind = \"local\"
path = \"$WORK/objects\""
start_group
f1=$(printf '%s\n' "${addrs[@]}" | grep -v -x "$leader" | head -1)
"$BIN" admin status --addr "$leader" --json | head -c 600; echo
"$BENCH" commit --addr "$leader" --count ${COUNT:-30000} --pages 1 --writers ${W:-16} > $WORK/c.log 2>&1 &
cpid=$!
sleep 2
for i in $(seq 1 15); do
  "$BIN" admin status --addr "$leader" --json | python3 -c '
import json,sys; d=json.load(sys.stdin)
print(" ".join("%s:%s/%s" % (n["node_id"] if n["node_id"]!=d["leader_id"] else "L", n.get("applied_index"), n.get("last_log_index")) for n in d["nodes"]))'
done
wait $cpid; tail -2 $WORK/c.log
