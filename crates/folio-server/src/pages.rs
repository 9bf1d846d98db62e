//! Reading pages as of a snapshot. The multi-version page index names each page version's
//! segment and offset; the bytes come from the local buffer while the segment is unflushed, from
//! a byte-bounded memory cache, or from a ranged GET on the segment object, verified against the
//! segment's index (itself fetched by range and cached). Object-store reads are hedged: when the
//! first request has not answered within `hedge_after`, a second one is sent and the first answer
//! wins.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use folio_core::{Lsn, PageIdx, PageLocation, SegmentId, VolumeId, PAGE_SIZE};
use folio_objstore::{ObjectKey, ObjectStore, StoreError};
use folio_segment::{Footer, SegmentIndex, FOOTER_LEN};
use folio_state::StateReader;
use futures::stream::{self, StreamExt, TryStreamExt};
use moka::future::Cache;

use crate::history::History;
use crate::metrics;

/// Object-store reads of one ReadPages call in flight at once.
const FETCH_CONCURRENCY: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("object store: {0}")]
    Store(#[from] StoreError),
    #[error("segment {segment}: {reason}")]
    Corrupt { segment: SegmentId, reason: String },
    #[error("object {key}: {reason}")]
    Object { key: String, reason: String },
    #[error("local state: {0}")]
    Local(String),
    /// This replica cannot answer now (it is installing a snapshot); another may.
    #[error("{0}")]
    Busy(String),
    /// Below the volume's retention horizon: its history there is gone for good.
    #[error(
        "LSN {lsn} of volume {volume} is no longer retained: the oldest retained LSN is {horizon}"
    )]
    NotRetained {
        volume: VolumeId,
        lsn: Lsn,
        horizon: Lsn,
    },
    #[error("volume {0} was deleted")]
    Deleted(VolumeId),
}

impl ReadError {
    /// A copy of an error a cache shares between the callers that waited for one load.
    pub(crate) fn copy(&self) -> ReadError {
        match self {
            ReadError::Store(s) => ReadError::Store(clone_store_error(s)),
            ReadError::Corrupt { segment, reason } => ReadError::Corrupt {
                segment: *segment,
                reason: reason.clone(),
            },
            ReadError::Object { key, reason } => ReadError::Object {
                key: key.clone(),
                reason: reason.clone(),
            },
            ReadError::Local(s) => ReadError::Local(s.clone()),
            ReadError::Busy(s) => ReadError::Busy(s.clone()),
            ReadError::NotRetained {
                volume,
                lsn,
                horizon,
            } => ReadError::NotRetained {
                volume: *volume,
                lsn: *lsn,
                horizon: *horizon,
            },
            ReadError::Deleted(v) => ReadError::Deleted(*v),
        }
    }

    pub fn from_local(e: folio_state::StoreError) -> ReadError {
        match e {
            folio_state::StoreError::Installing => ReadError::Busy(e.to_string()),
            other => ReadError::Local(other.to_string()),
        }
    }
}

/// One page as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageVersion {
    pub idx: PageIdx,
    /// The LSN that wrote it; `Lsn(0)` for a page never written (zeros).
    pub written: Lsn,
    pub data: Bytes,
}

pub struct PageReader {
    state: StateReader,
    history: Arc<History>,
    store: Arc<dyn ObjectStore>,
    pages: Cache<(SegmentId, u64), Bytes>,
    indexes: Cache<SegmentId, Arc<SegmentIndex>>,
    hedge_after: Duration,
    zeros: Bytes,
}

impl PageReader {
    /// `cache_bytes` bounds the page cache, and a sixteenth of it the segment-index cache.
    pub fn new(
        history: Arc<History>,
        store: Arc<dyn ObjectStore>,
        cache_bytes: u64,
        hedge_after: Duration,
    ) -> PageReader {
        let pages = Cache::builder()
            .weigher(|_: &(SegmentId, u64), v: &Bytes| v.len() as u32 + 64)
            .max_capacity(cache_bytes)
            .build();
        let indexes = Cache::builder()
            .weigher(|_: &SegmentId, v: &Arc<SegmentIndex>| {
                (v.entries().len() * 32 + 64).min(u32::MAX as usize) as u32
            })
            .max_capacity((cache_bytes / 16).max(1 << 20))
            .build();
        PageReader {
            state: history.state().clone(),
            history,
            store,
            pages,
            indexes,
            hedge_after,
            zeros: Bytes::from(vec![0u8; PAGE_SIZE]),
        }
    }

    /// Pages `idxs` of `volume` as of `lsn`, in request order. The caller has checked that this
    /// replica has applied `lsn` (snapshots are immutable, so any such replica answers the same).
    ///
    /// The node's own state is read in two batches whatever the number of pages (the index
    /// lookups, then the buffered bytes), each off the async worker's queue.
    pub async fn read(
        &self,
        volume: VolumeId,
        lsn: Lsn,
        idxs: &[PageIdx],
    ) -> Result<Vec<PageVersion>, ReadError> {
        let found = self.history.versions_at(volume, idxs, lsn).await?;
        // Once for the whole batch, after every lookup: a version missing because retention
        // dropped it is refused here rather than answered as zeros.
        self.history.check_retained(volume, lsn)?;
        let mut out = Vec::with_capacity(found.len());
        // Versions whose bytes are not in the cache: (position in `out`, owner, location).
        let mut uncached = Vec::new();
        for (&idx, version) in idxs.iter().zip(found) {
            let (written, data) = match version {
                None => (Lsn(0), Some(self.zeros.clone())),
                Some((written, loc, owner)) => {
                    let cached = self.pages.get(&(loc.segment, loc.offset)).await;
                    if cached.is_some() {
                        metrics::PAGE_READS.with_label_values(&["cache"]).inc();
                    } else {
                        uncached.push((out.len(), owner, loc));
                    }
                    (written, cached)
                }
            };
            out.push((idx, written, data));
        }
        if !uncached.is_empty() {
            let slots: Vec<_> = uncached
                .iter()
                .map(|(_, _, loc)| (loc.segment, loc.offset))
                .collect();
            let buffered = self
                .state
                .buffered_pages(&slots)
                .map_err(ReadError::from_local)?;
            // Flushed (possibly just now, between the index lookup and the buffer read): read
            // the segments.
            let mut flushed = Vec::new();
            for ((at, owner, loc), bytes) in uncached.into_iter().zip(buffered) {
                match bytes {
                    // Not cached: the buffer is local and the bytes may be dropped after the flush.
                    Some(b) => {
                        metrics::PAGE_READS.with_label_values(&["buffer"]).inc();
                        out[at].2 = Some(b);
                    }
                    None => flushed.push((at, owner, loc)),
                }
            }
            let fetched: Vec<(usize, Bytes)> = stream::iter(flushed)
                .map(|(at, owner, loc)| async move {
                    Ok::<_, ReadError>((at, self.fetch(owner, loc).await?))
                })
                .buffered(FETCH_CONCURRENCY)
                .try_collect::<Vec<_>>()
                .await?;
            for (at, b) in fetched {
                out[at].2 = Some(b);
            }
        }
        out.into_iter()
            .map(|(idx, written, data)| {
                let data = data.ok_or_else(|| {
                    ReadError::Local(format!("page {idx} was neither cached, buffered nor read"))
                })?;
                Ok(PageVersion { idx, written, data })
            })
            .collect()
    }

    /// One flushed page version's bytes from its segment in the object store, verified against
    /// the segment's index, and cached.
    async fn fetch(&self, volume: VolumeId, loc: PageLocation) -> Result<Bytes, ReadError> {
        let key = (loc.segment, loc.offset);
        let index = self.index(loc.segment).await?;
        let entry = index
            .get(volume, loc.idx, loc.offset)
            .copied()
            .ok_or_else(|| ReadError::Corrupt {
                segment: loc.segment,
                reason: format!(
                    "index has no page {} of volume {volume} at offset {}",
                    loc.idx, loc.offset
                ),
            })?;
        let obj = ObjectKey::Segment(loc.segment);
        let bytes = self
            .get_range(&obj, folio_segment::page_range(loc.offset))
            .await?;
        let page = entry.verify(bytes).map_err(|e| ReadError::Corrupt {
            segment: loc.segment,
            reason: e.to_string(),
        })?;
        metrics::PAGE_READS
            .with_label_values(&["object_store"])
            .inc();
        let data = page.bytes().clone();
        self.pages.insert(key, data.clone()).await;
        Ok(data)
    }

    /// A segment's verified index: footer and index by ranged GETs, cached.
    async fn index(&self, segment: SegmentId) -> Result<Arc<SegmentIndex>, ReadError> {
        self.indexes
            .try_get_with(segment, async {
                let key = ObjectKey::Segment(segment);
                let corrupt = |reason: String| ReadError::Corrupt { segment, reason };
                let len = self
                    .store
                    .head(&key)
                    .await?
                    .ok_or_else(|| corrupt("segment object is missing".into()))?;
                if len < FOOTER_LEN as u64 {
                    return Err(corrupt(format!("object is only {len} bytes")));
                }
                let tail = self.get_range(&key, len - FOOTER_LEN as u64..len).await?;
                let footer = Footer::decode(&tail).map_err(|e| corrupt(e.to_string()))?;
                if footer.segment_len() != len {
                    return Err(corrupt(format!(
                        "object is {len} bytes, footer implies {}",
                        footer.segment_len()
                    )));
                }
                let raw = self.get_range(&key, footer.index_range()).await?;
                let index =
                    SegmentIndex::decode(&footer, &raw).map_err(|e| corrupt(e.to_string()))?;
                Ok(Arc::new(index))
            })
            .await
            .map_err(|e: Arc<ReadError>| e.copy())
    }

    async fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Bytes, StoreError> {
        hedged_get_range(self.store.as_ref(), key, range, self.hedge_after).await
    }
}

fn clone_store_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::NotFound(k) => StoreError::NotFound(k.clone()),
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        other => StoreError::Other(other.to_string()),
    }
}

/// A ranged GET, hedged: if the first request has not answered within `after`, a second one is
/// sent, and whichever answers first wins. A failed first request does not wait for the delay.
pub async fn hedged_get_range(
    store: &dyn ObjectStore,
    key: &ObjectKey,
    range: Range<u64>,
    after: Duration,
) -> Result<Bytes, StoreError> {
    let first = store.get_range(key, range.clone());
    tokio::pin!(first);
    tokio::select! {
        r = &mut first => return r,
        _ = tokio::time::sleep(after) => {}
    }
    metrics::HEDGED_READS.with_label_values(&["sent"]).inc();
    let second = store.get_range(key, range);
    tokio::pin!(second);
    tokio::select! {
        r = &mut first => match r {
            Ok(b) => Ok(b),
            Err(_) => second.await,
        },
        r = &mut second => match r {
            Ok(b) => {
                metrics::HEDGED_READS.with_label_values(&["won"]).inc();
                Ok(b)
            }
            Err(_) => first.await,
        },
    }
}
