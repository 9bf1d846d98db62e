# Sourced by the scripts: keeps cargo's target directory outside the clone, in a cache path that
# survives between runs (a cold build of RocksDB takes many minutes on 2 cores).
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  if mkdir -p /var/cache/folio/target 2>/dev/null && [ -w /var/cache/folio/target ]; then
    export CARGO_TARGET_DIR=/var/cache/folio/target
  else
    export CARGO_TARGET_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/folio/target"
    mkdir -p "$CARGO_TARGET_DIR"
  fi
fi
