//! The read side: volume heads, commit history, the PullChanges roll-up, listing, and the
//! multi-version page index, served from this replica's applied state.
//!
//! Every read runs through [`folio_raft::blocking::in_place`], so a read that waits on the disk
//! does not hold up the other tasks of the async worker that asked for it. Reads a request makes
//! many of (page lookups, buffered pages) come in batches, one hand-off for the batch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use folio_core::{Lsn, PageIdx, PageLocation, SegmentId, VolumeId};
use folio_raft::blocking::in_place;
use folio_raft::codec::decode;
use folio_raft::keys::cf;
use rocksdb::{Direction, IteratorMode, ReadOptions, DB};
use tokio::sync::watch;

use crate::db::{corrupt, StoreError};
use crate::keys::*;
use crate::signals::{VolumeSignals, VolumeWatch};
use crate::state::{CommitRecord, GroupState, VolumeHead};

/// The exclusive upper bound of every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    end.extend_from_slice(&[0xff; 9]);
    end
}

/// Read access to the applied state, for serving clients. Reads see the latest applied state of
/// this replica.
#[derive(Clone)]
pub struct StateReader {
    pub(crate) db: Arc<DB>,
    group: watch::Sender<Arc<GroupState>>,
    applied_bytes: Arc<AtomicU64>,
    installs: Arc<AtomicU64>,
    volumes: VolumeSignals,
}

impl StateReader {
    pub(crate) fn new(
        db: Arc<DB>,
        group: watch::Sender<Arc<GroupState>>,
        applied_bytes: Arc<AtomicU64>,
        installs: Arc<AtomicU64>,
        volumes: VolumeSignals,
    ) -> Self {
        StateReader {
            db,
            group,
            applied_bytes,
            installs,
            volumes,
        }
    }

    /// Runs a read, off the async worker's queue, refusing it when a snapshot install overlapped
    /// it (a seqlock: the counter is odd during an install and moves on when one ends).
    pub(crate) fn consistent<T>(
        &self,
        read: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let before = self.installs.load(Ordering::SeqCst);
        if before % 2 == 1 {
            return Err(StoreError::Installing);
        }
        let out = in_place(read)?;
        if self.installs.load(Ordering::SeqCst) != before {
            return Err(StoreError::Installing);
        }
        Ok(out)
    }

    pub fn volume(&self, v: VolumeId) -> Result<Option<VolumeHead>, StoreError> {
        self.consistent(
            || match self.db.get_cf(cf(&self.db, CF_VOLUMES), v.as_bytes())? {
                Some(b) => Ok(Some(decode(&b).map_err(|e| corrupt(CF_VOLUMES, e))?)),
                None => Ok(None),
            },
        )
    }

    /// Commits of `v` from `from` on, at most `limit`.
    pub fn commits(
        &self,
        v: VolumeId,
        from: Lsn,
        limit: usize,
    ) -> Result<Vec<CommitRecord>, StoreError> {
        self.consistent(|| self.commits_unchecked(v, from, limit))
    }

    fn commits_unchecked(
        &self,
        v: VolumeId,
        from: Lsn,
        limit: usize,
    ) -> Result<Vec<CommitRecord>, StoreError> {
        let start = commit_key(v, from);
        // Bounded to the volume's keys, so the scan never walks the tombstones a checkpoint
        // leaves behind in other volumes' ranges.
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(prefix_end(v.as_bytes()));
        let it = self.db.iterator_cf_opt(
            cf(&self.db, CF_COMMITS),
            opts,
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
        in_place(|| {
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
        })
    }

    /// The version of page `idx` of `v` visible at snapshot `lsn`: the LSN that wrote it and
    /// where its bytes are; `None` when the page was never written as of `lsn`.
    pub fn page_at(
        &self,
        v: VolumeId,
        idx: PageIdx,
        lsn: Lsn,
    ) -> Result<Option<(Lsn, PageLocation)>, StoreError> {
        self.consistent(|| self.page_at_unchecked(v, idx, lsn))
    }

    /// [`StateReader::page_at`] for each of `idxs`, in order, in one read.
    pub fn pages_at(
        &self,
        v: VolumeId,
        idxs: &[PageIdx],
        lsn: Lsn,
    ) -> Result<Vec<Option<(Lsn, PageLocation)>>, StoreError> {
        self.consistent(|| {
            idxs.iter()
                .map(|&idx| self.page_at_unchecked(v, idx, lsn))
                .collect()
        })
    }

    fn page_at_unchecked(
        &self,
        v: VolumeId,
        idx: PageIdx,
        lsn: Lsn,
    ) -> Result<Option<(Lsn, PageLocation)>, StoreError> {
        let key = page_key(v, idx, lsn);
        // Bounded to this page's versions: a checkpoint deletes index entries one by one, and
        // an unbounded backward seek would step over every tombstone below the key until
        // compaction removes them (measured: 20 ms per lookup after a few checkpoints).
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(key[..20].to_vec());
        let mut upper = key.to_vec();
        upper.push(0);
        opts.set_iterate_upper_bound(upper);
        let mut it = self.db.iterator_cf_opt(
            cf(&self.db, CF_PAGES),
            opts,
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
        Ok(self.buffered_pages(&[(segment, offset)])?.pop().flatten())
    }

    /// [`StateReader::buffered_page`] for each of `slots` (segment, offset), in order, in one
    /// read.
    pub fn buffered_pages(
        &self,
        slots: &[(SegmentId, u64)],
    ) -> Result<Vec<Option<Bytes>>, StoreError> {
        self.consistent(|| {
            let buffer = cf(&self.db, CF_BUFFER);
            let keys: Vec<[u8; 24]> = slots.iter().map(|&(s, o)| slot_key(s, o)).collect();
            self.db
                .batched_multi_get_cf(buffer, &keys, false)
                .into_iter()
                .map(|r| Ok(r?.map(|b| Bytes::copy_from_slice(&b))))
                .collect()
        })
    }

    /// The group's segment state as of this replica's last applied entry.
    pub fn group_state(&self) -> Arc<GroupState> {
        self.group.borrow().clone()
    }

    /// A receiver that wakes when the group's segments change (one opens, is sealed or
    /// flushed, a checkpoint or a rebuild), to wait for seals and flushes. It does not wake for
    /// each commit; [`StateReader::group_state`] always has the latest state.
    pub fn watch_group(&self) -> watch::Receiver<Arc<GroupState>> {
        self.group.subscribe()
    }

    /// A watch on `volume`'s changes (its head moving, on this replica) from now on; it wakes
    /// for this volume only, not for every applied entry of the group.
    pub fn watch_volume(&self, volume: VolumeId) -> VolumeWatch {
        self.volumes.subscribe(volume)
    }

    /// Volumes with at least one watch on this replica.
    pub fn watched_volumes(&self) -> usize {
        self.volumes.len()
    }

    /// Bytes of commands this replica applied since it started.
    pub fn applied_bytes(&self) -> u64 {
        self.applied_bytes.load(Ordering::Relaxed)
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
