//! openraft's storage conformance suite against the registry: the write tier's RocksDB log store
//! (generic over the group's types) with the registry's state machine.

use folio_raft::LogStore;
use folio_registry::state::{open, RegistryStore};
use folio_registry::RegTypes;
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;

struct Builder;

impl StoreBuilder<RegTypes, LogStore<RegTypes>, RegistryStore, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore<RegTypes>, RegistryStore), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("create temp dir");
        let (log, sm) = open(dir.path()).expect("open registry store");
        Ok((dir, log, sm))
    }
}

#[test]
#[allow(clippy::result_large_err)] // openraft's error type, returned as the suite returns it
fn openraft_storage_suite() -> Result<(), StorageError<u64>> {
    Suite::test_all(Builder)
}
