//! The flusher: on the leader, seals the open segment every flush interval and uploads every
//! sealed segment to the object store, then proposes `Flushed` so every replica drops those
//! bytes from its buffer.
//!
//! Everything it does is safe to repeat and safe to race with an old leader. A segment's bytes
//! are built from replicated state, so every replica builds the same object; the upload is a
//! conditional put, and when the object already exists its bytes are compared; a `Flushed` for
//! a segment already flushed is a no-op. A new leader therefore simply uploads every sealed
//! segment it finds, including those its predecessor sealed but did not confirm.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use folio_core::SegmentId;
use folio_objstore::{ObjectKey, ObjectStore, PutOutcome, StoreError};
use folio_state::{Command, CommandResult, Raft, SegmentObject, StateReader};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::batcher::WriteError;
use crate::config::FlushConfig;
use crate::metrics;

/// The first retry of a failed upload waits this long; each further one waits
/// `RETRY_BACKOFF_FACTOR` times the one before, up to `flush.retry_backoff_max_ms`.
const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// How much longer each retry of one segment's upload waits than the one before.
const RETRY_BACKOFF_FACTOR: f32 = 2.0;
/// Longest one segment's build, upload and confirmation may take before it is abandoned and
/// retried (the object store SDK has no overall deadline of its own).
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// Decodes a built segment object and checks it against what the buffer held.
fn verify_segment(obj: &SegmentObject) -> Result<(), FlushError> {
    let seg = folio_segment::Segment::decode(obj.bytes.clone())
        .map_err(|e| FlushError::Verify(obj.id, e.to_string()))?;
    let (pages, commits) = (seg.index.entries().len() as u64, seg.commits.len() as u64);
    if seg.id != obj.id || pages != obj.pages || commits != obj.commits {
        return Err(FlushError::Verify(
            obj.id,
            format!(
                "decoded as segment {} with {pages} pages and {commits} commits, built with {} \
                 and {}",
                seg.id, obj.pages, obj.commits
            ),
        ));
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
enum FlushError {
    #[error("build segment: {0}")]
    Build(String),
    #[error("segment {0} failed verification before upload: {1}")]
    Verify(SegmentId, String),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error(
        "segment {0} already exists in the object store with different bytes; refusing to mark \
         it flushed (its pages stay in the buffer)"
    )]
    Mismatch(SegmentId),
    #[error("propose Flushed: {0}")]
    Propose(#[from] WriteError),
}

impl FlushError {
    fn reason(&self) -> &'static str {
        match self {
            FlushError::Build(_) => "build",
            FlushError::Verify(..) => "verify",
            FlushError::Store(e) if e.is_retryable() => "store_unavailable",
            FlushError::Store(_) => "store_error",
            FlushError::Mismatch(_) => "mismatch",
            FlushError::Propose(_) => "propose",
        }
    }
}

/// Commits waiting for `OBJECT_STORE` durability on this node. While any wait, the flusher seals
/// the open segment as soon as no other segment is waiting for upload, instead of at the end of
/// the flush interval: those commits then wait for about one upload, not up to a whole interval.
/// Segments (and PUTs) get more frequent only while such commits wait, and never overlap.
/// `flush.early_seal = false` turns this off (the benchmark's acknowledge-after-flush baseline).
#[derive(Default)]
pub struct FlushDemand {
    waiters: AtomicUsize,
    wake: Notify,
}

impl FlushDemand {
    /// Registers a waiting commit until the guard is dropped.
    pub fn wait(self: &Arc<Self>) -> DemandGuard {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        self.wake.notify_one();
        DemandGuard(self.clone())
    }

    fn wanted(&self) -> bool {
        self.waiters.load(Ordering::SeqCst) > 0
    }
}

pub struct DemandGuard(Arc<FlushDemand>);

impl Drop for DemandGuard {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What the flusher needs from its node.
pub struct Flusher {
    pub node_id: u64,
    pub raft: Raft,
    pub reader: StateReader,
    /// Stamped on Seal and Flushed entries, like the batcher stamps client entries.
    pub segment_bytes_max: u64,
    pub store: Arc<dyn ObjectStore>,
    pub cfg: FlushConfig,
    pub demand: Arc<FlushDemand>,
}

/// The waits between one segment's upload attempts, from backon's exponential backoff. They
/// are not jittered: one flusher per group retries each segment on its own schedule, so there is
/// no crowd of retries to spread out.
type Delays = <ExponentialBuilder as BackoffBuilder>::Backoff;

/// The waits for a segment whose upload failed, up to `max` each. Their number is not limited:
/// a sealed segment's pages leave the buffer only once it is uploaded, so it is retried for as
/// long as it stays sealed and this node leads. Each attempt is bounded by [`FLUSH_TIMEOUT`] and
/// each wait by `max`; while segments wait, sealing stops at `flush.sealed_segments_max` and new
/// writes are refused at `flush.buffer_bytes_max`.
fn upload_backoff(max: Duration) -> Delays {
    ExponentialBuilder::new()
        .with_factor(RETRY_BACKOFF_FACTOR)
        .with_min_delay(RETRY_BACKOFF_MIN.min(max))
        .with_max_delay(max)
        .without_max_times()
        .build()
}

/// Retry state of one segment whose upload failed: no attempt before `next`, then the waits
/// still to come.
struct Backoff {
    next: Instant,
    delays: Delays,
}

impl Flusher {
    /// Runs until the node shuts down (the task is aborted).
    pub async fn run(self) {
        let interval = Duration::from_millis(self.cfg.interval_ms);
        let tick = (interval / 10).clamp(Duration::from_millis(10), Duration::from_millis(100));
        let this = Arc::new(self);
        let mut changes = this.reader.watch_group();
        let mut uploads: JoinSet<(SegmentId, Result<(), FlushError>)> = JoinSet::new();
        let mut uploading: HashSet<SegmentId> = HashSet::new();
        let mut backoff: HashMap<SegmentId, Backoff> = HashMap::new();
        let mut sealing: JoinSet<()> = JoinSet::new();
        let mut first_seen: HashMap<SegmentId, Instant> = HashMap::new();
        let mut open_seen: Option<(SegmentId, Instant)> = None;
        let mut tasks: HashMap<tokio::task::Id, SegmentId> = HashMap::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = this.demand.wake.notified() => {}
                r = changes.changed() => if r.is_err() { return },
                Some(done) = uploads.join_next_with_id(), if !uploads.is_empty() => {
                    // A task that panicked still frees its slot and is retried after a backoff.
                    let (id, res) = match done {
                        Ok((task, (id, res))) => {
                            tasks.remove(&task);
                            (id, res)
                        }
                        Err(e) => {
                            let Some(id) = tasks.remove(&e.id()) else { continue };
                            (id, Err(FlushError::Build(format!("upload task failed: {e}"))))
                        }
                    };
                    uploading.remove(&id);
                    match res {
                        Ok(()) => {
                            backoff.remove(&id);
                            if let Some(t) = first_seen.remove(&id) {
                                metrics::FLUSH_SECONDS.observe(t.elapsed().as_secs_f64());
                            }
                        }
                        Err(e) => {
                            metrics::UPLOAD_ERRORS.with_label_values(&[e.reason()]).inc();
                            let max = Duration::from_millis(this.cfg.retry_backoff_max_ms);
                            let b = backoff.entry(id).or_insert_with(|| Backoff {
                                next: Instant::now(),
                                delays: upload_backoff(max),
                            });
                            // The backoff has no count limit, so it always has a next wait.
                            let delay = b.delays.next().unwrap_or(max);
                            b.next = Instant::now() + delay;
                            if matches!(e, FlushError::Mismatch(_)) {
                                tracing::error!(segment = %id, error = %e, "segment upload refused");
                            } else {
                                tracing::warn!(segment = %id, error = %e, retry_in = ?delay, "segment upload failed");
                            }
                        }
                    }
                }
                Some(_) = sealing.join_next(), if !sealing.is_empty() => {}
            }
            if !this.is_leader() {
                first_seen.clear();
                open_seen = None;
                continue;
            }
            let g = this.reader.group_state();
            // Seal by time. While many sealed segments wait (the store is down or slow), stop:
            // the open segment then grows to its size limit instead of adding tiny segments.
            if let Some(open) = g.open {
                // Age by this node's monotonic clock since it first saw the segment open, not by
                // the id's timestamp: ids never go back, so one fast clock in the group's past
                // would otherwise delay every seal.
                let opened = match open_seen {
                    Some((id, t)) if id == open.id => t,
                    _ => {
                        let t = Instant::now();
                        open_seen = Some((open.id, t));
                        t
                    }
                };
                let due = opened.elapsed() >= interval
                    || (this.cfg.early_seal
                        && this.demand.wanted()
                        && g.sealed.is_empty()
                        && uploading.is_empty());
                if due && sealing.is_empty() && g.sealed.len() < this.cfg.sealed_segments_max {
                    let (raft, max) = (this.raft.clone(), this.segment_bytes_max);
                    sealing.spawn(async move {
                        match crate::batcher::propose(
                            &raft,
                            max,
                            Command::Seal { segment: open.id },
                        )
                        .await
                        {
                            Ok(CommandResult::Sealed(_)) => {}
                            Ok(other) => tracing::error!(?other, "unexpected result for Seal"),
                            Err(e) => tracing::debug!(error = %e, "seal not proposed; will retry"),
                        }
                    });
                }
            }
            let now = Instant::now();
            for s in &g.sealed {
                first_seen.entry(s.id).or_insert(now);
            }
            first_seen
                .retain(|id, _| g.sealed.iter().any(|s| s.id == *id) || uploading.contains(id));
            backoff.retain(|id, _| g.sealed.iter().any(|s| s.id == *id));
            for s in &g.sealed {
                if uploading.len() >= this.cfg.upload_concurrency {
                    break;
                }
                if uploading.contains(&s.id) || backoff.get(&s.id).is_some_and(|b| b.next > now) {
                    continue;
                }
                uploading.insert(s.id);
                let me = this.clone();
                let id = s.id;
                let h = uploads.spawn(async move {
                    let res = match tokio::time::timeout(FLUSH_TIMEOUT, me.flush(id)).await {
                        Ok(r) => r,
                        Err(_) => Err(FlushError::Store(StoreError::Unavailable(format!(
                            "no answer within {FLUSH_TIMEOUT:?}"
                        )))),
                    };
                    (id, res)
                });
                tasks.insert(h.id(), id);
            }
        }
    }

    fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.node_id)
    }

    /// Builds, uploads and confirms one sealed segment.
    async fn flush(&self, id: SegmentId) -> Result<(), FlushError> {
        let reader = self.reader.clone();
        let built = tokio::task::spawn_blocking(move || reader.build_segment(id))
            .await
            .map_err(|e| FlushError::Build(e.to_string()))?
            .map_err(|e| FlushError::Build(e.to_string()))?;
        let Some(obj) = built else {
            // Flushed meanwhile (for example by the previous leader's confirmation).
            return Ok(());
        };
        // Decode what is about to be uploaded and check every checksum, page count and commit
        // count: `Flushed` drops the replicas' copies, so the object must be readable first. An
        // object already in the store is accepted only when its bytes equal these.
        let check = obj.clone();
        tokio::task::spawn_blocking(move || verify_segment(&check))
            .await
            .map_err(|e| FlushError::Build(e.to_string()))??;
        let key = ObjectKey::Segment(id);
        match self.store.put_if_absent(&key, obj.bytes.clone()).await? {
            PutOutcome::Created => {}
            PutOutcome::AlreadyExists => {
                // An earlier attempt (ours or a previous leader's) got there first. The bytes
                // must be the same, since both were built from the same replicated state.
                let existing = self.store.get(&key).await?;
                if existing != obj.bytes {
                    return Err(FlushError::Mismatch(id));
                }
            }
        }
        metrics::SEGMENT_BYTES.observe(obj.bytes.len() as f64);
        metrics::SEGMENT_PAGES.observe(obj.pages as f64);
        match crate::batcher::propose(
            &self.raft,
            self.segment_bytes_max,
            Command::Flushed { segment: id },
        )
        .await?
        {
            CommandResult::Flushed(_) => {}
            other => {
                return Err(FlushError::Propose(WriteError::Unavailable(format!(
                    "unexpected result {other:?}"
                ))))
            }
        }
        metrics::SEGMENTS_FLUSHED.inc();
        tracing::debug!(segment = %id, bytes = obj.bytes.len(), pages = obj.pages, commits = obj.commits, "segment flushed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_backoff_doubles_up_to_the_max_and_keeps_going() {
        let max = Duration::from_millis(1_000);
        let waits: Vec<Duration> = upload_backoff(max).take(100).collect();
        assert_eq!(waits.len(), 100);
        assert_eq!(waits[0], RETRY_BACKOFF_MIN);
        assert!(
            waits[1] > waits[0] && waits[1] <= 2 * RETRY_BACKOFF_MIN + Duration::from_millis(1)
        );
        assert!(waits.iter().all(|w| *w <= max));
        assert_eq!(waits[99], max);
    }
}
