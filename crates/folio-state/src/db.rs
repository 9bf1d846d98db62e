//! Opening a node's store: one RocksDB instance holding the Raft log's column families
//! ([`folio_raft::keys`]) beside the state machine's ([`crate::keys`]), and the errors reading it
//! outside openraft's traits.

use std::path::Path;
use std::sync::Arc;

use folio_core::GroupId;
use folio_raft::LogStore;
use rocksdb::{ColumnFamilyDescriptor, Options, DB};

use crate::keys::all_cfs;
use crate::{StateMachine, TypeConfig};

/// Errors opening or reading the store outside openraft's traits.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("corrupt record in {cf}: {reason}")]
    Corrupt { cf: &'static str, reason: String },
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The replica is replacing its state with a snapshot from its leader: what it would read
    /// now could be half old, half new.
    #[error(
        "this replica is installing a snapshot from its leader; retry, or read from another member"
    )]
    Installing,
}

pub(crate) fn corrupt(cf: &'static str, e: impl ToString) -> StoreError {
    StoreError::Corrupt {
        cf,
        reason: e.to_string(),
    }
}

/// Opens (or creates) a node's store under `dir`: RocksDB in `dir/db`, snapshots in
/// `dir/snapshots`.
pub fn open_store(
    dir: &Path,
    group: GroupId,
) -> Result<(LogStore<TypeConfig>, StateMachine), StoreError> {
    std::fs::create_dir_all(dir)?;
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // Bound the WAL so an idle node does not keep old log files forever.
    opts.set_max_total_wal_size(256 << 20);
    let cfs = all_cfs().map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
    let db = Arc::new(DB::open_cf_descriptors(&opts, dir.join("db"), cfs)?);
    let snapshots = dir.join("snapshots");
    std::fs::create_dir_all(&snapshots)?;
    let sm = StateMachine::open(db.clone(), group, snapshots)?;
    Ok((LogStore::new(db), sm))
}
