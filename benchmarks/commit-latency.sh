#!/usr/bin/env bash
# Measures, on this machine, in one run: the disk's 4 KiB append + fdatasync floor in the data
# directory, a loopback gRPC round trip, and single-writer commit latency against a 3-node group
# of release-built `folio server` processes on 127.0.0.1 (through the leader and through a
# follower). Starts the group in a temporary directory and tears it down on exit.
#   benchmarks/commit-latency.sh [COUNT] [PAGES]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
COUNT=${1:-2000}
PAGES=${2:-1}
cargo build --release --workspace --bins >/dev/null
BIN="$CARGO_TARGET_DIR/release/folio"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/folio-bench.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
addrs=()
metrics=()
for i in 1 2 3; do addrs+=("127.0.0.1:$(port)"); metrics+=("127.0.0.1:$(port)"); done
for i in 1 2 3; do
  {
    echo "node_id = $i"
    echo "listen_addr = \"${addrs[$((i-1))]}\""
    echo "data_dir = \"$WORK/node-$i\""
    echo "metrics_addr = \"${metrics[$((i-1))]}\""
    for j in 1 2 3; do printf '[[initial_members]]\nid = %s\naddr = "%s"\n' "$j" "${addrs[$((j-1))]}"; done
    printf '[object_store]\nkind = "local"\npath = "%s"\n' "$WORK/objects"
  } > "$WORK/node-$i.toml"
  FOLIO_LOG=warn "$BIN" server --config "$WORK/node-$i.toml" >"$WORK/node-$i.log" 2>&1 &
  pids+=($!)
done

leader=""
for _ in $(seq 1 100); do
  leader=$("$BIN" admin status --addr "${addrs[0]}" --json 2>/dev/null \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["leader_addr"] if d["leader_id"] else "")' || true)
  [ -n "$leader" ] && break
  sleep 0.1
done
[ -n "$leader" ] || { echo "no leader elected" >&2; exit 1; }
follower=$(printf '%s\n' "${addrs[@]}" | grep -v -x "$leader" | head -1)

echo "machine: $(nproc) cores, $(uname -r), data dir on $(df --output=source "$WORK" | tail -1)"
mkdir -p "$WORK/fsync"
"$BIN" bench fsync --dir "$WORK/fsync" --count "$COUNT"
"$BIN" bench rpc --addr "$leader" --count "$COUNT"
"$BIN" bench commit --addr "$leader" --count "$COUNT" --pages "$PAGES"
echo "(through a follower, forwarded once to the leader:)"
"$BIN" bench commit --addr "$follower" --count "$COUNT" --pages "$PAGES"

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
for i in 1 2 3; do [ "${addrs[$((i-1))]}" = "$leader" ] && leader_metrics=${metrics[$((i-1))]}; done
for W in 16 64; do
  read -r s0 c0 < <(batch_mean "$leader_metrics")
  "$BIN" bench commit --addr "$leader" --count $((COUNT * 4)) --pages "$PAGES" --writers "$W" --warmup 5
  read -r s1 c1 < <(batch_mean "$leader_metrics")
  python3 -c "print(f'  mean commands per Raft entry: {($s1-$s0)/max($c1-$c0,1):.1f}')"
done
