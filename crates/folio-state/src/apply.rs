//! Applying committed entries: CAS on a volume's LSN, idempotency keys, placing pages and commit
//! records in the open segment, sealing, and dropping flushed segments from the buffer. Every
//! decision depends only on the entry and the replicated state, so every replica decides the same.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use folio_core::limits::IDEMPOTENCY_RETAIN_COMMITS;
use folio_core::{Lsn, PageIdx, PageLocation, SegmentId, VolumeId, PAGE_SIZE};
use folio_raft::codec::{decode, encode};
use folio_raft::keys::cf;
use openraft::{AnyError, Entry, EntryPayload, StorageIOError, StoredMembership};
use rocksdb::{WriteBatch, DB};

use crate::command::{Command, CommandResult, Rejection, Request, Response, RestoreStep};
use crate::db::{corrupt, StoreError};
use crate::keys::*;
use crate::machine::SErr;
use crate::state::{
    fork_record_key, is_volume_event, retention_record_key, CommitRecord, ForkBase, IdemRecord,
    ManifestRef, OpenSegment, SealedSegment, VolumeHead, DELETION_LSN, DELETION_RECORD_KEY,
    MAX_FORK_DEPTH, RETENTION_LSN,
};
use crate::{metrics, StateMachine, TypeConfig};

/// The writes of one `apply` call, with an overlay so later commands in the call see the effects
/// of earlier ones before the batch reaches RocksDB.
struct ApplyTx<'a> {
    db: &'a DB,
    batch: WriteBatch,
    heads: HashMap<VolumeId, Option<VolumeHead>>,
    idem: HashMap<(VolumeId, Bytes), Option<IdemRecord>>,
    commits: HashMap<(VolumeId, Lsn), CommitRecord>,
    slots: HashMap<(SegmentId, u64), (VolumeId, PageIdx)>,
    idem_lsn: HashMap<(VolumeId, Lsn), Option<Bytes>>,
    /// Volumes whose head this batch changed, whose watchers are woken once it is written.
    changed: HashSet<VolumeId>,
    /// A checkpoint dropped index entries: compact once the batch is written.
    compact: bool,
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
            idem_lsn: HashMap::new(),
            changed: HashSet::new(),
            compact: false,
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
        self.changed.insert(v);
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

    /// The key of commit `lsn` in the idempotency window.
    fn idem_key_at(&self, v: VolumeId, lsn: Lsn) -> Result<Option<Bytes>, StoreError> {
        if let Some(k) = self.idem_lsn.get(&(v, lsn)) {
            return Ok(k.clone());
        }
        if let Some(b) = self
            .db
            .get_cf(cf(self.db, CF_IDEM_LSN), idem_lsn_key(v, lsn))?
        {
            return Ok(Some(Bytes::from(b)));
        }
        // Written before the window had its own column family: the commit record names it.
        Ok(self.commit(v, lsn)?.map(|c| c.idempotency_key))
    }

    /// Records `key` as commit `lsn`'s key in the idempotency window.
    fn put_idem(&mut self, v: VolumeId, key: &Bytes, rec: IdemRecord) {
        self.batch
            .put_cf(cf(self.db, CF_IDEM), idem_key(v, key), encode(&rec));
        self.batch
            .put_cf(cf(self.db, CF_IDEM_LSN), idem_lsn_key(v, rec.lsn), key);
        self.idem.insert((v, key.clone()), Some(rec));
        self.idem_lsn.insert((v, rec.lsn), Some(key.clone()));
    }

    /// Forgets every idempotency key of `v`.
    fn drop_idem_window(&mut self, v: VolumeId) {
        let (start, end) = volume_range(v);
        for name in [CF_IDEM, CF_IDEM_LSN] {
            self.batch
                .delete_range_cf(cf(self.db, name), start.as_slice(), end.as_slice());
        }
        self.idem.retain(|(iv, _), _| *iv != v);
        self.idem_lsn.retain(|(iv, _), _| *iv != v);
    }

    /// Forgets the key of commit `old`, which just left the idempotency window, unless a later
    /// commit reused the key.
    fn expire_idem(&mut self, v: VolumeId, old: Lsn) -> Result<(), StoreError> {
        let Some(key) = self.idem_key_at(v, old)? else {
            return Ok(());
        };
        self.batch
            .delete_cf(cf(self.db, CF_IDEM_LSN), idem_lsn_key(v, old));
        self.idem_lsn.insert((v, old), None);
        if self.idem(v, &key)?.is_some_and(|r| r.lsn == old) {
            self.batch
                .delete_cf(cf(self.db, CF_IDEM), idem_key(v, &key));
            self.idem.insert((v, key), None);
        }
        Ok(())
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

/// Compacts the column families a checkpoint deletes from, in the background. A checkpoint
/// deletes index entries one by one; until compaction drops those tombstones, seeks and scans
/// step over them. The column families hold only what no checkpoint covers, so this is cheap.
/// At most one such compaction runs at a time (per process); a checkpoint that finds one running
/// leaves its tombstones to the next.
fn compact_history(db: std::sync::Arc<DB>) {
    if COMPACTING.swap(true, Ordering::SeqCst) {
        return;
    }
    std::thread::spawn(move || {
        for name in [CF_PAGES, CF_COMMITS, CF_SLOTS, CF_SEG_COMMITS] {
            db.compact_range_cf_opt(
                cf(&db, name),
                None::<&[u8]>,
                None::<&[u8]>,
                &folio_raft::keys::manual_compaction(),
            );
        }
        drop(db);
        COMPACTING.store(false, Ordering::SeqCst);
    });
}

/// Whether a background compaction of [`compact_history`] is running.
static COMPACTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Waits (at most `timeout`) for a background history compaction to end. A process must not exit
/// while one runs: RocksDB aborts when its threads outlive the process's static state. Returns
/// whether none is running.
pub fn wait_for_background_compaction(timeout: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while COMPACTING.load(Ordering::SeqCst) {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    true
}

/// Bytes a commit record takes in a segment's commits section, as `folio-segment` lays it out.
fn record_bytes(key_len: usize, pages: usize) -> u64 {
    folio_segment::commit_record_len(key_len, pages) as u64
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
            // 31 bits: the top one marks compacted segments. Ids stay unique as they start
            // with the (never decreasing) time.
            g.next_segment_seq = (g.next_segment_seq + 1) & !folio_core::COMPACTED_SEQ_BIT;
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
    /// segment. `value` is what the segment's record needs that the state may not keep as it was
    /// (a retention record's key: the volume's retention may change again before the segment is
    /// built, and every build of a segment must give the same bytes); empty for the others.
    fn place_record(
        &mut self,
        tx: &mut ApplyTx<'_>,
        req: &Request,
        volume: VolumeId,
        lsn: Lsn,
        bytes: u64,
        value: &[u8],
    ) -> SegmentId {
        let open = self.open_segment(req, bytes);
        open.record_bytes += bytes;
        let id = open.id;
        tx.batch.put_cf(
            cf(tx.db, CF_SEG_COMMITS),
            seg_commit_key(id, volume, lsn),
            value,
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
        // The segment's commit records and slots stay until a checkpoint covers it.
        tx.batch.delete_range_cf(cf(tx.db, CF_BUFFER), &start, &end);
        s.bytes
    }

    /// Applies checkpoint `seq` covering every segment up to `through`: drops their index
    /// entries, commit records and slots. Refused (false) unless `seq` is the next version, it
    /// moves forward, and no segment up to `through` is still open or waiting for upload.
    fn checkpoint(
        &mut self,
        tx: &mut ApplyTx<'_>,
        seq: u64,
        through: SegmentId,
    ) -> Result<bool, StoreError> {
        let g = &self.meta.group;
        let next = g.manifest.map_or(1, |m| m.seq + 1);
        let unflushed =
            g.open.is_some_and(|o| o.id <= through) || g.sealed.iter().any(|s| s.id <= through);
        // A version may keep `through` (a rewrite of the runs: retention, deletions), never
        // move it back.
        if seq != next || g.manifest.is_some_and(|m| m.through > through) || unflushed {
            return Ok(false);
        }
        let end = through_segment_end(through);
        let mut opts = rocksdb::ReadOptions::default();
        opts.set_iterate_upper_bound(end.clone());
        let db = tx.db;
        let (seg_cf, commits_cf, pages_cf) =
            (cf(db, CF_SEG_COMMITS), cf(db, CF_COMMITS), cf(db, CF_PAGES));
        let mut dropped = 0u64;
        // The newest covered commit of each volume. A volume's commits take their segments in
        // LSN order, so every commit record it has up to that one is covered.
        let mut newest: HashMap<VolumeId, Lsn> = HashMap::new();
        for item in db.iterator_cf_opt(seg_cf, opts, rocksdb::IteratorMode::Start) {
            let (k, value) = item?;
            let (_, v, lsn) =
                parse_seg_commit_key(&k).ok_or_else(|| corrupt(CF_SEG_COMMITS, "bad key"))?;
            if is_volume_event(lsn) {
                continue;
            }
            let listed = parse_seg_commit_pages(&value).map_err(|e| corrupt(CF_SEG_COMMITS, e))?;
            // Indexed before the entry listed the pages: the commit record does.
            let recorded = match listed {
                Some(_) => Vec::new(),
                None => tx.commit(v, lsn)?.map(|r| r.pages).unwrap_or_default(),
            };
            for idx in listed
                .into_iter()
                .flatten()
                .chain(recorded.iter().map(|p| p.idx))
            {
                tx.batch.delete_cf(pages_cf, page_key(v, idx, lsn));
                dropped += 1;
            }
            let n = newest.entry(v).or_insert(lsn);
            *n = (*n).max(lsn);
        }
        // One range deletion per volume instead of one per commit record.
        for (&v, lsn) in &newest {
            tx.batch.delete_range_cf(
                commits_cf,
                commit_key(v, Lsn::ZERO),
                commit_key(v, lsn.next()),
            );
        }
        tx.commits
            .retain(|(v, lsn), _| newest.get(v).is_none_or(|n| lsn > n));
        tx.batch
            .delete_range_cf(seg_cf, [].as_slice(), end.as_slice());
        tx.batch
            .delete_range_cf(cf(db, CF_SLOTS), [].as_slice(), end.as_slice());
        tx.slots.retain(|(s, _), _| *s > through);
        self.meta.group.manifest = Some(ManifestRef { seq, through });
        tx.compact = true;
        metrics::CHECKPOINT_PAGES_DROPPED.inc_by(dropped);
        Ok(true)
    }

    /// Creates `volume` as a fork of `source` at `at` (the source's head when `None`).
    fn fork(
        &mut self,
        tx: &mut ApplyTx<'_>,
        req: &Request,
        volume: VolumeId,
        source: VolumeId,
        at: Option<Lsn>,
    ) -> Result<CommandResult, StoreError> {
        let rejected = |r| Ok(CommandResult::Rejected(r));
        if let Some(h) = tx.head(volume)? {
            return rejected(if h.deleted {
                Rejection::IdRetired(volume)
            } else {
                Rejection::VolumeExists(volume)
            });
        }
        let Some(src) = tx.head(source)? else {
            return rejected(Rejection::UnknownVolume(source));
        };
        if src.deleted {
            return rejected(Rejection::Deleted(source));
        }
        let at = at.unwrap_or(src.lsn);
        let refuse = |reason: String| {
            rejected(Rejection::ForkPoint {
                source_volume: source,
                at,
                reason,
            })
        };
        if at > src.lsn {
            return refuse(format!("the source's latest LSN is {}", src.lsn));
        }
        if at < src.horizon {
            return refuse(format!(
                "it is no longer retained; the oldest retained LSN is {}",
                src.horizon
            ));
        }
        // The new volume sits one level below its source's chain of sources.
        let mut depth = 1;
        let mut up = src.base;
        while let Some(b) = up {
            depth += 1;
            up = tx.head(b.volume)?.and_then(|h| h.base);
        }
        if depth > MAX_FORK_DEPTH {
            return rejected(Rejection::ForkTooDeep(source));
        }
        let base = ForkBase {
            volume: source,
            lsn: at,
        };
        let head = VolumeHead {
            base: Some(base),
            ..VolumeHead::new(Lsn::ZERO, req.time_ms)
        };
        tx.put_head(volume, head);
        // Its creation record names the source, so a rebuild from the bucket restores the link.
        self.place_record(
            tx,
            req,
            volume,
            Lsn::ZERO,
            record_bytes(fork_record_key(&base).len(), 0),
            &[],
        );
        Ok(CommandResult::VolumeForked { volume, source, at })
    }

    /// One step of a rebuild from the bucket.
    fn restore(
        &mut self,
        tx: &mut ApplyTx<'_>,
        step: &RestoreStep,
    ) -> Result<CommandResult, StoreError> {
        let g = &self.meta.group;
        match step {
            RestoreStep::Begin {
                manifest,
                last_time_ms,
                next_segment_seq,
            } => {
                // Only an empty group is rebuilt (or one whose rebuild a previous leader began).
                let has_volumes = tx
                    .db
                    .iterator_cf(cf(tx.db, CF_VOLUMES), rocksdb::IteratorMode::Start)
                    .next()
                    .is_some();
                let empty =
                    !has_volumes && g.manifest.is_none() && g.open.is_none() && g.sealed.is_empty();
                if !empty && !g.restoring {
                    return Ok(CommandResult::Rejected(Rejection::RestoreRefused(
                        "the group already holds volumes or history".into(),
                    )));
                }
                let g = &mut self.meta.group;
                g.manifest = *manifest;
                g.last_time_ms = g.last_time_ms.max(*last_time_ms);
                g.next_segment_seq = g.next_segment_seq.max(*next_segment_seq);
                g.restoring = true;
            }
            _ if !g.restoring => {
                return Ok(CommandResult::Rejected(Rejection::RestoreRefused(
                    "no rebuild is under way".into(),
                )))
            }
            RestoreStep::Volumes { heads } => {
                for (v, h) in heads {
                    tx.put_head(*v, *h);
                }
            }
            RestoreStep::Commits { records } => {
                for r in records {
                    if is_volume_event(r.lsn) {
                        // A creation, retention change or deletion in a segment after the
                        // checkpoint: the next checkpoint writes the volume's head from it.
                        if r.indexed {
                            let value: &[u8] = if r.lsn == RETENTION_LSN {
                                &r.idempotency_key
                            } else {
                                &[]
                            };
                            tx.batch.put_cf(
                                cf(tx.db, CF_SEG_COMMITS),
                                seg_commit_key(r.segment, r.volume, r.lsn),
                                value,
                            );
                        }
                        continue;
                    }
                    if r.indexed {
                        let rec = CommitRecord {
                            lsn: r.lsn,
                            idempotency_key: r.idempotency_key.clone(),
                            fingerprint: r.fingerprint,
                            committed_at_ms: r.committed_at_ms,
                            pages: r.pages.clone(),
                            segment: r.segment,
                        };
                        for p in &r.pages {
                            tx.batch.put_cf(
                                cf(tx.db, CF_PAGES),
                                page_key(r.volume, p.idx, r.lsn),
                                location_value(p.segment, p.offset),
                            );
                        }
                        tx.batch.put_cf(
                            cf(tx.db, CF_SEG_COMMITS),
                            seg_commit_key(r.segment, r.volume, r.lsn),
                            seg_commit_pages_value(r.pages.iter().map(|p| p.idx)),
                        );
                        tx.batch.put_cf(
                            cf(tx.db, CF_COMMITS),
                            commit_key(r.volume, r.lsn),
                            encode(&rec),
                        );
                        tx.commits.insert((r.volume, r.lsn), rec);
                    }
                    // Only the window's keys: older ones would never expire.
                    let head = tx.head(r.volume)?.map_or(Lsn::ZERO, |h| h.lsn);
                    if r.lsn.0 + IDEMPOTENCY_RETAIN_COMMITS > head.0 {
                        tx.put_idem(
                            r.volume,
                            &r.idempotency_key,
                            IdemRecord {
                                lsn: r.lsn,
                                fingerprint: r.fingerprint,
                                segment: Some(r.segment),
                            },
                        );
                    }
                }
            }
            RestoreStep::End => self.meta.group.restoring = false,
        }
        Ok(CommandResult::Restored)
    }

    fn apply_command(
        &mut self,
        tx: &mut ApplyTx<'_>,
        req: &Request,
        cmd: &Command,
    ) -> Result<CommandResult, StoreError> {
        let time_ms = req.time_ms;
        let writes = matches!(
            cmd,
            Command::CreateVolume { .. }
                | Command::Commit { .. }
                | Command::WritePages { .. }
                | Command::DeleteVolume { .. }
                | Command::ForkVolume { .. }
                | Command::SetRetention { .. }
        );
        if writes && self.meta.group.restoring {
            return Ok(CommandResult::Rejected(Rejection::Restoring));
        }
        match cmd {
            Command::CreateVolume { volume } => {
                if let Some(h) = tx.head(*volume)? {
                    return Ok(CommandResult::Rejected(if h.deleted {
                        Rejection::IdRetired(*volume)
                    } else {
                        Rejection::VolumeExists(*volume)
                    }));
                }
                tx.put_head(*volume, VolumeHead::new(Lsn::ZERO, time_ms));
                // The creation travels to the object store as the volume's LSN-0 record.
                self.place_record(tx, req, *volume, Lsn::ZERO, record_bytes(0, 0), &[]);
                Ok(CommandResult::VolumeCreated { volume: *volume })
            }
            Command::WritePages { args } => {
                match tx.head(args.volume)? {
                    None => {
                        return Ok(CommandResult::Rejected(Rejection::UnknownVolume(
                            args.volume,
                        )))
                    }
                    Some(h) if h.deleted => {
                        return Ok(CommandResult::Rejected(Rejection::Deleted(args.volume)))
                    }
                    Some(_) => {}
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
                if head.deleted {
                    return Ok(CommandResult::Rejected(Rejection::Deleted(v)));
                }
                if let Some(rec) = tx.idem(v, &args.idempotency_key)? {
                    if rec.lsn.0 + IDEMPOTENCY_RETAIN_COMMITS > head.lsn.0 {
                        if rec.fingerprint != *fingerprint {
                            return Ok(CommandResult::Rejected(Rejection::KeyReused {
                                volume: v,
                                lsn: rec.lsn,
                            }));
                        }
                        // The record is here until a checkpoint covers it; after that the
                        // answer carries no pages and the edge reads them from the manifest.
                        let (pages, segment) = match tx.commit(v, rec.lsn)? {
                            Some(original) => (original.pages, original.segment),
                            None => (
                                Vec::new(),
                                rec.segment.ok_or_else(|| {
                                    corrupt(CF_IDEM, format!("missing commit {v}@{}", rec.lsn))
                                })?,
                            ),
                        };
                        return Ok(CommandResult::Committed {
                            lsn: rec.lsn,
                            pages,
                            deduplicated: true,
                            segment,
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
                            let checkpointed = self
                                .meta
                                .group
                                .manifest
                                .is_some_and(|m| r.segment <= m.through);
                            let reason = if checkpointed {
                                format!(
                                    "segment {} is older than the group's last checkpoint, so \
                                     its slots can no longer be checked; write the page again",
                                    r.segment
                                )
                            } else {
                                format!("segment {} has no page at offset {}", r.segment, r.offset)
                            };
                            return Ok(CommandResult::Rejected(Rejection::BadRef {
                                idx: r.idx,
                                reason,
                            }));
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
                    &seg_commit_pages_value(pages.iter().map(|p| p.idx)),
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
                tx.put_idem(
                    v,
                    &args.idempotency_key,
                    IdemRecord {
                        lsn,
                        fingerprint: *fingerprint,
                        segment: Some(segment),
                    },
                );
                // Retention: forget the key of the commit that just left the window.
                if lsn.0 > IDEMPOTENCY_RETAIN_COMMITS {
                    tx.expire_idem(v, Lsn(lsn.0 - IDEMPOTENCY_RETAIN_COMMITS))?;
                }
                tx.put_head(v, VolumeHead { lsn, ..head });
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
            Command::Checkpointed { seq, through } => Ok(CommandResult::Checkpointed(
                self.checkpoint(tx, *seq, *through)?,
            )),
            Command::Restore { step } => self.restore(tx, step),
            Command::ForkVolume { volume, source, at } => self.fork(tx, req, *volume, *source, *at),
            Command::Retain { horizons, under } => {
                let mut moved = 0;
                for (i, (v, horizon)) in horizons.iter().enumerate() {
                    let Some(head) = tx.head(*v)? else { continue };
                    if under.get(i).is_some_and(|r| *r != head.retention) {
                        continue;
                    }
                    let horizon = (*horizon).min(head.lsn);
                    if !head.deleted && horizon > head.horizon {
                        tx.put_head(*v, VolumeHead { horizon, ..head });
                        moved += 1;
                    }
                }
                Ok(CommandResult::Retained(moved))
            }
            Command::SetRetention { volume, retention } => {
                let v = *volume;
                match tx.head(v)? {
                    None => Ok(CommandResult::Rejected(Rejection::UnknownVolume(v))),
                    Some(h) if h.deleted => Ok(CommandResult::Rejected(Rejection::Deleted(v))),
                    Some(head) => {
                        if head.retention != *retention {
                            tx.put_head(
                                v,
                                VolumeHead {
                                    retention: *retention,
                                    ..head
                                },
                            );
                            // The change travels to the object store as a record of its own,
                            // so a group rebuilt from the bucket keeps it.
                            let key = retention_record_key(retention.as_ref());
                            self.place_record(
                                tx,
                                req,
                                v,
                                RETENTION_LSN,
                                record_bytes(key.len(), 0),
                                &key,
                            );
                        }
                        Ok(CommandResult::RetentionSet { volume: v })
                    }
                }
            }
            Command::DeleteVolume { volume } => {
                let v = *volume;
                let Some(head) = tx.head(v)? else {
                    return Ok(CommandResult::Rejected(Rejection::UnknownVolume(v)));
                };
                if !head.deleted {
                    tx.put_head(
                        v,
                        VolumeHead {
                            deleted: true,
                            ..head
                        },
                    );
                    // No retry of its commits can be answered any more: drop the window.
                    tx.drop_idem_window(v);
                    // The deletion travels to the object store as the volume's last record, so
                    // a group rebuilt from the bucket knows the id is retired.
                    self.place_record(
                        tx,
                        req,
                        v,
                        DELETION_LSN,
                        record_bytes(DELETION_RECORD_KEY.len(), 0),
                        &[],
                    );
                }
                Ok(CommandResult::VolumeDeleted {
                    volume: v,
                    already: head.deleted,
                })
            }
        }
    }

    fn write_meta(&self, batch: &mut WriteBatch) {
        let m = cf(&self.db, CF_SM_META);
        batch.put_cf(m, META_APPLIED, encode(&self.meta.applied));
        batch.put_cf(m, META_MEMBERSHIP, encode(&self.meta.membership));
        batch.put_cf(m, META_GROUP, encode(&self.meta.group));
    }

    /// Applies a batch of committed entries in one RocksDB write, with the applied log id and
    /// group state in the same batch.
    pub(crate) fn apply_entries<I>(&mut self, entries: I) -> Result<Vec<Response>, SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>>,
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
        if tx.compact {
            compact_history(self.db.clone());
        }
        self.publish();
        self.volumes.raise(&tx.changed);
        metrics::APPLY_SECONDS.observe(started.elapsed().as_secs_f64());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use folio_core::{CommitArgs, Durability, GroupId, Page, PageWrite};
    use openraft::storage::RaftStateMachine;
    use openraft::{CommittedLeaderId, LogId};

    struct Harness {
        _dir: tempfile::TempDir,
        sm: StateMachine,
        index: u64,
    }

    /// A page-index entry's key: volume, page, LSN.
    type PageVersion = (VolumeId, PageIdx, Lsn);

    impl Harness {
        fn new() -> Harness {
            let dir = tempfile::tempdir().unwrap();
            let (_log, sm) = crate::open_store(dir.path(), GroupId(5)).unwrap();
            Harness {
                _dir: dir,
                sm,
                index: 0,
            }
        }

        /// The next log entry, carrying `command` alone.
        fn entry(&mut self, command: Command) -> Entry<TypeConfig> {
            self.index += 1;
            Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), self.index),
                payload: EntryPayload::Normal(Request {
                    time_ms: 1_000 + self.index,
                    segment_bytes_max: 8 << 20,
                    commands: vec![command],
                }),
            }
        }

        async fn one(&mut self, command: Command) -> CommandResult {
            let entry = self.entry(command);
            let mut out = self.sm.apply([entry]).await.unwrap();
            out.pop().unwrap().results.pop().unwrap()
        }

        /// Applies `Checkpointed { seq, through }`; whether it was accepted.
        async fn checkpointed(&mut self, seq: u64, through: SegmentId) -> bool {
            match self.one(Command::Checkpointed { seq, through }).await {
                CommandResult::Checkpointed(accepted) => accepted,
                other => panic!("expected a checkpoint's result, got {other:?}"),
            }
        }

        async fn commit(&mut self, v: VolumeId, expected: u64, idxs: &[u32]) -> Lsn {
            let pages = idxs
                .iter()
                .map(|&i| PageWrite {
                    idx: PageIdx(i),
                    page: Page::new(Bytes::from(vec![i as u8; PAGE_SIZE])).unwrap(),
                })
                .collect();
            let r = self
                .one(Command::commit(CommitArgs {
                    volume: v,
                    expected_lsn: Lsn(expected),
                    idempotency_key: Bytes::from(format!("{v}-{expected}")),
                    durability: Durability::Quorum,
                    pages,
                    refs: vec![],
                }))
                .await;
            match r {
                CommandResult::Committed { lsn, .. } => lsn,
                other => panic!("expected a commit, got {other:?}"),
            }
        }

        async fn seal_and_flush(&mut self) -> SegmentId {
            let segment = self.sm.meta.group.open.unwrap().id;
            self.one(Command::Seal { segment }).await;
            self.one(Command::Flushed { segment }).await;
            segment
        }

        /// The (volume, LSN) of every commit record and page version the node still holds.
        fn held(&self) -> (Vec<(VolumeId, Lsn)>, Vec<PageVersion>) {
            let db = &self.sm.db;
            let keys = |name| {
                db.iterator_cf(cf(db, name), rocksdb::IteratorMode::Start)
                    .map(|item| item.unwrap().0.to_vec())
                    .collect::<Vec<_>>()
            };
            let lsn = |b: &[u8]| Lsn(u64::from_be_bytes(b.try_into().unwrap()));
            let commits = keys(CF_COMMITS)
                .iter()
                .map(|k| (VolumeId::from_slice(&k[..16]).unwrap(), lsn(&k[16..])))
                .collect();
            let pages = keys(CF_PAGES)
                .iter()
                .map(|k| {
                    let idx = PageIdx(u32::from_be_bytes(k[16..20].try_into().unwrap()));
                    (VolumeId::from_slice(&k[..16]).unwrap(), idx, lsn(&k[20..]))
                })
                .collect();
            (commits, pages)
        }
    }

    impl Drop for Harness {
        fn drop(&mut self) {
            assert!(wait_for_background_compaction(
                std::time::Duration::from_secs(30)
            ));
        }
    }

    /// A checkpoint drops exactly the covered commits' records and page versions, whether the
    /// segment index lists a commit's pages or (written before it did) leaves the commit record
    /// to name them, and keeps every commit after the covered segments.
    #[tokio::test]
    async fn a_checkpoint_drops_what_it_covers_from_listed_and_older_entries() {
        let mut h = Harness::new();
        let mut vs = [VolumeId::new_random(), VolumeId::new_random()];
        vs.sort();
        let [a, b] = vs;
        for volume in [a, b] {
            h.one(Command::CreateVolume { volume }).await;
        }
        h.commit(a, 0, &[0, 1]).await;
        h.commit(b, 0, &[7]).await;
        h.commit(a, 1, &[1]).await;
        let first = h.seal_and_flush().await;
        h.commit(a, 2, &[0, 2, 3]).await;
        let second = h.seal_and_flush().await;
        h.commit(a, 3, &[0]).await;
        h.commit(b, 1, &[7, 8]).await;

        // The entry of a's second commit as a node wrote it before the format: empty.
        let legacy = seg_commit_key(first, a, Lsn(2));
        let seg_cf = cf(&h.sm.db, CF_SEG_COMMITS);
        let listed = h.sm.db.get_cf(seg_cf, legacy).unwrap().unwrap();
        assert_eq!(
            parse_seg_commit_pages(&listed).map(|l| l.map(Iterator::collect::<Vec<_>>)),
            Ok(Some(vec![PageIdx(1)]))
        );
        let plan = h.sm.reader().checkpoint_plan(1).unwrap().unwrap();
        assert_eq!(
            (plan.through, plan.entries),
            (first, 2 + 3 + 2 + 2),
            "two creations; commits of two, one and one pages"
        );
        h.sm.db.put_cf(seg_cf, legacy, []).unwrap();
        // The planner counts the older entry's pages from its commit record.
        assert_eq!(h.sm.reader().checkpoint_plan(1).unwrap().unwrap(), plan);

        assert!(h.checkpointed(1, first).await);
        let (commits, pages) = h.held();
        assert_eq!(commits, vec![(a, Lsn(3)), (a, Lsn(4)), (b, Lsn(2))]);
        let mut want = vec![
            (a, PageIdx(0), Lsn(3)),
            (a, PageIdx(0), Lsn(4)),
            (a, PageIdx(2), Lsn(3)),
            (a, PageIdx(3), Lsn(3)),
            (b, PageIdx(7), Lsn(2)),
            (b, PageIdx(8), Lsn(2)),
        ];
        assert_eq!(pages, want);

        assert!(h.checkpointed(2, second).await);
        let (commits, pages) = h.held();
        assert_eq!(commits, vec![(a, Lsn(4)), (b, Lsn(2))]);
        want.retain(|(v, _, lsn)| *v == b || *lsn == Lsn(4));
        assert_eq!(pages, want);
    }

    /// A segment-index value of no known format stops the apply with an error naming it, instead
    /// of dropping the wrong entries.
    #[tokio::test]
    async fn a_checkpoint_refuses_a_page_list_of_unknown_format() {
        let mut h = Harness::new();
        let v = VolumeId::new_random();
        h.one(Command::CreateVolume { volume: v }).await;
        h.commit(v, 0, &[0]).await;
        let first = h.seal_and_flush().await;
        let seg_cf = cf(&h.sm.db, CF_SEG_COMMITS);
        h.sm.db
            .put_cf(seg_cf, seg_commit_key(first, v, Lsn(1)), [9, 0, 0, 0, 0])
            .unwrap();
        let entry = h.entry(Command::Checkpointed {
            seq: 1,
            through: first,
        });
        let e = h.sm.apply([entry]).await.unwrap_err();
        assert!(e.to_string().contains("unknown format 9"), "{e}");
        assert_eq!(h.held().0, vec![(v, Lsn(1))], "nothing dropped");
    }
}
