//! A volume as an application uses it: a local view synced on demand (lazy), pages read only
//! when asked for (partial), a byte-bounded page cache, a prefetcher for scans, and optimistic
//! transactions that rebase themselves over commits that did not touch what they read or wrote.
//!
//! The view is the volume at one LSN, `synced`. The cache holds pages as of `synced`; a sync
//! asks the group which pages changed since (`PullChanges`, or `WatchVolume` events) and drops
//! only those, so a large volume stays warm across syncs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use folio_core::limits::{MAX_PAGES_PER_REQUEST, MAX_REFS_PER_COMMIT};
use folio_core::{Lsn, VolumeId, PAGE_SIZE};
use folio_proto::volume::v1 as pb;
use tokio_stream::StreamExt;

use crate::{Client, Error, Result};

/// Longest run of pages the prefetcher adds to one read.
pub const PREFETCH_MAX: u32 = 64;
/// Rebases one commit attempts before giving up with [`TxError::TooManyRebases`].
pub const MAX_REBASES: u32 = 32;

/// How a transaction failed.
#[derive(Debug, thiserror::Error)]
pub enum TxError {
    /// Commits since the transaction's snapshot changed pages it read or wrote: re-run it on a
    /// fresh snapshot.
    #[error("conflict: commits up to LSN {head} changed pages {pages:?} that this transaction read or wrote")]
    Conflict { head: Lsn, pages: Vec<u32> },
    #[error("the volume kept moving: gave up after {0} rebases")]
    TooManyRebases(u32),
    #[error("{0}")]
    Client(#[from] Error),
    #[error("transaction writes {0} pages; the limit is {MAX_REFS_PER_COMMIT}")]
    TooLarge(usize),
    #[error("page {idx} is {len} bytes, not {PAGE_SIZE}")]
    PageSize { idx: u32, len: usize },
}

/// A ReadPages answer without a page it was asked for.
fn skipped() -> Error {
    Error::Other(tonic::Status::internal("the server skipped a page"))
}

/// Access-pattern detector: after two reads with the same non-zero stride, reads ahead along it,
/// doubling the distance on each hit up to [`PREFETCH_MAX`] pages.
#[derive(Debug, Default)]
struct Prefetch {
    last: Option<u32>,
    stride: i64,
    run: u32,
}

impl Prefetch {
    /// Records a read of `idx`; returns the extra pages worth fetching with it.
    fn on_read(&mut self, idx: u32) -> Vec<u32> {
        let stride = self.last.map(|l| idx as i64 - l as i64).unwrap_or(0);
        if self.last.is_some() && stride == 0 {
            // The same page again says nothing about the pattern.
            return Vec::new();
        }
        if stride != 0 && stride == self.stride {
            self.run = (self.run.max(1) * 2).min(PREFETCH_MAX);
        } else {
            self.run = 0;
        }
        self.stride = stride;
        self.last = Some(idx);
        (1..=self.run as i64)
            .map(|k| idx as i64 + k * stride)
            .take_while(|p| (0..=folio_core::limits::MAX_PAGE_IDX as i64).contains(p))
            .map(|p| p as u32)
            .collect()
    }
}

/// A volume opened through a [`Client`].
pub struct Volume {
    client: Arc<Client>,
    id: VolumeId,
    /// Pages as of `synced`; the lock orders cache fills against syncs.
    cache: moka::sync::Cache<u32, Bytes>,
    synced: RwLock<Lsn>,
    prefetch: Mutex<Prefetch>,
    prefetch_on: AtomicBool,
    read_rpcs: AtomicU64,
}

impl Volume {
    /// Opens `id` with a page cache of at most `cache_bytes`, synced to the latest LSN.
    pub async fn open(client: Arc<Client>, id: VolumeId, cache_bytes: u64) -> Result<Arc<Volume>> {
        let cache = moka::sync::Cache::builder()
            .weigher(|_: &u32, v: &Bytes| v.len() as u32 + 32)
            .max_capacity(cache_bytes)
            // LRU, not moka's default TinyLFU: once the cache is full, TinyLFU admits a new page
            // only if it was asked for before, so a scan's read-ahead pages were dropped on
            // arrival and read again one by one (measured: a cold scan of a 136 MiB database
            // through a 64 MiB cache made a call per 5 pages instead of per 64, and took longer
            // than with no read-ahead at all). SQLite's own page cache is LRU too.
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .build();
        let v = Arc::new(Volume {
            client,
            id,
            cache,
            synced: RwLock::new(Lsn(0)),
            prefetch: Mutex::new(Prefetch::default()),
            prefetch_on: AtomicBool::new(true),
            read_rpcs: AtomicU64::new(0),
        });
        v.sync().await?;
        Ok(v)
    }

    pub fn id(&self) -> VolumeId {
        self.id
    }

    /// The LSN the local view is at.
    pub fn synced(&self) -> Lsn {
        *self.synced.read().expect("lock is never poisoned")
    }

    /// Turns read-ahead on (the default) or off.
    pub fn set_prefetch(&self, on: bool) {
        self.prefetch_on.store(on, Ordering::Relaxed);
    }

    /// ReadPages calls made so far (to see what the cache and the prefetcher save).
    pub fn read_rpcs(&self) -> u64 {
        self.read_rpcs.load(Ordering::Relaxed)
    }

    /// Bytes the page cache holds now.
    pub fn cached_bytes(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }

    /// Brings the view to the latest LSN, dropping only the cached pages that changed.
    pub async fn sync(&self) -> Result<Lsn> {
        let since = self.synced();
        let (head, changed) = self.client.pull_changes(self.id, since).await?;
        self.advance(since, head, changed.iter());
        Ok(self.synced())
    }

    /// Applies "pages `changed` changed between `from` and `to`" if the view is still at `from`.
    fn advance(&self, from: Lsn, to: Lsn, changed: impl Iterator<Item = u32>) {
        let mut s = self.synced.write().expect("lock is never poisoned");
        if *s != from || to <= from {
            return;
        }
        for p in changed {
            self.cache.invalidate(&p);
        }
        *s = to;
    }

    /// Keeps the view fresh by syncing every `interval` until a sync fails (for clients that
    /// prefer polling to holding a stream open).
    pub async fn poll(self: Arc<Self>, interval: std::time::Duration) -> Result<()> {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.sync().await?;
        }
    }

    /// Keeps the view fresh by following `WatchVolume` until the stream ends or errors (a
    /// caller restarts it, or falls back to [`Volume::sync`] on an interval).
    pub async fn follow(self: Arc<Self>) -> Result<()> {
        let mut stream = self.client.watch(self.id, self.synced()).await?;
        while let Some(ev) = stream.next().await {
            let ev = ev.map_err(Error::from_status)?;
            let from = self.synced();
            if ev.lsn <= from.0 {
                continue;
            }
            if ev.lsn != from.0 + 1 {
                // A sync moved the view meanwhile past the stream's position: catch up the
                // rest with a pull, which also covers anything in between.
                self.sync().await?;
                continue;
            }
            self.advance(from, Lsn(ev.lsn), ev.page_idx.iter().copied());
        }
        Ok(())
    }

    /// Page `idx` as of the synced LSN.
    pub async fn read(&self, idx: u32) -> Result<Bytes> {
        let lsn = self.synced();
        self.read_at(lsn, idx).await
    }

    /// Page `idx` as of `lsn`. Only reads at the synced LSN use and fill the cache.
    pub async fn read_at(&self, lsn: Lsn, idx: u32) -> Result<Bytes> {
        let cacheable = lsn == self.synced();
        if let Some(b) = self.read_cached(lsn, idx) {
            return Ok(b);
        }
        let mut want = vec![idx];
        let ahead = self
            .prefetch
            .lock()
            .expect("lock is never poisoned")
            .on_read(idx);
        if cacheable && self.prefetch_on.load(Ordering::Relaxed) {
            want.extend(ahead.into_iter().filter(|p| !self.cache.contains_key(p)));
        }
        want.truncate(MAX_PAGES_PER_REQUEST);
        let mut found = HashMap::new();
        self.fetch(lsn, cacheable, &want, &mut found).await?;
        found.remove(&idx).ok_or_else(skipped)
    }

    /// Page `idx` as of `lsn` if the cache has it, counted as a read by the prefetcher as
    /// [`Volume::read_at`] would: for callers that can answer a hit without going async.
    pub fn read_cached(&self, lsn: Lsn, idx: u32) -> Option<Bytes> {
        let b = self.cached_at(lsn, idx)?;
        self.prefetch
            .lock()
            .expect("lock is never poisoned")
            .on_read(idx);
        Some(b)
    }

    /// Page `idx` from the cache if the view is at `lsn`. The view is checked and the cache read
    /// under the same lock a sync takes to move the view, so a reader never gets a page of a
    /// newer LSN than the one it reads at.
    fn cached_at(&self, lsn: Lsn, idx: u32) -> Option<Bytes> {
        let s = self.synced.read().expect("lock is never poisoned");
        if *s == lsn {
            self.cache.get(&idx)
        } else {
            None
        }
    }

    /// Reads `want` at `lsn` into `found`, in calls of at most the request limit, filling the
    /// cache when `cacheable` and no sync moved the view while a call was out.
    async fn fetch(
        &self,
        lsn: Lsn,
        cacheable: bool,
        want: &[u32],
        found: &mut HashMap<u32, Bytes>,
    ) -> Result<()> {
        for chunk in want.chunks(MAX_PAGES_PER_REQUEST) {
            self.read_rpcs.fetch_add(1, Ordering::Relaxed);
            let pages = self.client.read_pages(self.id, lsn, chunk).await?;
            let s = self.synced.read().expect("lock is never poisoned");
            for p in pages {
                if cacheable && *s == lsn {
                    self.cache.insert(p.page_idx, p.data.clone());
                }
                found.insert(p.page_idx, p.data);
            }
        }
        Ok(())
    }

    /// Pages `idxs` as of `lsn`, in the order asked: cached ones from the cache (at the synced
    /// LSN), the rest in as few ReadPages calls as the request limit allows.
    pub async fn read_many_at(&self, lsn: Lsn, idxs: &[u32]) -> Result<Vec<(u32, Bytes)>> {
        let cacheable = lsn == self.synced();
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        let mut asked = BTreeSet::new();
        for &i in idxs {
            if !asked.insert(i) {
                continue;
            }
            match self.cached_at(lsn, i) {
                Some(b) => {
                    found.insert(i, b);
                }
                None => missing.push(i),
            }
        }
        self.fetch(lsn, cacheable, &missing, &mut found).await?;
        idxs.iter()
            .map(|i| found.get(i).map(|b| (*i, b.clone())).ok_or_else(skipped))
            .collect()
    }

    /// A transaction on the synced LSN.
    pub fn begin(self: &Arc<Self>) -> Transaction {
        self.begin_at(self.synced())
    }

    /// A transaction on `base`, which may be older than the synced LSN (a reader that kept its
    /// snapshot); its commit is a CAS on `base`.
    pub fn begin_at(self: &Arc<Self>, base: Lsn) -> Transaction {
        Transaction {
            volume: self.clone(),
            base,
            writes: BTreeMap::new(),
            reads: BTreeSet::new(),
            rebase: true,
        }
    }

    /// Records this client's own commit `lsn`, made with CAS on `base`, that wrote `pages`: when
    /// the view is at `base` (so `lsn` is `base + 1` and nothing else came between), the view
    /// moves to `lsn` with the written pages cached, saving the pull a sync would make.
    pub fn note_commit(&self, base: Lsn, lsn: Lsn, pages: impl IntoIterator<Item = (u32, Bytes)>) {
        let mut s = self.synced.write().expect("lock is never poisoned");
        if *s != base || lsn.0 != base.0 + 1 {
            return;
        }
        for (idx, data) in pages {
            self.cache.insert(idx, data);
        }
        *s = lsn;
    }
}

/// Buffered writes on a snapshot, committed with CAS on it. Reads see the transaction's own
/// writes first.
pub struct Transaction {
    volume: Arc<Volume>,
    base: Lsn,
    writes: BTreeMap<u32, Bytes>,
    reads: BTreeSet<u32>,
    rebase: bool,
}

/// What a successful transaction commit reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxCommitted {
    pub lsn: Lsn,
    /// Times the commit was rebased over other commits before it went in.
    pub rebases: u32,
}

impl Transaction {
    pub fn base(&self) -> Lsn {
        self.base
    }

    /// Turns rebasing off: any commit that got in after the base fails this one with
    /// [`TxError::Conflict`], whatever it touched. For callers whose every transaction writes a
    /// common page (SQLite's header) or that read through another path than [`Transaction::read`].
    pub fn without_rebase(mut self) -> Self {
        self.rebase = false;
        self
    }

    pub async fn read(&mut self, idx: u32) -> Result<Bytes> {
        if let Some(b) = self.writes.get(&idx) {
            return Ok(b.clone());
        }
        self.reads.insert(idx);
        self.volume.read_at(self.base, idx).await
    }

    pub fn write(&mut self, idx: u32, data: Bytes) -> std::result::Result<(), TxError> {
        if data.len() != PAGE_SIZE {
            return Err(TxError::PageSize {
                idx,
                len: data.len(),
            });
        }
        // Bounded here, not only at commit, so a runaway writer cannot grow memory first.
        if self.writes.len() >= MAX_REFS_PER_COMMIT && !self.writes.contains_key(&idx) {
            return Err(TxError::TooLarge(self.writes.len() + 1));
        }
        self.writes.insert(idx, data);
        Ok(())
    }

    /// Commits with CAS on the base LSN. When other commits got in first and changed none of
    /// the pages this transaction read or wrote, it is rebased onto the new head and retried
    /// with the same idempotency key (so an attempt whose answer was lost is not committed
    /// twice); otherwise the caller gets [`TxError::Conflict`] naming the pages.
    pub async fn commit(self) -> std::result::Result<TxCommitted, TxError> {
        let v = &self.volume;
        let n = self.writes.len();
        let key = Bytes::from(format!("tx-{:032x}", rand::random::<u128>()));
        // Large transactions upload their pages once (WritePages) and commit references, so a
        // rebase re-sends only the references.
        let (pages, refs) = if n > MAX_PAGES_PER_REQUEST {
            let mut refs = Vec::with_capacity(n);
            let all: Vec<(u32, Bytes)> = self.writes.into_iter().collect();
            for chunk in all.chunks(MAX_PAGES_PER_REQUEST) {
                refs.extend(v.client.write_pages(v.id, chunk.to_vec()).await?);
            }
            (Vec::new(), refs)
        } else {
            let pages = self
                .writes
                .into_iter()
                .map(|(page_idx, data)| pb::PageWrite { page_idx, data })
                .collect();
            (pages, Vec::new())
        };
        let touched: BTreeSet<u32> = pages
            .iter()
            .map(|p: &pb::PageWrite| p.page_idx)
            .chain(refs.iter().map(|r: &pb::PageRef| r.page_idx))
            .chain(self.reads.iter().copied())
            .collect();
        let mut expected = self.base;
        for rebases in 0..=MAX_REBASES {
            let req = pb::CommitRequest {
                volume_id: Bytes::copy_from_slice(v.id.as_bytes()),
                expected_lsn: expected.0,
                idempotency_key: key.clone(),
                durability: pb::Durability::Quorum as i32,
                pages: pages.clone(),
                refs: refs.clone(),
            };
            match v.client.commit_request(req).await {
                Ok(c) => {
                    return Ok(TxCommitted {
                        lsn: c.lsn,
                        rebases,
                    })
                }
                Err(Error::Conflict { .. }) => {
                    let (head, changed) = v.client.pull_changes(v.id, expected).await?;
                    let overlap: Vec<u32> = if self.rebase {
                        changed.iter().filter(|p| touched.contains(p)).collect()
                    } else {
                        changed.iter().take(64).collect()
                    };
                    if !overlap.is_empty() || !self.rebase {
                        return Err(TxError::Conflict {
                            head,
                            pages: overlap,
                        });
                    }
                    expected = head;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(TxError::TooManyRebases(MAX_REBASES))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetch_follows_sequential_reverse_and_strided_reads() {
        let mut p = Prefetch::default();
        assert!(p.on_read(10).is_empty());
        assert!(p.on_read(11).is_empty(), "one step is not a pattern yet");
        assert_eq!(p.on_read(12), vec![13, 14]);
        assert_eq!(p.on_read(13), vec![14, 15, 16, 17]);
        let mut r = Prefetch::default();
        r.on_read(50);
        r.on_read(48);
        assert_eq!(r.on_read(46), vec![44, 42]);
        let mut s = Prefetch::default();
        s.on_read(0);
        s.on_read(8);
        assert_eq!(s.on_read(16), vec![24, 32]);
        // A random jump resets.
        assert!(s.on_read(3).is_empty());
        // Never past page 0.
        let mut z = Prefetch::default();
        z.on_read(2);
        z.on_read(1);
        assert_eq!(z.on_read(0), Vec::<u32>::new());
        // Bounded.
        let mut b = Prefetch::default();
        for i in 0..20 {
            assert!(b.on_read(i).len() <= PREFETCH_MAX as usize);
        }
    }
}
