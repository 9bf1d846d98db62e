//! Opening a node's store: one RocksDB instance holding the Raft log's column families
//! ([`folio_raft::keys`]) beside the state machine's ([`crate::keys`]), and the errors reading it
//! outside openraft's traits.

use std::path::Path;
use std::sync::Arc;

use folio_core::GroupId;
use folio_raft::LogStore;
use rocksdb::{BlockBasedOptions, Cache, ColumnFamilyDescriptor, Options, DB};

/// Bytes of all memtables of a node's RocksDB together.
const MEMTABLE_BYTES: usize = 128 << 20;
/// Bytes of the block cache every column family shares.
const BLOCK_CACHE_BYTES: usize = 64 << 20;

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

/// Opens (or creates) a node's store under `dir`: RocksDB in `dir/db`, the Raft log's segments
/// in `dir/raft-log`, snapshots in `dir/snapshots`.
pub fn open_store(
    dir: &Path,
    group: GroupId,
) -> Result<(LogStore<TypeConfig>, StateMachine), StoreError> {
    std::fs::create_dir_all(dir)?;
    // RocksDB's memory, bounded whatever the number of column families: every memtable
    // together, and one block cache shared by all of them (by default each column family would
    // get its own memtables, up to 2 × 64 MiB, and its own cache).
    let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&cache);
    let mut cf_opts = Options::default();
    cf_opts.set_block_based_table_factory(&table);
    let mut opts = cf_opts.clone();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_db_write_buffer_size(MEMTABLE_BYTES);
    // Bound the WAL so an idle node does not keep old log files forever.
    opts.set_max_total_wal_size(256 << 20);
    let cfs = all_cfs().map(|n| ColumnFamilyDescriptor::new(n, cf_opts.clone()));
    let db = Arc::new(DB::open_cf_descriptors(&opts, dir.join("db"), cfs)?);
    let snapshots = dir.join("snapshots");
    std::fs::create_dir_all(&snapshots)?;
    let sm = StateMachine::open(db.clone(), group, snapshots)?;
    let log = LogStore::open(db, &dir.join("raft-log"))?;
    Ok((log, sm))
}
