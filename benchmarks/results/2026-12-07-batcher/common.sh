# Sourced by this directory's scripts: benchmarks/lib.sh from the repository's root (wherever the
# clone is), and 3-node groups on a local-directory store, run from a release binary copied to
# /var/tmp/folio-NAME. Not run on its own.
cd "$(dirname "${BASH_SOURCE[0]}")/../../.."
. benchmarks/lib.sh
# use NAME: the groups started next run /var/tmp/folio-NAME.
use() { BIN=/var/tmp/folio-$1; }
# start_local [DIR]: a group in DIR (default: the work directory); sets leader, addrs, pids.
start_local() {
  export GROUP_DIR=${1:-$WORK}
  OBJECT_STORE_TOML="kind = \"local\"
path = \"$GROUP_DIR/objects\""
  start_group 2>/dev/null || { echo "no leader in $GROUP_DIR" >&2; exit 1; }
}
# stop_local: ends the group start_local started, and removes its directory unless it is the
# work directory (lib.sh removes that on exit).
stop_local() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
  [ "$GROUP_DIR" = "$WORK" ] || rm -rf "$GROUP_DIR"
}
