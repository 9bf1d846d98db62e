//! Folio's system tests. Each test in this package (the `*.rs` files beside `Cargo.toml`) starts
//! real processes of the `folio` binary, through `folio_testkit`'s `Cluster` and
//! `RegistryCluster` or directly, and checks the system from outside: failover, flushes to an
//! S3-compatible server, the registry, the storage lifecycle, security, the CLI, the Python
//! client, the example app, the Helm chart and the Compose stack. Unit tests and the tests of one
//! crate stay in that crate; fault injection with a history checker is in `jepsen/`.
//!
//! The tests run the `folio` that the workspace build puts in `target/<profile>/`: build the
//! whole workspace first (`cargo build --workspace --all-targets`, as `scripts/test.sh` does), or
//! set `FOLIO_BIN` to a binary built elsewhere.

use std::path::PathBuf;

/// The `folio` binary under test: `$FOLIO_BIN`, else `target/<profile>/folio` beside the test
/// executable. Panics, saying to build the workspace first, when there is none.
pub fn folio_bin() -> PathBuf {
    folio_testkit::built("folio", "FOLIO_BIN").unwrap_or_else(|e| panic!("{e:#}"))
}
