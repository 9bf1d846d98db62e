# Shared by the benchmark scripts: build, a work directory torn down on exit, and a 3-node group
# of release-built `folio server` processes on 127.0.0.1. Source it from the repository root.
#   BIN, BENCH          the release-built `folio` and `folio-bench` (the measurements); set
#                       FOLIO_BIN to run the group on another `folio` binary (an A/B run)
#   OBJECT_STORE_TOML   the [object_store] section every node gets (required by start_group)
#   after start_group:  BIN, BENCH, WORK, addrs[], metrics[], leader, leader_metrics, follower
#   optional:           GROUP_DIR (where the group's files go; default WORK), a function
#                       node_extra N (more TOML for node N), ADMIN_ARGS (how `folio admin`
#                       reaches the nodes: --ca, --token-file)
scripts/setup.sh
. scripts/env.sh
cargo build --release --workspace --bins >/dev/null
BIN="${FOLIO_BIN:-$CARGO_TARGET_DIR/release/folio}"
BENCH="$CARGO_TARGET_DIR/release/folio-bench"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/folio-bench.XXXXXX")
pids=()
ADMIN_ARGS=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Starts moto (an S3-compatible server, installed by scripts/setup.sh) on a free port with a
# bucket named folio. Sets S3_PORT and S3_ENDPOINT.
start_moto() {
  S3_PORT=$(port)
  S3_ENDPOINT="http://127.0.0.1:$S3_PORT"
  python3 -m moto.server -H 127.0.0.1 -p "$S3_PORT" >"$WORK/moto.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 200); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $S3_PORT), 0.2)" 2>/dev/null && break
    sleep 0.1
  done
  python3 -c "import urllib.request as u; u.urlopen(u.Request('$S3_ENDPOINT/folio', method='PUT'))"
}

start_group() {
  local dir=${GROUP_DIR:-$WORK}
  mkdir -p "$dir"
  addrs=(); metrics=()
  for i in 1 2 3; do addrs+=("127.0.0.1:$(port)"); metrics+=("127.0.0.1:$(port)"); done
  for i in 1 2 3; do
    {
      echo "node_id = $i"
      echo "listen_addr = \"${addrs[$((i-1))]}\""
      echo "data_dir = \"$dir/node-$i\""
      echo "metrics_addr = \"${metrics[$((i-1))]}\""
      for j in 1 2 3; do printf '[[initial_members]]\nid = %s\naddr = "%s"\n' "$j" "${addrs[$((j-1))]}"; done
      printf '[object_store]\n%s\n' "$OBJECT_STORE_TOML"
      if declare -F node_extra >/dev/null; then node_extra "$i"; fi
    } > "$dir/node-$i.toml"
    AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-test} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-test} \
      AWS_EC2_METADATA_DISABLED=true FOLIO_LOG=warn \
      "$BIN" server --config "$dir/node-$i.toml" >"$dir/node-$i.log" 2>&1 &
    pids+=($!)
  done
  leader=""
  for _ in $(seq 1 100); do
    leader=$("$BIN" admin status --addr "${addrs[0]}" --json "${ADMIN_ARGS[@]}" 2>/dev/null \
      | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["leader_addr"] if d["leader_id"] else "")' || true)
    [ -n "$leader" ] && break
    sleep 0.1
  done
  [ -n "$leader" ] || { echo "no leader elected" >&2; exit 1; }
  follower=$(printf '%s\n' "${addrs[@]}" | grep -v -x "$leader" | head -1)
  for i in 1 2 3; do [ "${addrs[$((i-1))]}" = "$leader" ] && leader_metrics=${metrics[$((i-1))]}; done
  return 0
}
