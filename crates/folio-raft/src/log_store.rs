//! The Raft log and vote: entries in a [`SegLog`] of their own, the vote, the committed log id
//! and the purge point in RocksDB beside the group's state machine. Shared by every Folio group.
//!
//! Durability: an append returns only after the segment log has fdatasync'd every file it wrote
//! to, and openraft is told an append is flushed only after that. Votes, truncations and purge
//! points are durable before their calls return too. The committed log id is not synced, and is
//! written at most every [`COMMITTED_WRITE_EVERY`], not on every commit: the state machine
//! records the last applied id with each applied batch, and openraft starts from the later of
//! the two, so a stale committed id only means re-learning the rest from the leader.
//!
//! A node whose log is still in RocksDB (written by a build before the segment log) has it moved
//! into the segment log when it opens: copied, fsync'd, and only then deleted from RocksDB, so a
//! crash part way leaves the RocksDB copy whole and the next open starts the copy again.
//!
//! No disk call runs inline on an async worker: truncations, purges and synced writes go to a
//! blocking thread; appends (which openraft's core waits for anyway), reads and the unsynced
//! write run through [`crate::blocking::in_place`]. Reads of the newest entries are answered
//! from memory.

use std::collections::VecDeque;
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

/// Least time between two writes of the committed log id. openraft reports it on every commit,
/// on every node, before it applies the entry; a RocksDB write each time (a WAL write, and a
/// hand-off of the async worker) was on the path of every commit, for a value that only spares
/// a restarted node re-learning what it can also learn from its leader.
const COMMITTED_WRITE_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// The committed log id as openraft last reported it, and when it was last written.
#[derive(Debug, Default)]
struct Committed {
    /// `None` until this store has been told one (then [`LogStore::read_committed`] reads the
    /// disk's).
    latest: Option<Option<LogId<u64>>>,
    written_at: Option<Instant>,
    /// Writes made by this store, for a test to hold the rate to its bound.
    writes: u64,
}

/// Most entries, and most bytes of encoded entries, the in-memory tail of the log keeps.
const TAIL_ENTRIES_MAX: usize = 1024;
const TAIL_BYTES_MAX: usize = 8 << 20;

/// The newest entries of the log, encoded, as appended: replication reads what was just
/// appended, and reading it here costs neither a hand-off of the async worker, nor a read from
/// the file, nor a checksum. It always ends where the log ends, or is empty; a read checks that
/// before it trusts it, and falls back to the file otherwise.
#[derive(Debug, Default)]
struct Tail {
    /// Index of the first record.
    first: u64,
    records: VecDeque<Vec<u8>>,
    bytes: usize,
}

impl Tail {
    fn end(&self) -> u64 {
        self.first + self.records.len() as u64
    }

    fn clear(&mut self) {
        self.records.clear();
        self.bytes = 0;
    }

    /// Adds records appended to the log at `first` and after, then drops the oldest beyond the
    /// bounds.
    fn extend(&mut self, first: u64, records: impl IntoIterator<Item = Vec<u8>>) {
        if self.records.is_empty() || self.end() != first {
            self.clear();
            self.first = first;
        }
        for r in records {
            self.bytes += r.len();
            self.records.push_back(r);
        }
        while self.records.len() > TAIL_ENTRIES_MAX
            || (self.bytes > TAIL_BYTES_MAX && self.records.len() > 1)
        {
            let r = self.records.pop_front().expect("not empty");
            self.bytes -= r.len();
            self.first += 1;
        }
    }

    /// Drops every record from `index` on.
    fn truncate(&mut self, index: u64) {
        while !self.records.is_empty() && self.end() > index {
            let r = self.records.pop_back().expect("not empty");
            self.bytes -= r.len();
        }
    }

    /// Drops every record at or below `index`.
    fn purge(&mut self, index: u64) {
        while !self.records.is_empty() && self.first <= index {
            let r = self.records.pop_front().expect("not empty");
            self.bytes -= r.len();
            self.first += 1;
        }
    }
}

/// What every clone of a log store shares: the entries (and the newest of them in memory), the
/// purge point (also in RocksDB) for the log's last id once every entry is purged, and the
/// committed log id.
#[derive(Debug)]
struct Shared {
    seg: SegLog,
    tail: Mutex<Tail>,
    purged: Mutex<Option<LogId<u64>>>,
    committed: Mutex<Committed>,
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
                tail: Mutex::new(Tail::default()),
                purged: Mutex::new(purged),
                committed: Mutex::new(Committed::default()),
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

    /// The entries in `from..to` that the log holds: from the in-memory tail when it has them
    /// all, else from the files.
    fn entries(&self, from: u64, to: u64) -> Result<Vec<Entry<C>>, SErr> {
        if let Some(found) = self.tail_entries(from, to) {
            return found;
        }
        let raw = in_place(|| self.shared.seg.read(from, to))
            .map_err(|e| StorageIOError::read_logs(&e))?;
        raw.iter()
            .zip(from..)
            .map(|(b, i)| decode(b).map_err(|e| StorageIOError::read_log_at_index(i, &e).into()))
            .collect()
    }

    /// The entries in `from..to` from the tail, if it holds every one of them the log does.
    fn tail_entries(&self, from: u64, to: u64) -> Option<Result<Vec<Entry<C>>, SErr>> {
        let tail = self.shared.tail.lock().expect("tail lock");
        let log_end = self.shared.seg.bounds().map(|(_, end)| end)?;
        if tail.records.is_empty() || tail.end() != log_end || from < tail.first {
            return None;
        }
        let to = to.min(tail.end());
        if from >= to {
            return Some(Ok(Vec::new()));
        }
        let at = (from - tail.first) as usize;
        Some(
            tail.records
                .range(at..at + (to - from) as usize)
                .zip(from..)
                .map(|(b, i)| {
                    decode(b).map_err(|e| StorageIOError::read_log_at_index(i, &e).into())
                })
                .collect(),
        )
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
        // On the calling task's own thread (its async worker's other tasks handed to another
        // thread first): openraft's core waits for this append anyway, and resuming it on the
        // thread that did the fdatasync saves waking it from a blocking thread.
        let res = in_place(|| self.shared.seg.append(&records));
        metrics::APPEND_SECONDS.observe(started.elapsed().as_secs_f64());
        match res {
            Ok(()) => {
                if let Some(&(first, _)) = records.first() {
                    self.shared
                        .tail
                        .lock()
                        .expect("tail lock")
                        .extend(first, records.into_iter().map(|(_, r)| r));
                }
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
        // Not synced, and written at most every COMMITTED_WRITE_EVERY (see the module's
        // documentation): losing it only means waiting for the leader to tell us again.
        let write = {
            let mut c = self.shared.committed.lock().expect("committed lock");
            c.latest = Some(committed);
            let due = c
                .written_at
                .is_none_or(|t| t.elapsed() >= COMMITTED_WRITE_EVERY);
            if due {
                c.written_at = Some(Instant::now());
                c.writes += 1;
            }
            due
        };
        if !write {
            return Ok(());
        }
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
        let latest = self.shared.committed.lock().expect("committed lock").latest;
        if let Some(c) = latest {
            return Ok(c);
        }
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
        self.shared.tail.lock().expect("tail lock").truncate(index);
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
        self.shared.tail.lock().expect("tail lock").purge(index);
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

    fn log_id(term: u64, index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(term, 0), index)
    }

    fn entry(i: u64) -> Entry<Types> {
        Entry {
            log_id: log_id(1, i),
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
            s.purge(log_id(1, first + 9)).await.unwrap();
        }
    }

    fn entry_in(term: u64, i: u64) -> Entry<Types> {
        Entry {
            log_id: log_id(term, i),
            payload: EntryPayload::Normal(i * 1000 + term),
        }
    }

    /// What the log answers from its in-memory tail is what its files hold, through appends,
    /// a truncation and a new term's entries, and purges; the tail stays within its bounds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_from_the_tail_match_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::<Types>::open(db(dir.path()), &dir.path().join("log")).unwrap();
        let from_files = |s: &LogStore<Types>, from: u64, to: u64| -> Vec<Entry<Types>> {
            s.shared
                .seg
                .read(from, to)
                .unwrap()
                .iter()
                .map(|b| crate::codec::decode(b).unwrap())
                .collect()
        };
        let check = |s: &mut LogStore<Types>, from: u64, to: u64| {
            let got = s.entries(from, to).unwrap();
            assert_eq!(
                format!("{got:?}"),
                format!("{:?}", from_files(s, from, to)),
                "entries {from}..{to}"
            );
            got.len()
        };
        for i in 0..1500u64 {
            store
                .append_durably([entry_in(1, i)], |r| r.unwrap())
                .await
                .unwrap();
        }
        {
            let tail = store.shared.tail.lock().unwrap();
            assert_eq!(tail.records.len(), super::TAIL_ENTRIES_MAX, "bounded");
            assert_eq!(tail.end(), 1500);
        }
        assert!(
            store.tail_entries(1400, 1500).is_some(),
            "served from memory"
        );
        assert!(store.tail_entries(0, 10).is_none(), "older than the tail");
        assert_eq!(check(&mut store, 1400, 1500), 100);
        assert_eq!(check(&mut store, 1490, u64::MAX), 10);
        assert_eq!(check(&mut store, 1500, u64::MAX), 0);
        assert_eq!(check(&mut store, 0, 10), 10);
        // A new leader's entries replace the tail of the old term.
        store.truncate(log_id(1, 1450)).await.unwrap();
        assert_eq!(check(&mut store, 1400, u64::MAX), 50);
        store
            .append_durably((1450..1460).map(|i| entry_in(2, i)), |r| r.unwrap())
            .await
            .unwrap();
        assert_eq!(check(&mut store, 1440, u64::MAX), 20);
        let last = store.entries(1459, 1460).unwrap();
        assert_eq!(last[0].log_id.leader_id.term, 2);
        store.purge(log_id(1, 1449)).await.unwrap();
        assert_eq!(check(&mut store, 1450, u64::MAX), 10);
        // A purge past the end empties the log, and the tail with it.
        store.purge(log_id(2, 2000)).await.unwrap();
        assert!(store.shared.tail.lock().unwrap().records.is_empty());
        store
            .append_durably([entry_in(3, 2001)], |r| r.unwrap())
            .await
            .unwrap();
        assert_eq!(check(&mut store, 2001, u64::MAX), 1);
    }

    /// The committed id is written at once the first time, then at most every
    /// COMMITTED_WRITE_EVERY; the store always answers with the latest it was told, and a
    /// reopened one with what was written, never with more than it was told.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_committed_id_is_written_at_a_bounded_rate() {
        let dir = tempfile::tempdir().unwrap();
        let logdir = dir.path().join("log");
        let id = |i| Some(log_id(1, i));
        let db = db(dir.path());
        {
            let mut store = LogStore::<Types>::open(db.clone(), &logdir).unwrap();
            assert_eq!(store.read_committed().await.unwrap(), None);
            let started = std::time::Instant::now();
            for i in 1..=50 {
                store.save_committed(id(i)).await.unwrap();
                assert_eq!(store.read_committed().await.unwrap(), id(i));
            }
            // However long the saves took, no more writes than one per interval begun.
            let intervals = started.elapsed().as_nanos() / super::COMMITTED_WRITE_EVERY.as_nanos();
            let writes = store.shared.committed.lock().unwrap().writes;
            assert!(writes >= 1, "the first report is written");
            assert!(
                u128::from(writes) <= intervals + 1,
                "{writes} writes in {intervals} full intervals"
            );
        }
        let mut store = LogStore::<Types>::open(db.clone(), &logdir).unwrap();
        let on_disk = store.read_committed().await.unwrap();
        assert!(
            on_disk >= id(1) && on_disk <= id(50),
            "the first report was written and no later one invented: {on_disk:?}"
        );
        store.save_committed(id(60)).await.unwrap();
        tokio::time::sleep(super::COMMITTED_WRITE_EVERY).await;
        store.save_committed(id(70)).await.unwrap();
        drop(store);
        let mut again = LogStore::<Types>::open(db, &logdir).unwrap();
        assert_eq!(
            again.read_committed().await.unwrap(),
            id(70),
            "a report after the interval is written"
        );
    }

    /// A node upgraded from a build that kept its log in RocksDB opens with the same log: moved
    /// into the segment log, gone from RocksDB, and the purge point kept.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_log_in_rocksdb_moves_into_the_segment_log() {
        let dir = tempfile::tempdir().unwrap();
        let logdir = dir.path().join("log");
        let purged = log_id(1, 9);
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
