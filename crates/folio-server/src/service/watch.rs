//! WatchVolume: a task per subscriber pages through the volume's applied commits and waits on its
//! volume's change signal ([`folio_state::VolumeWatch`]) for more, with a bounded channel to the
//! subscriber: an applied entry wakes only the watchers of the volumes it changed. A stream ends
//! with UNAVAILABLE when the node's Raft core stops, so no subscriber waits on a node that cannot
//! apply anything more.

use std::sync::Arc;

use folio_core::{Lsn, VolumeId};
use folio_proto::volume::v1 as pb;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::read::ReadPath;
use crate::edge::{status, Edge};
use crate::metrics;

/// Commits buffered for one WatchVolume subscriber before the server waits for it to read.
pub const WATCH_BUFFER: usize = 64;
/// WatchVolume streams one node serves at once.
pub const WATCH_STREAMS_MAX: usize = 10_000;

/// The stream of a WatchVolume call.
pub type WatchStream = ReceiverStream<Result<pb::WatchVolumeEvent, Status>>;

/// Holds one of the node's WatchVolume slots and counts the stream while it lives.
struct WatchSlot(#[allow(dead_code)] OwnedSemaphorePermit);

impl Drop for WatchSlot {
    fn drop(&mut self) {
        metrics::WATCHERS.dec();
    }
}

/// The node's WatchVolume streams.
pub struct Watches {
    /// One permit per stream this node may serve.
    slots: Arc<Semaphore>,
    /// Set, with the reason, once the node's Raft core has stopped.
    stopped: tokio::sync::watch::Receiver<Option<String>>,
}

impl Watches {
    /// `stopped` is the node's [`folio_raft::stop_signal`].
    pub fn new(stopped: tokio::sync::watch::Receiver<Option<String>>) -> Watches {
        Watches {
            slots: Arc::new(Semaphore::new(WATCH_STREAMS_MAX)),
            stopped,
        }
    }

    /// Streams the commits of `volume` after `since`. Any replica streams its applied history in
    /// order. One that does not know the volume yet is not the place to ask: the leader answers
    /// NOT_FOUND for sure. A stream opened with a token ends with UNAUTHENTICATED when the token
    /// `expires` (unix seconds).
    pub async fn watch(
        &self,
        edge: &Edge,
        reads: &ReadPath,
        volume: VolumeId,
        since: Lsn,
        expires: Option<u64>,
    ) -> Result<WatchStream, Status> {
        let reader = reads.reader.clone();
        let history = reads.history.clone();
        let head = reader
            .volume(volume)
            .map_err(|e| status::local_read("read volume head", e))?;
        let head = match head {
            Some(h) => h,
            None if edge.is_leader() => match reads.linearizable_head(edge, volume).await {
                Ok(h) => h,
                Err(e) => return Err(edge.redirect(volume, e).await),
            },
            None => {
                return Err(status::not_leader(
                    edge.leader(),
                    "this replica does not know the volume yet",
                ))
            }
        };
        if since.0 == u64::MAX {
            return Err(status::future_lsn("since_lsn", since.0, head.lsn));
        }
        if since > head.lsn && edge.is_leader() {
            // A new leader may not have applied its predecessor's last entries yet.
            let head = reads.linearizable_head(edge, volume).await?;
            if since > head.lsn {
                return Err(status::future_lsn("since_lsn", since.0, head.lsn));
            }
        }
        let permit = self.slots.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "this node already serves {WATCH_STREAMS_MAX} WatchVolume streams; retry later or \
                 on another member"
            ))
        })?;
        metrics::WATCHERS.inc();
        let slot = WatchSlot(permit);
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        let expiry = expires.map(|e| {
            let left = e.saturating_sub(folio_auth::layer::now_s());
            tokio::time::Instant::now() + std::time::Duration::from_secs(left)
        });
        let ended = tx.clone();
        let mut stopped = self.stopped.clone();
        let stream = async move {
            let mut changes = reader.watch_volume(volume);
            let mut next = since.next();
            loop {
                changes.mark_seen();
                let batch = match history.commits(volume, next, WATCH_BUFFER).await {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = tx.send(Err(status::read(e))).await;
                        return;
                    }
                };
                for c in &batch {
                    let mut idxs: Vec<u32> = c.pages.iter().map(|p| p.idx.0).collect();
                    idxs.sort_unstable();
                    let ev = pb::WatchVolumeEvent {
                        lsn: c.lsn.0,
                        committed_at_ms: c.committed_at_ms,
                        page_idx: idxs,
                    };
                    if tx.send(Ok(ev)).await.is_err() {
                        return; // the subscriber went away
                    }
                    next = c.lsn.next();
                }
                if batch.len() < WATCH_BUFFER {
                    // Caught up: wait for the volume's next change (or notice a gone subscriber).
                    tokio::select! {
                        _ = changes.changed() => {}
                        _ = tx.closed() => return,
                    }
                }
            }
        };
        tokio::spawn(async move {
            let _slot = slot;
            let expired = async {
                match expiry {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stream => {}
                _ = expired => {
                    let _ = ended
                        .send(Err(Status::unauthenticated(
                            "token expired: the watch ends; watch again with a fresh token",
                        )))
                        .await;
                }
                why = async {
                    // The borrowed value is cloned here, not held across an await.
                    stopped.wait_for(Option::is_some).await.ok().and_then(|w| w.clone())
                } => {
                    let why = why.unwrap_or_else(|| "the Raft core has stopped".into());
                    // This node will apply nothing more: say so, so that the subscriber resumes
                    // from its last LSN on another member instead of waiting on a silent stream.
                    let _ = ended
                        .send(Err(Status::unavailable(format!(
                            "this node stopped serving its group ({why}); watch again on another \
                             member from the last LSN received"
                        ))))
                        .await;
                }
            }
        });
        Ok(ReceiverStream::new(rx))
    }
}
