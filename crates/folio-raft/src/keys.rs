//! The column families and keys the Raft log store owns. A group's state machine shares the
//! RocksDB instance and adds its own column families beside these. Integers are big-endian so
//! keys sort in numeric order.

use rocksdb::DB;

/// Raft log entries (log index → entry) as builds before the segment log kept them; a log found
/// here is moved into the segment log when the node opens it ([`crate::LogStore::open`]).
pub const CF_LOG: &str = "raft_log";
/// Raft metadata: vote, committed log id, last purged log id.
pub const CF_RAFT_META: &str = "raft_meta";

/// The log store's column families; a group opens its database with these and its own.
pub const LOG_CFS: [&str; 2] = [CF_LOG, CF_RAFT_META];

pub const META_VOTE: &[u8] = b"vote";
pub const META_COMMITTED: &[u8] = b"committed";
pub const META_PURGED: &[u8] = b"last_purged";

pub fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

pub fn log_index(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

/// The handle of a column family the database was opened with.
///
/// # Panics
///
/// If `name` was not among the column families at open: a bug in the caller's open code, not
/// something data can cause.
pub fn cf<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
    db.cf_handle(name)
        .expect("every column family is created at open")
}

/// Options for the compactions Folio asks for itself (of purged log ranges, of checkpointed
/// history). Not exclusive: RocksDB's default pauses every automatic compaction of the database
/// while a manual one runs, and on a slow disk that lets level-0 files pile up until writes
/// stall, the log's synced appends among them.
pub fn manual_compaction() -> rocksdb::CompactOptions {
    let mut o = rocksdb::CompactOptions::default();
    o.set_exclusive_manual_compaction(false);
    o
}
