#!/usr/bin/env bash
# Measures, on this machine, in one run: the disk's 4 KiB append + fdatasync floor in the data
# directory, a loopback gRPC round trip, and single-writer commit latency against a 3-node group
# of release-built `folio server` processes on 127.0.0.1 (through the leader and through a
# follower). Starts the group in a temporary directory and tears it down on exit.
#   benchmarks/commit-latency.sh [COUNT] [PAGES]
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${1:-2000}
PAGES=${2:-1}
. benchmarks/lib.sh
OBJECT_STORE_TOML="kind = \"local\"
path = \"$WORK/objects\""
start_group

echo "machine: $(nproc) cores, $(uname -r), data dir on $(df --output=source "$WORK" | tail -1)"
mkdir -p "$WORK/fsync"
"$BENCH" fsync --dir "$WORK/fsync" --count "$COUNT"
"$BENCH" rpc --addr "$leader" --count "$COUNT"
"$BENCH" commit --addr "$leader" --count "$COUNT" --pages "$PAGES"
echo "(through a follower, forwarded once to the leader:)"
"$BENCH" commit --addr "$follower" --count "$COUNT" --pages "$PAGES"

# Group commit: concurrent writers share Raft entries. The mean batch size is read from the
# leader's folio_batch_requests histogram, before and after, so it covers only this workload.
batch_mean() {
  python3 - "$1" <<'PY'
import re, sys, urllib.request
text = urllib.request.urlopen(f"http://{sys.argv[1]}/metrics", timeout=5).read().decode()
v = {m.group(1): float(m.group(2)) for m in re.finditer(r"^folio_batch_requests_(sum|count) (\S+)$", text, re.M)}
print(v.get("sum", 0), v.get("count", 0))
PY
}
for W in 16 64; do
  read -r s0 c0 < <(batch_mean "$leader_metrics")
  "$BENCH" commit --addr "$leader" --count $((COUNT * 4)) --pages "$PAGES" --writers "$W" --warmup 5
  read -r s1 c1 < <(batch_mean "$leader_metrics")
  python3 -c "print(f'  mean commands per Raft entry: {($s1-$s0)/max($c1-$c0,1):.1f}')"
done
