//! Reading history at any LSN. The node's own index holds the commits no checkpoint covers yet;
//! everything older is in the group's index runs in the object store, listed by the manifest the
//! replicated state points to. A lookup tries the local index first and then the runs, newest
//! first. Run blocks, run indexes and manifests are immutable, fetched with hedged ranged GETs,
//! verified, and kept in byte-bounded caches.
//!
//! Why a lookup never misses an entry that a checkpoint moves: the checkpoint drops local entries
//! and sets the manifest pointer in one atomic write, and a lookup reads the local index first
//! and the pointer (from the store, not the published group state) after it. An entry the first
//! read missed because it was dropped is in the manifest the second read sees.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use folio_core::{GroupId, Lsn, PageIdx, PageLocation, VolumeId};
use folio_objstore::{ObjectKey, ObjectStore, StoreError};
use folio_segment::manifest::{Manifest, RunRef};
use folio_segment::table::{Block, TableFooter, TableIndex, TABLE_FOOTER_LEN};
use folio_state::runs;
use folio_state::state::{CommitRecord, ForkBase, VolumeHead, MAX_FORK_DEPTH};
use folio_state::StateReader;
use futures::stream::{self, StreamExt, TryStreamExt};
use moka::future::Cache;

use crate::pages::{hedged_get_range, ReadError};

/// Commit records one step of a roll-up reads.
const ROLLUP_BATCH: usize = 1024;
/// Page lookups of one call in the runs and fork sources in flight at once.
const LOOKUP_CONCURRENCY: usize = 32;
/// Lookups started again on a newer manifest after the one they began on was collected.
const SUPERSEDED_RETRIES: u32 = 3;

/// A run's identity in the caches: (seq, nonce).
type RunId = (u64, u64);

pub struct History {
    state: StateReader,
    store: Arc<dyn ObjectStore>,
    group: GroupId,
    hedge_after: Duration,
    manifests: Cache<u64, Arc<Manifest>>,
    indexes: Cache<RunId, Arc<TableIndex>>,
    blocks: Cache<(RunId, usize), Arc<Block>>,
}

fn corrupt(key: &ObjectKey, e: impl ToString) -> ReadError {
    ReadError::Object {
        key: key.to_string(),
        reason: e.to_string(),
    }
}

fn shared(e: Arc<ReadError>) -> ReadError {
    e.copy()
}

fn local(e: folio_state::StoreError) -> ReadError {
    ReadError::from_local(e)
}

impl History {
    /// `cache_bytes` bounds the run blocks and indexes held in memory together.
    pub fn new(
        state: StateReader,
        store: Arc<dyn ObjectStore>,
        group: GroupId,
        cache_bytes: u64,
        hedge_after: Duration,
    ) -> History {
        let weigh = |n: usize| (n + 64).min(u32::MAX as usize) as u32;
        History {
            state,
            store,
            group,
            hedge_after,
            manifests: Cache::builder()
                .weigher(move |_: &u64, m: &Arc<Manifest>| weigh(m.runs.len() * 64))
                .max_capacity(16 << 20)
                .build(),
            indexes: Cache::builder()
                .weigher(move |_: &RunId, i: &Arc<TableIndex>| weigh(i.approx_bytes()))
                .max_capacity((cache_bytes / 4).max(1 << 20))
                .build(),
            blocks: Cache::builder()
                .weigher(move |_: &(RunId, usize), b: &Arc<Block>| weigh(b.approx_bytes()))
                .max_capacity((cache_bytes * 3 / 4).max(1 << 20))
                .build(),
        }
    }

    pub fn state(&self) -> &StateReader {
        &self.state
    }

    /// Refuses a snapshot the volume no longer keeps, or a deleted volume. Lookups call it after
    /// they read: a horizon moves (a replicated `Retain`) before any checkpoint drops what it
    /// hides, so a lookup that already saw runs without an entry sees the horizon that explains
    /// it here, and answers an error instead of a page that reads as never written.
    pub fn check_retained(&self, v: VolumeId, lsn: Lsn) -> Result<(), ReadError> {
        match self.state.volume(v).map_err(local)? {
            Some(h) if h.deleted => Err(ReadError::Deleted(v)),
            Some(h) if lsn < h.horizon => Err(ReadError::NotRetained {
                volume: v,
                lsn,
                horizon: h.horizon,
            }),
            _ => Ok(()),
        }
    }

    /// The version of each page of `idxs` of `v` visible at `lsn`, in order: the LSN that wrote
    /// it, where its bytes are, and the volume that wrote them (a fork's source, for a page the
    /// fork inherited); `None` when the page was never written as of `lsn`.
    ///
    /// The node's own index is read for all the pages at once, then the runs (for the pages it
    /// does not hold) and the fork's sources, page by page and concurrently. Every page's runs
    /// lookup starts after its local read, as the module's note on checkpoints requires.
    ///
    /// Unchecked: `None` may also mean retention dropped the version, so the caller checks the
    /// volume's horizon ([`History::check_retained`]) after its lookups and before it answers.
    pub async fn versions_at(
        &self,
        v: VolumeId,
        idxs: &[PageIdx],
        lsn: Lsn,
    ) -> Result<Vec<Option<(Lsn, PageLocation, VolumeId)>>, ReadError> {
        let local = self.state.pages_at(v, idxs, lsn).map_err(local)?;
        stream::iter(idxs.iter().copied().zip(local))
            .map(|(idx, here)| async move {
                if let Some((written, loc)) = here {
                    return Ok(Some((written, loc, v)));
                }
                Ok(match self.find_in_runs(v, idx, lsn).await? {
                    Some((written, loc)) => Some((written, loc, v)),
                    None => self.inherited(v, idx).await?,
                })
            })
            .buffered(LOOKUP_CONCURRENCY)
            .try_collect()
            .await
    }

    /// A page a fork never wrote: its source's as of the fork point, up the chain of sources.
    /// It reads as written at LSN 0, the fork's first snapshot, which holds it. The source's
    /// own retention does not apply: what a live fork reads is pinned.
    async fn inherited(
        &self,
        v: VolumeId,
        idx: PageIdx,
    ) -> Result<Option<(Lsn, PageLocation, VolumeId)>, ReadError> {
        let base_of = |v: VolumeId| -> Result<Option<ForkBase>, ReadError> {
            Ok(self.state.volume(v).map_err(local)?.and_then(|h| h.base))
        };
        let mut up = base_of(v)?;
        let mut depth = 0;
        while let Some(b) = up {
            if let Some((_, loc)) = self.find_page(b.volume, idx, b.lsn).await? {
                return Ok(Some((Lsn::ZERO, loc, b.volume)));
            }
            depth += 1;
            if depth >= MAX_FORK_DEPTH {
                break;
            }
            up = base_of(b.volume)?;
        }
        Ok(None)
    }

    async fn find_page(
        &self,
        v: VolumeId,
        idx: PageIdx,
        lsn: Lsn,
    ) -> Result<Option<(Lsn, PageLocation)>, ReadError> {
        if let Some(found) = self.state.page_at(v, idx, lsn).map_err(local)? {
            return Ok(Some(found));
        }
        self.find_in_runs(v, idx, lsn).await
    }

    /// The version of page `idx` of `v` at `lsn` in the group's index runs. Called after the
    /// local index was read for it.
    async fn find_in_runs(
        &self,
        v: VolumeId,
        idx: PageIdx,
        lsn: Lsn,
    ) -> Result<Option<(Lsn, PageLocation)>, ReadError> {
        let key = runs::page_key(v, idx, lsn);
        // The page's key without the LSN: a floor entry with another prefix is another page.
        let prefix = &key[..21];
        let found = self
            .over_current(|manifest| {
                let key = &key;
                async move {
                    for run in &manifest.runs {
                        if let Some((k, val)) = self.floor(run, key).await? {
                            if k.starts_with(prefix) {
                                let (_, written, loc) = runs::parse_page(&k, &val)
                                    .map_err(|e| corrupt(&self.run_key(run), e))?;
                                return Ok(Some((written, loc)));
                            }
                        }
                    }
                    Ok(None)
                }
            })
            .await?;
        Ok(found.flatten())
    }

    /// Commits of `v` from `from` on, at most `limit`, in LSN order. Refused when commit `from`
    /// is below the volume's retention horizon.
    pub async fn commits(
        &self,
        v: VolumeId,
        from: Lsn,
        limit: usize,
    ) -> Result<Vec<CommitRecord>, ReadError> {
        let found = self.find_commits(v, from, limit).await?;
        self.check_retained(v, from)?;
        Ok(found)
    }

    async fn find_commits(
        &self,
        v: VolumeId,
        from: Lsn,
        limit: usize,
    ) -> Result<Vec<CommitRecord>, ReadError> {
        let recent = self.state.commits(v, from, limit).map_err(local)?;
        if recent.first().is_some_and(|c| c.lsn <= from) || limit == 0 {
            return Ok(recent);
        }
        // Past the head (a caught-up watcher): nothing older to look for.
        let head = self
            .state
            .volume(v)
            .map_err(local)?
            .map_or(Lsn::ZERO, |h| h.lsn);
        if recent.is_empty() && from > head {
            return Ok(recent);
        }
        let from_runs = self
            .over_current(|manifest| async move {
                let mut out: Vec<CommitRecord> = Vec::new();
                // Oldest run first: each holds a later stretch of the volume's history.
                for run in manifest.runs.iter().rev() {
                    if out.len() >= limit {
                        break;
                    }
                    let next = out.last().map_or(from, |c| c.lsn.next());
                    self.scan_commits(run, v, next, limit - out.len(), &mut out)
                        .await?;
                }
                Ok(out)
            })
            .await?;
        let Some(mut out) = from_runs else {
            return Ok(recent);
        };
        // The local records follow; a checkpoint between the two reads may have put some of
        // them in a run too.
        let next = out.last().map_or(from, |c| c.lsn.next());
        out.extend(
            recent
                .into_iter()
                .filter(|c| c.lsn >= next)
                .take(limit.saturating_sub(out.len())),
        );
        Ok(out)
    }

    /// Page indexes written by commits `from..=to` of `v`, each named once.
    pub async fn changed_pages(
        &self,
        v: VolumeId,
        from: Lsn,
        to: Lsn,
    ) -> Result<roaring::RoaringBitmap, ReadError> {
        let mut set = roaring::RoaringBitmap::new();
        let mut next = from;
        while next <= to {
            let batch = self.commits(v, next, ROLLUP_BATCH).await?;
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

    /// Runs `lookup` over the manifest the replicated state points to now (`None` before the
    /// first checkpoint).
    ///
    /// Garbage collection deletes a superseded manifest and the runs only it names once it has
    /// not been current for `gc_grace_ms`. A lookup that outlives that (a reader stalled on a
    /// loaded machine, a follower whose applied state lags the leader's checkpoints) finds an
    /// object gone. When the pointer has moved meanwhile, the lookup starts again on the new
    /// manifest (a few times at most); when it has not but the bucket already holds a later
    /// version, this replica is behind and says so as UNAVAILABLE, so the client tries another
    /// member. Only an object missing from the group's newest manifest is reported as lost.
    async fn over_current<'a, T, F, Fut>(&'a self, mut lookup: F) -> Result<Option<T>, ReadError>
    where
        F: FnMut(Arc<Manifest>) -> Fut,
        Fut: std::future::Future<Output = Result<T, ReadError>> + 'a,
    {
        let mut retries = 0;
        loop {
            let Some(pointer) = self.state.manifest().map_err(local)? else {
                return Ok(None);
            };
            let seq = pointer.seq;
            let result = match self.manifest(seq).await {
                Ok(m) => lookup(m).await,
                Err(e) => Err(e),
            };
            let gone = match result {
                Err(ReadError::Store(StoreError::NotFound(key))) => key,
                other => return other.map(Some),
            };
            let now = self.state.manifest().map_err(local)?.map(|m| m.seq);
            if now != Some(seq) && retries < SUPERSEDED_RETRIES {
                retries += 1;
                tracing::debug!(%gone, seq, "manifest superseded during a lookup: looking again");
                continue;
            }
            // When the bucket cannot be listed, whether this replica is behind is unknown: the
            // store's (retryable) error is the answer, not a lost object.
            if now == Some(seq) && self.newer_manifest_exists(seq).await? {
                return Err(ReadError::Busy(format!(
                    "object {gone} of checkpoint manifest {seq} is gone: this replica's view of \
                     the group's history is older than garbage collection keeps \
                     (lifecycle.gc_grace_ms); retry, or read from another member"
                )));
            }
            return Err(ReadError::Store(StoreError::NotFound(gone)));
        }
    }

    /// Whether the bucket holds a manifest version after `seq`: then a replica whose pointer is
    /// still `seq` is behind its group. Any later version counts, not only `seq + 1`, which
    /// garbage collection may have deleted too when the replica lags by more than one.
    async fn newer_manifest_exists(&self, seq: u64) -> Result<bool, ReadError> {
        let after = ObjectKey::Manifest {
            group: self.group,
            seq,
        }
        .to_string();
        let prefix = ObjectKey::manifests_prefix(self.group);
        let later = self.store.list(&prefix, Some(&after), 1).await?;
        Ok(!later.is_empty())
    }

    /// Manifest version `seq`, verified.
    pub async fn manifest(&self, seq: u64) -> Result<Arc<Manifest>, ReadError> {
        self.manifests
            .try_get_with(seq, async {
                let key = ObjectKey::Manifest {
                    group: self.group,
                    seq,
                };
                let bytes = self.store.get(&key).await?;
                let m = Manifest::decode(&bytes).map_err(|e| corrupt(&key, e))?;
                if m.group != self.group || m.seq != seq {
                    return Err(corrupt(
                        &key,
                        format!("holds manifest {} of group {}", m.seq, m.group),
                    ));
                }
                Ok(Arc::new(m))
            })
            .await
            .map_err(shared)
    }

    fn run_key(&self, run: &RunRef) -> ObjectKey {
        ObjectKey::Run {
            group: self.group,
            seq: run.seq,
            nonce: run.nonce,
        }
    }

    async fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Bytes, StoreError> {
        hedged_get_range(self.store.as_ref(), key, range, self.hedge_after).await
    }

    /// A run's verified block index, by two ranged GETs (footer, then index), cached.
    async fn index(&self, run: &RunRef) -> Result<Arc<TableIndex>, ReadError> {
        self.indexes
            .try_get_with((run.seq, run.nonce), async {
                let key = self.run_key(run);
                let len = run.bytes;
                if len < TABLE_FOOTER_LEN as u64 {
                    return Err(corrupt(&key, format!("manifest says {len} bytes")));
                }
                let tail = self
                    .get_range(&key, len - TABLE_FOOTER_LEN as u64..len)
                    .await?;
                let footer = TableFooter::decode(&tail).map_err(|e| corrupt(&key, e))?;
                let raw = self.get_range(&key, footer.index_range()).await?;
                let index = TableIndex::decode(&footer, &raw).map_err(|e| corrupt(&key, e))?;
                Ok(Arc::new(index))
            })
            .await
            .map_err(shared)
    }

    /// Block `i` of a run, verified, cached.
    async fn block(
        &self,
        run: &RunRef,
        index: &TableIndex,
        i: usize,
    ) -> Result<Arc<Block>, ReadError> {
        self.blocks
            .try_get_with(((run.seq, run.nonce), i), async {
                let key = self.run_key(run);
                let handle = &index.blocks()[i];
                let raw = self.get_range(&key, handle.range.clone()).await?;
                let block = Block::decode(handle, raw).map_err(|e| corrupt(&key, e))?;
                Ok(Arc::new(block))
            })
            .await
            .map_err(shared)
    }

    /// The run's greatest entry at or below `key`.
    async fn floor(&self, run: &RunRef, key: &[u8]) -> Result<Option<(Bytes, Bytes)>, ReadError> {
        let index = self.index(run).await?;
        let Some(i) = index.floor_block(key) else {
            return Ok(None);
        };
        let block = self.block(run, &index, i).await?;
        Ok(block
            .floor(key)
            .map(|(k, v)| (Bytes::copy_from_slice(k), Bytes::copy_from_slice(v))))
    }

    /// Visits the run's entries from the first at or after `start`, in order, while `f` returns
    /// true.
    async fn scan(
        &self,
        run: &RunRef,
        start: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool, ReadError>,
    ) -> Result<(), ReadError> {
        let index = self.index(run).await?;
        let mut i = index.seek_block(start);
        let mut first = true;
        while i < index.blocks().len() {
            let block = self.block(run, &index, i).await?;
            let from = if first { block.seek(start) } else { 0 };
            first = false;
            for (k, v) in block.iter().skip(from) {
                if !f(k, v)? {
                    return Ok(());
                }
            }
            i += 1;
        }
        Ok(())
    }

    async fn scan_commits(
        &self,
        run: &RunRef,
        v: VolumeId,
        from: Lsn,
        limit: usize,
        out: &mut Vec<CommitRecord>,
    ) -> Result<(), ReadError> {
        let start = runs::commit_key(v, from);
        let key = self.run_key(run);
        let mut taken = 0;
        self.scan(run, &start, |k, val| {
            if taken >= limit || !k.starts_with(&start[..17]) {
                return Ok(false);
            }
            let (_, rec) = runs::parse_commit(k, val).map_err(|e| corrupt(&key, e))?;
            out.push(rec);
            taken += 1;
            Ok(true)
        })
        .await
    }

    /// Every volume head the manifest's runs record (the newest run's wins), for a rebuild.
    pub async fn heads(
        &self,
        manifest: &Manifest,
    ) -> Result<std::collections::BTreeMap<VolumeId, VolumeHead>, ReadError> {
        let mut heads = std::collections::BTreeMap::new();
        for run in manifest.runs.iter().rev() {
            let key = self.run_key(run);
            self.scan(run, &[runs::HEAD], |k, val| {
                if k >= runs::HEADS_END.as_slice() {
                    return Ok(false);
                }
                let (v, h) = runs::parse_head(k, val).map_err(|e| corrupt(&key, e))?;
                heads.insert(v, h);
                Ok(true)
            })
            .await?;
        }
        Ok(heads)
    }

    /// Commits of `v` from `from` on in the manifest's runs only, for a rebuild.
    pub async fn run_commits(
        &self,
        manifest: &Manifest,
        v: VolumeId,
        from: Lsn,
        limit: usize,
    ) -> Result<Vec<CommitRecord>, ReadError> {
        let mut out = Vec::new();
        for run in manifest.runs.iter().rev() {
            if out.len() >= limit {
                break;
            }
            let next = out.last().map_or(from, |c: &CommitRecord| c.lsn.next());
            self.scan_commits(run, v, next, limit - out.len(), &mut out)
                .await?;
        }
        Ok(out)
    }
}
