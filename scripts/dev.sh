#!/usr/bin/env bash
# Builds and starts Folio on its embedded default: a single-node group with data under
# ./.folio-dev, listening on 127.0.0.1:7070. Extra arguments go to `folio dev`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
# The binaries, and the libraries with them: the SQLite extension (libfolio_sqlite.so) is one.
cargo build --release --workspace --bins --lib
exec "$CARGO_TARGET_DIR/release/folio" dev "$@"
