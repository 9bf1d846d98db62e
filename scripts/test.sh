#!/usr/bin/env bash
# Runs the whole test suite: unit tests, openraft's storage suite, and the integration tests that
# start real `folio server` processes on 127.0.0.1 and kill them. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
# Build the whole workspace at once: building one package alone unifies features differently and
# rebuilds RocksDB.
cargo build --workspace --all-targets
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
