//! The Raft log and vote in RocksDB, shared by every Folio group.
//!
//! Durability: appends, votes, truncations and purges are written with `sync = true` (the WAL is
//! fsync'd before the write returns), and openraft is told an append is flushed only after that.
//! The committed log id is not synced: losing it only means waiting for the leader to say it
//! again.
//!
//! No RocksDB call runs inline on an async worker: synced writes go to a blocking thread, reads
//! and the unsynced write run through [`crate::blocking::in_place`].

use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;
use std::time::Instant;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote,
};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};

use crate::blocking::in_place;
use crate::codec::{decode, encode};
use crate::keys::{
    cf, log_index, log_key, CF_LOG, CF_RAFT_META, META_COMMITTED, META_PURGED, META_VOTE,
};
use crate::metrics;
use crate::GroupTypes;

type SErr = StorageError<u64>;

/// The Raft log and vote, in RocksDB. Cloning shares the database. Generic over the group's
/// type configuration, so the write tier and the registry share one log implementation; the
/// database must have the [`CF_LOG`] and [`CF_RAFT_META`] column families.
pub struct LogStore<C> {
    db: Arc<DB>,
    _types: PhantomData<fn() -> C>,
}

impl<C> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        LogStore {
            db: self.db.clone(),
            _types: PhantomData,
        }
    }
}

impl<C: GroupTypes> LogStore<C> {
    /// A log store on `db`, which must have been opened with [`CF_LOG`] and [`CF_RAFT_META`].
    pub fn new(db: Arc<DB>) -> Self {
        LogStore {
            db,
            _types: PhantomData,
        }
    }

    /// Reads the log's last id for pre-votes without keeping the database open: the election
    /// task outlives a node's shutdown by up to a poll, and a node restarted in the same process
    /// must be able to open RocksDB again at once. `None` once the database is closed.
    pub(crate) fn last_log_weak(&self) -> crate::elect::LastLog {
        let db = Arc::downgrade(&self.db);
        Arc::new(move || {
            let db = db.upgrade();
            Box::pin(async move {
                let mut store = LogStore::<C>::new(db?);
                match store.get_log_state().await {
                    Ok(s) => s.last_log_id,
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

    /// Gives the disk space of purged entries back. A range delete only writes a tombstone, and
    /// log keys only grow, so compaction seldom revisits the files it covers: without this, the
    /// purged log stays on disk indefinitely (measured: 2 GB after 400 k page versions with a
    /// 256 MiB snapshot trigger). Files wholly below `end` are dropped at once; the rest of the
    /// range is compacted in the background. Neither is needed for correctness, so failures are
    /// only logged.
    fn reclaim(&self, end: u64) {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let log = cf(&db, CF_LOG);
            let (from, to) = (log_key(0), log_key(end));
            if let Err(e) = db.delete_file_in_range_cf(log, from, to) {
                tracing::warn!(error = %e, "could not drop purged log files");
            }
            db.compact_range_cf_opt(log, Some(from), Some(to), &crate::keys::manual_compaction());
        });
    }

    /// Writes a batch, synced, on a blocking thread so no async worker waits on the disk.
    async fn write_synced(&self, batch: WriteBatch) -> Result<(), std::io::Error> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let mut wo = WriteOptions::default();
            wo.set_sync(true);
            db.write_opt(batch, &wo).map_err(std::io::Error::other)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(format!("log write task failed: {e}"))))
    }

    /// The write that appends `entries`.
    fn append_batch(&self, entries: impl IntoIterator<Item = Entry<C>>) -> WriteBatch {
        let mut b = WriteBatch::default();
        let log = cf(&self.db, CF_LOG);
        for e in entries {
            b.put_cf(log, log_key(e.log_id.index), encode(&e));
        }
        b
    }

    /// Writes an append durably, then reports the outcome to `flushed`: never before the synced
    /// write has returned, so openraft never counts this node towards a quorum for an entry
    /// that a power loss could still take away. The entries become readable and durable
    /// together.
    async fn append_durably(
        &self,
        batch: WriteBatch,
        flushed: impl FnOnce(Result<(), std::io::Error>) + Send,
    ) -> Result<(), SErr> {
        let started = Instant::now();
        let res = self.write_synced(batch).await;
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

impl<C: GroupTypes> RaftLogReader<C> for LogStore<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<C>>, SErr> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        in_place(|| {
            let mut out = Vec::new();
            let it = self.db.iterator_cf(
                cf(&self.db, CF_LOG),
                IteratorMode::From(&log_key(start), Direction::Forward),
            );
            for item in it {
                let (k, v) = item.map_err(|e| StorageIOError::read_logs(&e))?;
                let idx = log_index(&k)
                    .ok_or_else(|| StorageIOError::read_logs(AnyError::error("bad log key")))?;
                if !range.contains(&idx) {
                    break;
                }
                let entry: Entry<C> =
                    decode(&v).map_err(|e| StorageIOError::read_log_at_index(idx, &e))?;
                out.push(entry);
            }
            Ok(out)
        })
    }
}

impl<C: GroupTypes> RaftLogStorage<C> for LogStore<C> {
    type LogReader = LogStore<C>;

    async fn get_log_state(&mut self) -> Result<LogState<C>, SErr> {
        let last_purged: Option<LogId<u64>> = self.meta(META_PURGED)?;
        let last = in_place(|| {
            let mut it = self.db.iterator_cf(cf(&self.db, CF_LOG), IteratorMode::End);
            match it.next() {
                Some(item) => {
                    let (_, v) = item.map_err(|e| StorageIOError::read_logs(&e))?;
                    let e: Entry<C> = decode(&v).map_err(|e| StorageIOError::read_logs(&e))?;
                    Ok::<_, SErr>(Some(e.log_id))
                }
                None => Ok(last_purged),
            }
        })?;
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
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
        let batch = self.append_batch(entries);
        self.append_durably(batch, |r| callback.log_io_completed(r))
            .await
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), SErr> {
        let mut b = WriteBatch::default();
        b.delete_range_cf(
            cf(&self.db, CF_LOG),
            log_key(log_id.index),
            log_key(u64::MAX),
        );
        self.write_synced(b)
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), SErr> {
        // Record the purge point first, then delete: a crash in between leaves extra entries
        // below the purge point, which readers never ask for.
        let mut b = WriteBatch::default();
        b.put_cf(
            cf(&self.db, CF_RAFT_META),
            META_PURGED,
            encode(&Some(log_id)),
        );
        b.delete_range_cf(cf(&self.db, CF_LOG), log_key(0), log_key(log_id.index + 1));
        self.write_synced(b)
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        self.reclaim(log_id.index + 1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
    use rocksdb::statistics::Ticker;
    use rocksdb::{Options, DB};

    use super::LogStore;
    use crate::keys::{cf, log_key, CF_LOG, LOG_CFS};

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

    /// What durable means for the log is that RocksDB fsync'd its WAL for the write: its
    /// `rocksdb.wal.synced` ticker moves then, and only then. Each append must be reported
    /// after that, with its entries readable; an unsynced write, or a report sent before the
    /// write returned, fails here.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_append_is_reported_only_once_the_wal_is_fsynced() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.enable_statistics();
        let db = Arc::new(DB::open_cf(&opts, dir.path(), LOG_CFS).unwrap());
        let store = LogStore::<Types>::new(db.clone());
        let synced = || opts.get_ticker_count(Ticker::WalFileSynced);

        // The ticker is a real witness: an unsynced write does not move it.
        let before = synced();
        db.put_cf(cf(&db, CF_LOG), b"probe", b"x").unwrap();
        assert_eq!(synced(), before, "an unsynced write fsyncs nothing");

        for round in 1..=3u64 {
            let first = round * 10;
            let before = synced();
            let seen = Mutex::new(None);
            let batch = store.append_batch((first..first + 5).map(entry));
            store
                .append_durably(batch, |r| {
                    let readable = db
                        .get_cf(cf(&db, CF_LOG), log_key(first + 4))
                        .unwrap()
                        .is_some();
                    *seen.lock().unwrap() = Some((r.is_ok(), synced(), readable));
                })
                .await
                .unwrap();
            let (ok, at_report, readable) = seen.lock().unwrap().take().expect("reported");
            assert!(ok, "round {round}: the append succeeded");
            assert!(
                at_report > before,
                "round {round}: reported before the WAL was fsync'd"
            );
            assert!(
                readable,
                "round {round}: reported before the entries were readable"
            );
        }
    }
}
