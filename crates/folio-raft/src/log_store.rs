//! The Raft log and vote: entries in a [`SegLog`] of their own, the vote, the committed log id
//! and the purge point in RocksDB beside the group's state machine. Shared by every Folio group.
//!
//! Durability: an append returns only after the segment log has fdatasync'd every file it wrote
//! to, and openraft is told an append is flushed only after that. Votes, truncations and purge
//! points are durable before their calls return too. The committed log id is not synced: losing
//! it only means waiting for the leader to say it again.
//!
//! A node whose log is still in RocksDB (written by a build before the segment log) has it moved
//! into the segment log when it opens: copied, fsync'd, and only then deleted from RocksDB, so a
//! crash part way leaves the RocksDB copy whole and the next open starts the copy again.
//!
//! No disk call runs inline on an async worker: appends, truncations, purges and synced writes
//! go to a blocking thread, reads and the unsynced write run through
//! [`crate::blocking::in_place`].

use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use rocksdb::{IteratorMode, WriteBatch, WriteOptions, DB};

use crate::blocking::in_place;
use crate::codec::{decode, encode};
use crate::keys::{cf, log_key, CF_LOG, CF_RAFT_META, META_COMMITTED, META_PURGED, META_VOTE};
use crate::metrics;
use crate::seglog::{SegLog, DEFAULT_SEGMENT_BYTES};
use crate::GroupTypes;

type SErr = StorageError<u64>;

/// Entries copied per append while moving a log out of RocksDB.
const MIGRATE_BATCH: usize = 1024;

/// What every clone of a log store shares: the entries, and the purge point (also in RocksDB)
/// for the log's last id once every entry is purged.
#[derive(Debug)]
struct Shared {
    seg: SegLog,
    purged: Mutex<Option<LogId<u64>>>,
}

/// The Raft log and vote. Cloning shares the log. Generic over the group's type configuration,
/// so the write tier and the registry share one log implementation; the database must have the
/// [`CF_LOG`] and [`CF_RAFT_META`] column families.
pub struct LogStore<C> {
    db: Arc<DB>,
    shared: Arc<Shared>,
    _types: PhantomData<fn() -> C>,
}

impl<C> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        LogStore {
            db: self.db.clone(),
            shared: self.shared.clone(),
            _types: PhantomData,
        }
    }
}

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl<C: GroupTypes> LogStore<C> {
    /// Opens the log: the vote and purge point in `db` (opened with [`CF_LOG`] and
    /// [`CF_RAFT_META`]), the entries in a segment log in `dir`, recovered; a log still in
    /// `db`'s [`CF_LOG`] is moved there first.
    pub fn open(db: Arc<DB>, dir: &Path) -> std::io::Result<Self> {
        Self::open_with(db, dir, DEFAULT_SEGMENT_BYTES)
    }

    /// [`Self::open`] with segments of `segment_bytes`.
    pub fn open_with(db: Arc<DB>, dir: &Path, segment_bytes: u64) -> std::io::Result<Self> {
        let purged: Option<LogId<u64>> = match db.get_cf(cf(&db, CF_RAFT_META), META_PURGED) {
            Ok(Some(b)) => decode(&b).map_err(io_err)?,
            Ok(None) => None,
            Err(e) => return Err(io_err(e)),
        };
        let first = purged.map_or(0, |p| p.index + 1);
        let in_rocksdb = db
            .iterator_cf(cf(&db, CF_LOG), IteratorMode::Start)
            .next()
            .transpose()
            .map_err(io_err)?
            .is_some();
        if in_rocksdb && dir.exists() {
            // A move that did not finish: the RocksDB copy is whole, start again from it.
            std::fs::remove_dir_all(dir)?;
        }
        let (seg, rec) = SegLog::open(dir, segment_bytes, first)?;
        if rec.discarded_segments > 0 {
            tracing::warn!(
                dir = %dir.display(),
                discarded = rec.discarded_segments,
                "the Raft log ended in segments past a gap (an append that did not complete); \
                 they were dropped"
            );
        }
        tracing::info!(
            dir = %dir.display(),
            segments = rec.segments,
            entries = rec.entries,
            "opened the Raft log"
        );
        if in_rocksdb {
            migrate(&db, &seg)?;
        }
        Ok(LogStore {
            db,
            shared: Arc::new(Shared {
                seg,
                purged: Mutex::new(purged),
            }),
            _types: PhantomData,
        })
    }

    /// Reads the log's last id for pre-votes without keeping the log open: the election task
    /// outlives a node's shutdown by up to a poll, and a node restarted in the same process
    /// must be able to open its log again at once. `None` once the log is closed.
    pub(crate) fn last_log_weak(&self) -> crate::elect::LastLog {
        let shared = Arc::downgrade(&self.shared);
        let db = Arc::downgrade(&self.db);
        Arc::new(move || {
            let (shared, db) = (shared.upgrade(), db.upgrade());
            Box::pin(async move {
                let store = LogStore::<C> {
                    db: db?,
                    shared: shared?,
                    _types: PhantomData,
                };
                match store.last_log_id() {
                    Ok(last) => last,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the log's end for a pre-vote");
                        None
                    }
                }
            })
        })
    }

    fn meta<T: for<'de> serde::Deserialize<'de>>(&self, key: &[u8]) -> Result<Option<T>, SErr> {
        let v = in_place(|| self.db.get_cf(cf(&self.db, CF_RAFT_META), key))
            .map_err(|e| StorageIOError::read(&e))?;
        v.map(|b| decode(&b).map_err(|e| StorageIOError::read(&e).into()))
            .transpose()
    }

    /// The last entry's id, or the purge point when every entry is purged.
    fn last_log_id(&self) -> Result<Option<LogId<u64>>, SErr> {
        match self.shared.seg.bounds() {
            Some((_, end)) => {
                let last = end - 1;
                let mut entries = self.entries(last, end)?;
                match entries.pop() {
                    Some(e) => Ok(Some(e.log_id)),
                    None => Err(StorageIOError::read_log_at_index(
                        last,
                        &io_err("the log's last entry is missing"),
                    )
                    .into()),
                }
            }
            None => Ok(*self.shared.purged.lock().expect("purged lock")),
        }
    }

    /// The entries in `from..to` that the log holds.
    fn entries(&self, from: u64, to: u64) -> Result<Vec<Entry<C>>, SErr> {
        let raw = in_place(|| self.shared.seg.read(from, to))
            .map_err(|e| StorageIOError::read_logs(&e))?;
        raw.iter()
            .zip(from..)
            .map(|(b, i)| decode(b).map_err(|e| StorageIOError::read_log_at_index(i, &e).into()))
            .collect()
    }

    /// Runs `f` on the log from a blocking thread, so no async worker waits on the disk.
    async fn on_log<T: Send + 'static>(
        &self,
        f: impl FnOnce(&SegLog) -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || f(&shared.seg))
            .await
            .unwrap_or_else(|e| Err(io_err(format!("log task failed: {e}"))))
    }

    /// Writes a batch, synced, on a blocking thread so no async worker waits on the disk.
    async fn write_synced(&self, batch: WriteBatch) -> Result<(), std::io::Error> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let mut wo = WriteOptions::default();
            wo.set_sync(true);
            db.write_opt(batch, &wo).map_err(io_err)
        })
        .await
        .unwrap_or_else(|e| Err(io_err(format!("log write task failed: {e}"))))
    }

    /// Appends `entries` durably, then reports the outcome to `flushed`: never before the
    /// segment log's fdatasync has returned, so openraft never counts this node towards a
    /// quorum for an entry that a power loss could still take away. The entries become readable
    /// before they are durable, as openraft allows.
    async fn append_durably(
        &self,
        entries: impl IntoIterator<Item = Entry<C>>,
        flushed: impl FnOnce(Result<(), std::io::Error>) + Send,
    ) -> Result<(), SErr> {
        let records: Vec<(u64, Vec<u8>)> = entries
            .into_iter()
            .map(|e| (e.log_id.index, encode(&e)))
            .collect();
        let started = Instant::now();
        let res = self.on_log(move |seg| seg.append(&records)).await;
        metrics::APPEND_SECONDS.observe(started.elapsed().as_secs_f64());
        match res {
            Ok(()) => {
                flushed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let err = StorageIOError::write_logs(&e);
                flushed(Err(e));
                Err(err.into())
            }
        }
    }
}

/// Moves a log written by an older build from RocksDB's [`CF_LOG`] into `seg` (empty: a
/// partial earlier move was removed), in order, each batch fsync'd, then deletes it from
/// RocksDB with a synced write and compacts the range away.
fn migrate(db: &DB, seg: &SegLog) -> std::io::Result<()> {
    let log = cf(db, CF_LOG);
    let mut moved = 0u64;
    let mut batch: Vec<(u64, Vec<u8>)> = Vec::with_capacity(MIGRATE_BATCH);
    for item in db.iterator_cf(log, IteratorMode::Start) {
        let (k, v) = item.map_err(io_err)?;
        let index = crate::keys::log_index(&k)
            .ok_or_else(|| io_err("a Raft log key in RocksDB is not a log index"))?;
        batch.push((index, v.to_vec()));
        if batch.len() == MIGRATE_BATCH {
            seg.append(&batch)?;
            moved += batch.len() as u64;
            batch.clear();
        }
    }
    seg.append(&batch)?;
    moved += batch.len() as u64;
    let mut b = WriteBatch::default();
    b.delete_range_cf(log, log_key(0), log_key(u64::MAX));
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    db.write_opt(b, &wo).map_err(io_err)?;
    db.compact_range_cf_opt(
        log,
        None::<&[u8]>,
        None::<&[u8]>,
        &crate::keys::manual_compaction(),
    );
    tracing::info!(
        entries = moved,
        "moved the Raft log out of RocksDB into its segment log"
    );
    Ok(())
}

impl<C: GroupTypes> RaftLogReader<C> for LogStore<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<C>>, SErr> {
        let from = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(i) => i.saturating_add(1),
            Bound::Excluded(i) => *i,
            Bound::Unbounded => u64::MAX,
        };
        self.entries(from, to)
    }
}

impl<C: GroupTypes> RaftLogStorage<C> for LogStore<C> {
    type LogReader = LogStore<C>;

    async fn get_log_state(&mut self) -> Result<LogState<C>, SErr> {
        // The purge point is copied out first: `last_log_id` takes the same lock.
        let last_purged_log_id = *self.shared.purged.lock().expect("purged lock");
        Ok(LogState {
            last_purged_log_id,
            last_log_id: self.last_log_id()?,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), SErr> {
        let mut b = WriteBatch::default();
        b.put_cf(cf(&self.db, CF_RAFT_META), META_VOTE, encode(vote));
        self.write_synced(b)
            .await
            .map_err(|e| StorageIOError::write_vote(&e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, SErr> {
        self.meta(META_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), SErr> {
        // Not synced: losing it only means waiting for the leader to tell us again.
        in_place(|| {
            self.db.put_cf(
                cf(&self.db, CF_RAFT_META),
                META_COMMITTED,
                encode(&committed),
            )
        })
        .map_err(|e| StorageIOError::write(&e))?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, SErr> {
        Ok(self.meta::<Option<LogId<u64>>>(META_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<C>) -> Result<(), SErr>
    where
        I: IntoIterator<Item = Entry<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.append_durably(entries, |r| callback.log_io_completed(r))
            .await
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), SErr> {
        let index = log_id.index;
        self.on_log(move |seg| seg.truncate(index))
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), SErr> {
        // Record the purge point durably first, then drop segments: a crash in between leaves
        // extra entries at or below the purge point, which recovery drops.
        let mut b = WriteBatch::default();
        b.put_cf(
            cf(&self.db, CF_RAFT_META),
            META_PURGED,
            encode(&Some(log_id)),
        );
        self.write_synced(b)
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        *self.shared.purged.lock().expect("purged lock") = Some(log_id);
        let index = log_id.index;
        self.on_log(move |seg| seg.purge(index))
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use openraft::storage::RaftLogStorage;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader};
    use rocksdb::{Options, WriteBatch, DB};

    use super::LogStore;
    use crate::codec::encode;
    use crate::keys::{cf, log_key, CF_LOG, CF_RAFT_META, LOG_CFS, META_PURGED};

    openraft::declare_raft_types!(
        Types:
            D = u64,
            R = (),
            NodeId = u64,
            Node = crate::RaftNode,
            Entry = openraft::Entry<Types>,
            SnapshotData = std::io::Cursor<Vec<u8>>,
            AsyncRuntime = openraft::TokioRuntime,
    );

    fn entry(i: u64) -> Entry<Types> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), i),
            payload: EntryPayload::Normal(i),
        }
    }

    fn db(dir: &std::path::Path) -> Arc<DB> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        Arc::new(DB::open_cf(&opts, dir.join("db"), LOG_CFS).unwrap())
    }

    /// Durable means the segment log's fdatasync returned for the write. Each append must be
    /// reported after that, with its entries readable; a report sent before the append
    /// returned, or an append that skipped its fsync, fails here.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_append_is_reported_only_once_fsynced() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::<Types>::open(db(dir.path()), &dir.path().join("log")).unwrap();
        for round in 1..=3u64 {
            let first = round * 10;
            let before = store.shared.seg.syncs();
            let seen = Mutex::new(None);
            store
                .append_durably((first..first + 5).map(entry), |r| {
                    let readable = store.shared.seg.read(first + 4, first + 5).unwrap().len() == 1;
                    *seen.lock().unwrap() = Some((r.is_ok(), store.shared.seg.syncs(), readable));
                })
                .await
                .unwrap();
            let (ok, at_report, readable) = seen.lock().unwrap().take().expect("reported");
            assert!(ok, "round {round}: the append succeeded");
            assert!(
                at_report > before,
                "round {round}: reported before the fsync"
            );
            assert!(
                readable,
                "round {round}: reported before the entries were readable"
            );
            // The next round starts after a gap: purge past it, as a snapshot install would.
            let mut s = store.clone();
            s.purge(LogId::new(CommittedLeaderId::new(1, 0), first + 9))
                .await
                .unwrap();
        }
    }

    /// A node upgraded from a build that kept its log in RocksDB opens with the same log: moved
    /// into the segment log, gone from RocksDB, and the purge point kept.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_log_in_rocksdb_moves_into_the_segment_log() {
        let dir = tempfile::tempdir().unwrap();
        let logdir = dir.path().join("log");
        let purged = LogId::new(CommittedLeaderId::new(1, 0), 9);
        {
            let db = db(dir.path());
            let mut b = WriteBatch::default();
            for i in 10..2500 {
                b.put_cf(cf(&db, CF_LOG), log_key(i), encode(&entry(i)));
            }
            b.put_cf(cf(&db, CF_RAFT_META), META_PURGED, encode(&Some(purged)));
            db.write(b).unwrap();
        }
        // A move that died part way left segments behind; they are started over.
        std::fs::create_dir_all(&logdir).unwrap();
        std::fs::write(logdir.join("00000001.seg"), b"half a segment").unwrap();
        for _ in 0..2 {
            let db = db(dir.path());
            let mut store = LogStore::<Types>::open(db.clone(), &logdir).unwrap();
            let state = store.get_log_state().await.unwrap();
            assert_eq!(state.last_purged_log_id, Some(purged));
            assert_eq!(state.last_log_id.map(|l| l.index), Some(2499));
            let got = store.try_get_log_entries(10..2500).await.unwrap();
            assert_eq!(got, (10..2500).map(entry).collect::<Vec<_>>());
            let left = db
                .iterator_cf(cf(&db, CF_LOG), rocksdb::IteratorMode::Start)
                .count();
            assert_eq!(left, 0, "the RocksDB copy is deleted");
        }
    }
}
