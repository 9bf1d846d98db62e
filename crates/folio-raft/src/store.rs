//! The RocksDB log store and state machine. One RocksDB instance per node holds both, in separate
//! column families (see [`crate::keys`]).
//!
//! Durability: log appends and votes are written with `sync = true` (the WAL is fsync'd before
//! the write returns), and openraft is told an append is flushed only after that. State-machine
//! writes are not synced: the applied log id is written in the same atomic batch as the state it
//! describes, so after a crash the state machine is consistent with some earlier applied id and
//! openraft re-applies the durable log from there.

use std::collections::HashMap;
use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use folio_core::limits::IDEMPOTENCY_RETAIN_COMMITS;
use folio_core::{GroupId, Lsn, PageIdx, PageLocation, SegmentId, VolumeId, PAGE_SIZE};
use folio_segment::{CommitEntry, SegmentBuilder};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use rocksdb::{
    ColumnFamilyDescriptor, Direction, IteratorMode, Options, ReadOptions, WriteBatch,
    WriteOptions, DB,
};
use tokio::sync::watch;

use crate::command::{decode, encode, Command, CommandResult, Rejection, Request, Response};
use crate::keys::*;
use crate::metrics;
use crate::snapshot;
use crate::state::{CommitRecord, GroupState, IdemRecord, OpenSegment, SealedSegment, VolumeHead};
use crate::{GroupTypes, TypeConfig};

type SErr = StorageError<u64>;

/// Errors opening or reading the store outside openraft's traits.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("corrupt record in {cf}: {reason}")]
    Corrupt { cf: &'static str, reason: String },
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

fn corrupt(cf: &'static str, e: impl ToString) -> StoreError {
    StoreError::Corrupt {
        cf,
        reason: e.to_string(),
    }
}

fn cf<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
    db.cf_handle(name)
        .expect("every column family is created at open")
}

/// Opens (or creates) a node's store under `dir`: RocksDB in `dir/db`, snapshots in
/// `dir/snapshots`.
pub fn open_store(dir: &Path, group: GroupId) -> Result<(LogStore, StateMachine), StoreError> {
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

// ---------------------------------------------------------------------------------------------
// Log store

/// The Raft log and vote, in RocksDB. Cloning shares the database. Generic over the group's
/// type configuration, so the write tier and the registry share one log implementation; the
/// database must have the [`CF_LOG`] and [`CF_RAFT_META`] column families.
pub struct LogStore<C = TypeConfig> {
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

    fn meta<T: for<'de> serde::Deserialize<'de>>(&self, key: &[u8]) -> Result<Option<T>, SErr> {
        let v = self
            .db
            .get_cf(cf(&self.db, CF_RAFT_META), key)
            .map_err(|e| StorageIOError::read(&e))?;
        v.map(|b| decode(&b).map_err(|e| StorageIOError::read(&e).into()))
            .transpose()
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
    }
}

impl<C: GroupTypes> RaftLogStorage<C> for LogStore<C> {
    type LogReader = LogStore<C>;

    async fn get_log_state(&mut self) -> Result<LogState<C>, SErr> {
        let last_purged: Option<LogId<u64>> = self.meta(META_PURGED)?;
        let mut it = self.db.iterator_cf(cf(&self.db, CF_LOG), IteratorMode::End);
        let last = match it.next() {
            Some(item) => {
                let (_, v) = item.map_err(|e| StorageIOError::read_logs(&e))?;
                let e: Entry<C> = decode(&v).map_err(|e| StorageIOError::read_logs(&e))?;
                Some(e.log_id)
            }
            None => last_purged,
        };
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
        self.db
            .put_cf(
                cf(&self.db, CF_RAFT_META),
                META_COMMITTED,
                encode(&committed),
            )
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
        let started = Instant::now();
        let mut b = WriteBatch::default();
        let log = cf(&self.db, CF_LOG);
        for e in entries {
            b.put_cf(log, log_key(e.log_id.index), encode(&e));
        }
        // The entries become readable and durable together: the callback fires only after the
        // synced write, so openraft never counts this node towards a quorum too early.
        let res = self.write_synced(b).await;
        metrics::APPEND_SECONDS.observe(started.elapsed().as_secs_f64());
        match res {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let err = StorageIOError::write_logs(&e);
                callback.log_io_completed(Err(e));
                Err(err.into())
            }
        }
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
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// State machine

/// Applied position and group state, kept in memory and written with every applied batch.
#[derive(Clone, Debug, Default)]
struct SmMeta {
    applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, openraft::BasicNode>,
    group: GroupState,
}

/// The state machine. Reads for clients go through [`StateReader`], which shares the database.
pub struct StateMachine {
    db: Arc<DB>,
    group_id: GroupId,
    meta: SmMeta,
    snapshots: PathBuf,
    snapshot_lock: Arc<tokio::sync::Mutex<()>>,
    shared: watch::Sender<Arc<GroupState>>,
    /// Bytes of commands applied since this node started (for byte-based snapshot triggers).
    applied_bytes: Arc<AtomicU64>,
}

impl StateMachine {
    fn open(db: Arc<DB>, group_id: GroupId, snapshots: PathBuf) -> Result<Self, StoreError> {
        let meta = load_meta(&db)?;
        metrics::BUFFERED_BYTES.set(meta.group.buffered_bytes as i64);
        let (shared, _) = watch::channel(Arc::new(meta.group.clone()));
        Ok(StateMachine {
            db,
            group_id,
            meta,
            snapshots,
            snapshot_lock: Arc::new(tokio::sync::Mutex::new(())),
            shared,
            applied_bytes: Arc::new(AtomicU64::new(0)),
        })
    }

    /// A read handle for serving clients.
    pub fn reader(&self) -> StateReader {
        StateReader {
            db: self.db.clone(),
            group: self.shared.clone(),
            applied_bytes: self.applied_bytes.clone(),
        }
    }

    fn publish(&self) {
        let g = &self.meta.group;
        metrics::BUFFERED_BYTES.set(g.buffered_bytes as i64);
        metrics::SEALED_SEGMENTS.set(g.sealed.len() as i64);
        self.shared.send_replace(Arc::new(g.clone()));
    }
}

fn load_meta(db: &DB) -> Result<SmMeta, StoreError> {
    let get = |k: &[u8]| db.get_cf(cf(db, CF_SM_META), k);
    let applied = match get(META_APPLIED)? {
        Some(b) => decode(&b).map_err(|e| corrupt(CF_SM_META, e))?,
        None => None,
    };
    let membership = match get(META_MEMBERSHIP)? {
        Some(b) => decode(&b).map_err(|e| corrupt(CF_SM_META, e))?,
        None => StoredMembership::default(),
    };
    let group = match get(META_GROUP)? {
        Some(b) => decode(&b).map_err(|e| corrupt(CF_SM_META, e))?,
        None => GroupState::default(),
    };
    Ok(SmMeta {
        applied,
        membership,
        group,
    })
}

/// The writes of one `apply` call, with an overlay so later commands in the call see the effects
/// of earlier ones before the batch reaches RocksDB.
struct ApplyTx<'a> {
    db: &'a DB,
    batch: WriteBatch,
    heads: HashMap<VolumeId, Option<VolumeHead>>,
    idem: HashMap<(VolumeId, Bytes), Option<IdemRecord>>,
    commits: HashMap<(VolumeId, Lsn), CommitRecord>,
    slots: HashMap<(SegmentId, u64), (VolumeId, PageIdx)>,
}

impl<'a> ApplyTx<'a> {
    fn new(db: &'a DB) -> Self {
        ApplyTx {
            db,
            batch: WriteBatch::default(),
            heads: HashMap::new(),
            idem: HashMap::new(),
            commits: HashMap::new(),
            slots: HashMap::new(),
        }
    }

    fn read<T: for<'de> serde::Deserialize<'de>>(
        &self,
        cf_name: &'static str,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        match self.db.get_cf(cf(self.db, cf_name), key)? {
            Some(b) => Ok(Some(decode(&b).map_err(|e| corrupt(cf_name, e))?)),
            None => Ok(None),
        }
    }

    fn head(&mut self, v: VolumeId) -> Result<Option<VolumeHead>, StoreError> {
        if let Some(h) = self.heads.get(&v) {
            return Ok(*h);
        }
        let h = self.read(CF_VOLUMES, v.as_bytes())?;
        self.heads.insert(v, h);
        Ok(h)
    }

    fn put_head(&mut self, v: VolumeId, h: VolumeHead) {
        self.batch
            .put_cf(cf(self.db, CF_VOLUMES), v.as_bytes(), encode(&h));
        self.heads.insert(v, Some(h));
    }

    fn idem(&mut self, v: VolumeId, key: &Bytes) -> Result<Option<IdemRecord>, StoreError> {
        if let Some(r) = self.idem.get(&(v, key.clone())) {
            return Ok(*r);
        }
        let r = self.read(CF_IDEM, &idem_key(v, key))?;
        self.idem.insert((v, key.clone()), r);
        Ok(r)
    }

    fn commit(&self, v: VolumeId, lsn: Lsn) -> Result<Option<CommitRecord>, StoreError> {
        if let Some(c) = self.commits.get(&(v, lsn)) {
            return Ok(Some(c.clone()));
        }
        self.read(CF_COMMITS, &commit_key(v, lsn))
    }

    fn slot(&self, s: SegmentId, offset: u64) -> Result<Option<(VolumeId, PageIdx)>, StoreError> {
        if let Some(x) = self.slots.get(&(s, offset)) {
            return Ok(Some(*x));
        }
        match self.db.get_cf(cf(self.db, CF_SLOTS), slot_key(s, offset))? {
            Some(b) => Ok(Some(
                parse_slot_value(&b).ok_or_else(|| corrupt(CF_SLOTS, "bad slot"))?,
            )),
            None => Ok(None),
        }
    }
}

/// Bytes a commit record takes in a segment's commits section (see `folio-segment`).
fn record_bytes(key_len: usize, pages: usize) -> u64 {
    (16 + 8 + 8 + 2 + key_len + 4 + pages * 28) as u64
}

impl StateMachine {
    /// Closes the open segment, if any, and queues it for the flusher.
    fn seal_open(&mut self) -> Option<SegmentId> {
        let g = &mut self.meta.group;
        let o = g.open.take()?;
        g.sealed.push(SealedSegment {
            id: o.id,
            bytes: o.next_offset,
        });
        Some(o.id)
    }

    /// The open segment, with room for `bytes` more (pages or records), sealing the current one
    /// and opening the next when it is full. A segment always takes at least one item, so an item
    /// larger than the limit still fits in a segment of its own.
    fn open_segment(&mut self, req: &Request, bytes: u64) -> &mut OpenSegment {
        let full = self.meta.group.open.is_some_and(|o| {
            let used = o.next_offset + o.record_bytes;
            used > 0 && used + bytes > req.segment_bytes_max
        });
        if full {
            self.seal_open();
        }
        let g = &mut self.meta.group;
        g.open.get_or_insert_with(|| {
            g.last_time_ms = g.last_time_ms.max(req.time_ms);
            let id = SegmentId::new(g.last_time_ms, self.group_id, g.next_segment_seq);
            g.next_segment_seq += 1;
            OpenSegment {
                id,
                next_offset: 0,
                record_bytes: 0,
            }
        })
    }

    /// Places one page in the open segment.
    fn place_page(
        &mut self,
        tx: &mut ApplyTx<'_>,
        req: &Request,
        volume: VolumeId,
        idx: PageIdx,
        data: &Bytes,
    ) -> PageLocation {
        let page = PAGE_SIZE as u64;
        let open = self.open_segment(req, page);
        let loc = PageLocation {
            idx,
            segment: open.id,
            offset: open.next_offset,
        };
        open.next_offset += page;
        self.meta.group.buffered_bytes += page;
        tx.batch.put_cf(
            cf(tx.db, CF_BUFFER),
            slot_key(loc.segment, loc.offset),
            data,
        );
        tx.batch.put_cf(
            cf(tx.db, CF_SLOTS),
            slot_key(loc.segment, loc.offset),
            slot_value(volume, idx),
        );
        tx.slots.insert((loc.segment, loc.offset), (volume, idx));
        loc
    }

    /// Adds a commit record (LSN 0: the volume's creation) to the open segment; returns the
    /// segment.
    fn place_record(
        &mut self,
        tx: &mut ApplyTx<'_>,
        req: &Request,
        volume: VolumeId,
        lsn: Lsn,
        bytes: u64,
    ) -> SegmentId {
        let open = self.open_segment(req, bytes);
        open.record_bytes += bytes;
        let id = open.id;
        tx.batch.put_cf(
            cf(tx.db, CF_SEG_COMMITS),
            seg_commit_key(id, volume, lsn),
            [],
        );
        id
    }

    /// Drops a flushed segment's pages and records from the buffer. Returns the bytes dropped, 0
    /// when the segment was flushed before (two leaders may both report one upload).
    fn drop_flushed(&mut self, tx: &mut ApplyTx<'_>, segment: SegmentId) -> u64 {
        let g = &mut self.meta.group;
        let Some(pos) = g.sealed.iter().position(|s| s.id == segment) else {
            return 0;
        };
        let s = g.sealed.remove(pos);
        g.buffered_bytes = g.buffered_bytes.saturating_sub(s.bytes);
        g.flushed_segments += 1;
        let (start, end) = segment_range(segment);
        tx.batch.delete_range_cf(cf(tx.db, CF_BUFFER), &start, &end);
        tx.batch
            .delete_range_cf(cf(tx.db, CF_SEG_COMMITS), &start, &end);
        s.bytes
    }

    fn apply_command(
        &mut self,
        tx: &mut ApplyTx<'_>,
        req: &Request,
        cmd: &Command,
    ) -> Result<CommandResult, StoreError> {
        let time_ms = req.time_ms;
        match cmd {
            Command::CreateVolume { volume } => {
                if tx.head(*volume)?.is_some() {
                    return Ok(CommandResult::Rejected(Rejection::VolumeExists(*volume)));
                }
                tx.put_head(
                    *volume,
                    VolumeHead {
                        lsn: Lsn::ZERO,
                        created_at_ms: time_ms,
                    },
                );
                // The creation travels to the object store as the volume's LSN-0 record.
                self.place_record(tx, req, *volume, Lsn::ZERO, record_bytes(0, 0));
                Ok(CommandResult::VolumeCreated { volume: *volume })
            }
            Command::WritePages { args } => {
                if tx.head(args.volume)?.is_none() {
                    return Ok(CommandResult::Rejected(Rejection::UnknownVolume(
                        args.volume,
                    )));
                }
                let pages = args
                    .pages
                    .iter()
                    .map(|p| self.place_page(tx, req, args.volume, p.idx, p.page.bytes()))
                    .collect();
                Ok(CommandResult::PagesWritten { pages })
            }
            Command::Commit { args, fingerprint } => {
                let v = args.volume;
                let Some(head) = tx.head(v)? else {
                    return Ok(CommandResult::Rejected(Rejection::UnknownVolume(v)));
                };
                if let Some(rec) = tx.idem(v, &args.idempotency_key)? {
                    if rec.lsn.0 + IDEMPOTENCY_RETAIN_COMMITS > head.lsn.0 {
                        if rec.fingerprint != *fingerprint {
                            return Ok(CommandResult::Rejected(Rejection::KeyReused {
                                volume: v,
                                lsn: rec.lsn,
                            }));
                        }
                        let original = tx.commit(v, rec.lsn)?.ok_or_else(|| {
                            corrupt(CF_COMMITS, format!("missing commit {v}@{}", rec.lsn))
                        })?;
                        return Ok(CommandResult::Committed {
                            lsn: rec.lsn,
                            pages: original.pages,
                            deduplicated: true,
                            segment: original.segment,
                        });
                    }
                }
                if head.lsn != args.expected_lsn {
                    return Ok(CommandResult::Rejected(Rejection::Conflict {
                        volume: v,
                        expected: args.expected_lsn,
                        current: head.lsn,
                    }));
                }
                for r in &args.refs {
                    match tx.slot(r.segment, r.offset)? {
                        Some((rv, ri)) if rv == v && ri == r.idx => {}
                        Some((rv, ri)) => {
                            return Ok(CommandResult::Rejected(Rejection::BadRef {
                                idx: r.idx,
                                reason: format!(
                                    "segment {} offset {} holds page {ri} of volume {rv}",
                                    r.segment, r.offset
                                ),
                            }))
                        }
                        None => {
                            return Ok(CommandResult::Rejected(Rejection::BadRef {
                                idx: r.idx,
                                reason: format!(
                                    "segment {} has no page at offset {}",
                                    r.segment, r.offset
                                ),
                            }))
                        }
                    }
                }
                let mut pages: Vec<PageLocation> = args
                    .pages
                    .iter()
                    .map(|p| self.place_page(tx, req, v, p.idx, p.page.bytes()))
                    .collect();
                pages.extend(args.refs.iter().copied());
                let lsn = head.lsn.next();
                let pages_cf = cf(tx.db, CF_PAGES);
                for p in &pages {
                    tx.batch.put_cf(
                        pages_cf,
                        page_key(v, p.idx, lsn),
                        location_value(p.segment, p.offset),
                    );
                }
                let segment = self.place_record(
                    tx,
                    req,
                    v,
                    lsn,
                    record_bytes(args.idempotency_key.len(), pages.len()),
                );
                let rec = CommitRecord {
                    lsn,
                    idempotency_key: args.idempotency_key.clone(),
                    fingerprint: *fingerprint,
                    committed_at_ms: time_ms,
                    pages: pages.clone(),
                    segment,
                };
                tx.batch
                    .put_cf(cf(tx.db, CF_COMMITS), commit_key(v, lsn), encode(&rec));
                tx.commits.insert((v, lsn), rec);
                let idem = IdemRecord {
                    lsn,
                    fingerprint: *fingerprint,
                };
                tx.batch.put_cf(
                    cf(tx.db, CF_IDEM),
                    idem_key(v, &args.idempotency_key),
                    encode(&idem),
                );
                tx.idem
                    .insert((v, args.idempotency_key.clone()), Some(idem));
                // Retention: forget the key of the commit that just left the window.
                if lsn.0 > IDEMPOTENCY_RETAIN_COMMITS {
                    let old = Lsn(lsn.0 - IDEMPOTENCY_RETAIN_COMMITS);
                    if let Some(old_rec) = tx.commit(v, old)? {
                        let still_ours = tx
                            .idem(v, &old_rec.idempotency_key)?
                            .is_some_and(|r| r.lsn == old);
                        if still_ours {
                            tx.batch.delete_cf(
                                cf(tx.db, CF_IDEM),
                                idem_key(v, &old_rec.idempotency_key),
                            );
                            tx.idem.insert((v, old_rec.idempotency_key), None);
                        }
                    }
                }
                tx.put_head(
                    v,
                    VolumeHead {
                        lsn,
                        created_at_ms: head.created_at_ms,
                    },
                );
                Ok(CommandResult::Committed {
                    lsn,
                    pages,
                    deduplicated: false,
                    segment,
                })
            }
            Command::Seal { segment } => {
                let open = self.meta.group.open.is_some_and(|o| o.id == *segment);
                if open {
                    self.seal_open();
                }
                Ok(CommandResult::Sealed(open))
            }
            Command::Flushed { segment } => {
                Ok(CommandResult::Flushed(self.drop_flushed(tx, *segment)))
            }
        }
    }

    fn write_meta(&self, batch: &mut WriteBatch) {
        let m = cf(&self.db, CF_SM_META);
        batch.put_cf(m, META_APPLIED, encode(&self.meta.applied));
        batch.put_cf(m, META_MEMBERSHIP, encode(&self.meta.membership));
        batch.put_cf(m, META_GROUP, encode(&self.meta.group));
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = snapshot::Builder;

    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<u64>>,
            StoredMembership<u64, openraft::BasicNode>,
        ),
        SErr,
    > {
        Ok((self.meta.applied, self.meta.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = Instant::now();
        let db = self.db.clone();
        let mut tx = ApplyTx::new(&db);
        let mut out = Vec::new();
        for entry in entries {
            self.meta.applied = Some(entry.log_id);
            let resp = match entry.payload {
                EntryPayload::Blank => Response::default(),
                EntryPayload::Membership(m) => {
                    self.meta.membership = StoredMembership::new(Some(entry.log_id), m);
                    Response::default()
                }
                EntryPayload::Normal(req) => {
                    let mut results = Vec::with_capacity(req.commands.len());
                    for cmd in &req.commands {
                        self.applied_bytes
                            .fetch_add(cmd.size_bytes() as u64, Ordering::Relaxed);
                        let r = self
                            .apply_command(&mut tx, &req, cmd)
                            .map_err(|e| StorageIOError::apply(entry.log_id, AnyError::error(e)))?;
                        results.push(r);
                    }
                    Response { results }
                }
            };
            out.push(resp);
        }
        let mut batch = std::mem::take(&mut tx.batch);
        self.write_meta(&mut batch);
        self.db
            .write(batch)
            .map_err(|e| StorageIOError::write_state_machine(&e))?;
        self.publish();
        metrics::APPLY_SECONDS.observe(started.elapsed().as_secs_f64());
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        snapshot::Builder {
            db: self.db.clone(),
            dir: self.snapshots.clone(),
            lock: self.snapshot_lock.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, SErr> {
        let path = snapshot::receiving_path(&self.snapshots);
        let f = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(Box::new(f))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), SErr> {
        let _guard = self.snapshot_lock.lock().await;
        let sig = Some(meta.signature());
        let bytes = snapshot::read_all(snapshot)
            .await
            .map_err(|e| StorageIOError::read_snapshot(sig.clone(), &e))?;
        let mut batch = WriteBatch::default();
        let decoded = snapshot::decode_into(&self.db, &bytes, &mut batch)
            .map_err(|e| StorageIOError::read_snapshot(sig.clone(), AnyError::error(e)))?;
        if decoded != *meta {
            return Err(StorageIOError::read_snapshot(
                sig,
                AnyError::error("snapshot body does not match its metadata"),
            )
            .into());
        }
        // The file first: a crash between the two leaves a current snapshot that is installed
        // again on restart. The reverse order could leave an older snapshot current while the
        // log below the new one is purged.
        snapshot::persist(&self.snapshots, &meta.snapshot_id, &bytes)
            .map_err(|e| StorageIOError::write_snapshot(sig, &e))?;
        self.db
            .write(batch)
            .map_err(|e| StorageIOError::write_state_machine(&e))?;
        self.meta = load_meta(&self.db)
            .map_err(|e| StorageIOError::read_state_machine(AnyError::error(e)))?;
        self.publish();
        metrics::SNAPSHOTS_INSTALLED.inc();
        tracing::info!(snapshot = %meta.snapshot_id, bytes = bytes.len(), "installed snapshot from leader");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, SErr> {
        let _guard = self.snapshot_lock.lock().await;
        snapshot::current(&self.snapshots)
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, &e).into())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for snapshot::Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SErr> {
        let _guard = self.lock.lock().await;
        let db = self.db.clone();
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || snapshot::build(&db, &dir))
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, AnyError::error(e)))?
            .map_err(|e| StorageIOError::write_snapshot(None, AnyError::error(e)))?;
        metrics::SNAPSHOTS_BUILT.inc();
        snapshot::current(&self.dir)
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?
            .ok_or_else(|| {
                StorageIOError::read_snapshot(None, AnyError::error("snapshot vanished")).into()
            })
    }
}

// ---------------------------------------------------------------------------------------------
// Reads for clients

/// A sealed segment's object, as uploaded.
#[derive(Clone, Debug)]
pub struct SegmentObject {
    pub id: SegmentId,
    pub pages: u64,
    pub commits: u64,
    pub bytes: Bytes,
}

/// Read access to the applied state, for serving clients. Reads see the latest applied state of
/// this replica.
#[derive(Clone)]
pub struct StateReader {
    db: Arc<DB>,
    group: watch::Sender<Arc<GroupState>>,
    applied_bytes: Arc<AtomicU64>,
}

impl StateReader {
    pub fn volume(&self, v: VolumeId) -> Result<Option<VolumeHead>, StoreError> {
        match self.db.get_cf(cf(&self.db, CF_VOLUMES), v.as_bytes())? {
            Some(b) => Ok(Some(decode(&b).map_err(|e| corrupt(CF_VOLUMES, e))?)),
            None => Ok(None),
        }
    }

    /// Commits of `v` from `from` on, at most `limit`.
    pub fn commits(
        &self,
        v: VolumeId,
        from: Lsn,
        limit: usize,
    ) -> Result<Vec<CommitRecord>, StoreError> {
        let start = commit_key(v, from);
        let it = self.db.iterator_cf(
            cf(&self.db, CF_COMMITS),
            IteratorMode::From(&start, Direction::Forward),
        );
        let mut out = Vec::new();
        for item in it {
            let (k, val) = item?;
            if out.len() >= limit || k.len() != 24 || &k[..16] != v.as_bytes() {
                break;
            }
            out.push(decode(&val).map_err(|e| corrupt(CF_COMMITS, e))?);
        }
        Ok(out)
    }

    /// Page indexes written by commits `from..=to` of `v`, rolled up: each named once.
    pub fn changed_pages(
        &self,
        v: VolumeId,
        from: Lsn,
        to: Lsn,
    ) -> Result<roaring::RoaringBitmap, StoreError> {
        let mut set = roaring::RoaringBitmap::new();
        let mut next = from;
        while next <= to {
            let batch = self.commits(v, next, 1024)?;
            let Some(last) = batch.last().map(|c| c.lsn) else {
                break;
            };
            for c in batch.iter().filter(|c| c.lsn <= to) {
                set.extend(c.pages.iter().map(|p| p.idx.0));
            }
            next = last.next();
        }
        Ok(set)
    }

    /// Volumes with ids after `after`, at most `limit`.
    pub fn volumes(
        &self,
        after: Option<VolumeId>,
        limit: usize,
    ) -> Result<Vec<(VolumeId, VolumeHead)>, StoreError> {
        let mode = match &after {
            Some(a) => IteratorMode::From(a.as_bytes(), Direction::Forward),
            None => IteratorMode::Start,
        };
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf(&self.db, CF_VOLUMES), mode) {
            let (k, val) = item?;
            let id = VolumeId::from_slice(&k).map_err(|e| corrupt(CF_VOLUMES, e))?;
            if Some(id) == after {
                continue;
            }
            if out.len() >= limit {
                break;
            }
            out.push((id, decode(&val).map_err(|e| corrupt(CF_VOLUMES, e))?));
        }
        Ok(out)
    }

    /// The version of page `idx` of `v` visible at snapshot `lsn`: the LSN that wrote it and
    /// where its bytes are; `None` when the page was never written as of `lsn`.
    pub fn page_at(
        &self,
        v: VolumeId,
        idx: PageIdx,
        lsn: Lsn,
    ) -> Result<Option<(Lsn, PageLocation)>, StoreError> {
        let key = page_key(v, idx, lsn);
        let mut it = self.db.iterator_cf(
            cf(&self.db, CF_PAGES),
            IteratorMode::From(&key, Direction::Reverse),
        );
        let Some(item) = it.next() else {
            return Ok(None);
        };
        let (k, val) = item?;
        if k.len() != 28 || k[..20] != key[..20] {
            return Ok(None);
        }
        let written = Lsn(u64::from_be_bytes(k[20..].try_into().expect("8 bytes")));
        if val.len() != 24 {
            return Err(corrupt(CF_PAGES, "bad location"));
        }
        let segment = SegmentId::from_slice(&val[..16]).map_err(|e| corrupt(CF_PAGES, e))?;
        let offset = u64::from_be_bytes(val[16..].try_into().expect("8 bytes"));
        Ok(Some((
            written,
            PageLocation {
                idx,
                segment,
                offset,
            },
        )))
    }

    /// The bytes of a page still in the local buffer.
    pub fn buffered_page(
        &self,
        segment: SegmentId,
        offset: u64,
    ) -> Result<Option<Bytes>, StoreError> {
        Ok(self
            .db
            .get_cf(cf(&self.db, CF_BUFFER), slot_key(segment, offset))?
            .map(Bytes::from))
    }

    /// The group's segment state as of this replica's last applied entry.
    pub fn group_state(&self) -> Arc<GroupState> {
        self.group.borrow().clone()
    }

    /// A receiver that sees every new group state, to wait for seals and flushes.
    pub fn watch_group(&self) -> watch::Receiver<Arc<GroupState>> {
        self.group.subscribe()
    }

    /// Bytes of commands this replica applied since it started.
    pub fn applied_bytes(&self) -> u64 {
        self.applied_bytes.load(Ordering::Relaxed)
    }

    /// Builds the object for a sealed, unflushed segment from this replica's buffer, reading
    /// one consistent RocksDB snapshot. Every replica that applied the seal builds the same
    /// bytes. `None` when the segment is not sealed-and-unflushed here (already flushed, or not
    /// sealed yet).
    pub fn build_segment(&self, segment: SegmentId) -> Result<Option<SegmentObject>, StoreError> {
        let snap = self.db.snapshot();
        let opts = || {
            let mut o = ReadOptions::default();
            o.set_snapshot(&snap);
            o
        };
        let get = |cf_name: &'static str, key: &[u8]| -> Result<Option<Vec<u8>>, StoreError> {
            Ok(self.db.get_cf_opt(cf(&self.db, cf_name), key, &opts())?)
        };
        let group: GroupState = match get(CF_SM_META, META_GROUP)? {
            Some(b) => decode(&b).map_err(|e| corrupt(CF_SM_META, e))?,
            None => return Ok(None),
        };
        let Some(sealed) = group.sealed.iter().find(|s| s.id == segment).copied() else {
            return Ok(None);
        };
        let (start, end) = segment_range(segment);
        let range = |cf_name: &'static str| {
            let mut o = opts();
            o.set_iterate_upper_bound(end.clone());
            self.db.iterator_cf_opt(
                cf(&self.db, cf_name),
                o,
                IteratorMode::From(&start, Direction::Forward),
            )
        };
        let mut builder = SegmentBuilder::new(segment);
        let mut slots = range(CF_SLOTS);
        let mut pages = 0u64;
        for item in range(CF_BUFFER) {
            let (k, data) = item?;
            let (sk, sv) = slots
                .next()
                .ok_or_else(|| corrupt(CF_SLOTS, format!("segment {segment}: slot missing")))??;
            if sk != k {
                return Err(corrupt(
                    CF_SLOTS,
                    format!("segment {segment}: slots and buffer disagree"),
                ));
            }
            let (volume, idx) =
                parse_slot_value(&sv).ok_or_else(|| corrupt(CF_SLOTS, "bad slot value"))?;
            let page = folio_core::Page::new(Bytes::from(data.into_vec()))
                .map_err(|e| corrupt(CF_BUFFER, e))?;
            let offset = builder.push(volume, idx, &page);
            if slot_key(segment, offset).as_slice() != &*k {
                return Err(corrupt(
                    CF_BUFFER,
                    format!("segment {segment}: gap at offset {offset}"),
                ));
            }
            pages += 1;
        }
        if pages * PAGE_SIZE as u64 != sealed.bytes {
            return Err(corrupt(
                CF_BUFFER,
                format!(
                    "segment {segment}: {pages} pages buffered, {} bytes sealed",
                    sealed.bytes
                ),
            ));
        }
        let mut commits = 0u64;
        for item in range(CF_SEG_COMMITS) {
            let (k, _) = item?;
            let (_, volume, lsn) =
                parse_seg_commit_key(&k).ok_or_else(|| corrupt(CF_SEG_COMMITS, "bad key"))?;
            let entry = if lsn == Lsn::ZERO {
                let head: VolumeHead = get(CF_VOLUMES, volume.as_bytes())?
                    .map(|b| decode(&b).map_err(|e| corrupt(CF_VOLUMES, e)))
                    .transpose()?
                    .ok_or_else(|| corrupt(CF_VOLUMES, format!("volume {volume} missing")))?;
                CommitEntry {
                    volume,
                    lsn,
                    committed_at_ms: head.created_at_ms,
                    idempotency_key: Bytes::new(),
                    pages: Vec::new(),
                }
            } else {
                let rec: CommitRecord = get(CF_COMMITS, &commit_key(volume, lsn))?
                    .map(|b| decode(&b).map_err(|e| corrupt(CF_COMMITS, e)))
                    .transpose()?
                    .ok_or_else(|| corrupt(CF_COMMITS, format!("commit {volume}@{lsn} missing")))?;
                CommitEntry {
                    volume,
                    lsn,
                    committed_at_ms: rec.committed_at_ms,
                    idempotency_key: rec.idempotency_key,
                    pages: rec.pages,
                }
            };
            builder.add_commit(entry);
            commits += 1;
        }
        Ok(Some(SegmentObject {
            id: segment,
            pages,
            commits,
            bytes: builder.finish(),
        }))
    }

    /// Number of volumes (an estimate from RocksDB for large counts).
    pub fn volume_count(&self) -> u64 {
        self.db
            .property_int_value_cf(cf(&self.db, CF_VOLUMES), "rocksdb.estimate-num-keys")
            .ok()
            .flatten()
            .unwrap_or(0)
    }
}
