//! The write path of the volume API, on the leader: admission against the page buffer's byte
//! limit, the group-commit batcher, and for `OBJECT_STORE` durability the wait for the flush.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use folio_core::{CommitArgs, Durability, Lsn, SegmentId, VolumeId, WritePagesArgs};
use folio_proto::volume::v1 as pb;
use folio_state::state::Retention;
use folio_state::{Command, CommandResult, StateReader};
use tonic::Status;

use crate::batcher::Batcher;
use crate::config::FlushConfig;
use crate::edge::status;
use crate::flusher::FlushDemand;
use crate::history::History;
use crate::metrics;
use crate::pages::ReadError;

/// What the leader needs to take writes.
pub struct WritePath {
    batcher: Batcher,
    reader: StateReader,
    history: Arc<History>,
    flush: FlushConfig,
    flush_demand: Arc<FlushDemand>,
    /// Page bytes of writes admitted past the buffer check and not yet applied.
    reserved: AtomicU64,
}

impl WritePath {
    pub fn new(
        batcher: Batcher,
        history: Arc<History>,
        flush: FlushConfig,
        flush_demand: Arc<FlushDemand>,
    ) -> WritePath {
        WritePath {
            batcher,
            reader: history.state().clone(),
            history,
            flush,
            flush_demand,
            reserved: AtomicU64::new(0),
        }
    }

    pub async fn create_volume(
        &self,
        volume: VolumeId,
    ) -> Result<pb::CreateVolumeResponse, Status> {
        match self.submit(Command::CreateVolume { volume }).await? {
            CommandResult::VolumeCreated { volume } => {
                tracing::info!("volume created");
                Ok(pb::CreateVolumeResponse {
                    volume_id: Bytes::copy_from_slice(volume.as_bytes()),
                    lsn: 0,
                })
            }
            other => Err(status::unexpected(other)),
        }
    }

    pub async fn delete_volume(
        &self,
        volume: VolumeId,
    ) -> Result<pb::DeleteVolumeResponse, Status> {
        match self.submit(Command::DeleteVolume { volume }).await? {
            CommandResult::VolumeDeleted { already, .. } => {
                if !already {
                    tracing::info!("volume deleted");
                }
                Ok(pb::DeleteVolumeResponse {
                    already_deleted: already,
                })
            }
            other => Err(status::unexpected(other)),
        }
    }

    pub async fn set_retention(
        &self,
        volume: VolumeId,
        retention: Option<Retention>,
    ) -> Result<pb::SetRetentionResponse, Status> {
        match self
            .submit(Command::SetRetention { volume, retention })
            .await?
        {
            CommandResult::RetentionSet { .. } => {
                tracing::info!(?retention, "volume retention set");
                Ok(pb::SetRetentionResponse {})
            }
            other => Err(status::unexpected(other)),
        }
    }

    pub async fn fork_volume(
        &self,
        volume: VolumeId,
        source: VolumeId,
        at: Option<Lsn>,
    ) -> Result<pb::ForkVolumeResponse, Status> {
        match self
            .submit(Command::ForkVolume { volume, source, at })
            .await?
        {
            CommandResult::VolumeForked { volume, at, .. } => {
                tracing::info!(%source, at = at.0, "volume forked");
                Ok(pb::ForkVolumeResponse {
                    volume_id: Bytes::copy_from_slice(volume.as_bytes()),
                    at_lsn: at.0,
                })
            }
            other => Err(status::unexpected(other)),
        }
    }

    pub async fn write_pages(
        &self,
        args: WritePagesArgs,
    ) -> Result<pb::WritePagesResponse, Status> {
        match self.submit(Command::WritePages { args }).await? {
            CommandResult::PagesWritten { pages } => Ok(pb::WritePagesResponse {
                pages: pages.into_iter().map(Into::into).collect(),
            }),
            other => Err(status::unexpected(other)),
        }
    }

    pub async fn commit(&self, args: CommitArgs) -> Result<pb::CommitResponse, Status> {
        let (durability, volume) = (args.durability, args.volume);
        match self.submit(Command::commit(args)).await? {
            CommandResult::Committed {
                lsn,
                mut pages,
                deduplicated,
                segment,
            } => {
                if deduplicated && pages.is_empty() {
                    // The original's record was checkpointed: its pages are in the manifest.
                    pages = self.original_pages(volume, lsn).await?;
                }
                tracing::debug!(lsn = lsn.0, pages = pages.len(), deduplicated, "committed");
                if durability == Durability::ObjectStore {
                    let mut segments: Vec<SegmentId> = pages.iter().map(|p| p.segment).collect();
                    segments.push(segment);
                    segments.sort_unstable();
                    segments.dedup();
                    self.wait_flushed(lsn, &segments).await?;
                }
                Ok(pb::CommitResponse {
                    lsn: lsn.0,
                    pages: pages.into_iter().map(Into::into).collect(),
                    deduplicated,
                })
            }
            other => Err(status::unexpected(other)),
        }
    }

    /// The page locations commit `lsn` wrote, read back through the history index.
    async fn original_pages(
        &self,
        volume: VolumeId,
        lsn: Lsn,
    ) -> Result<Vec<folio_core::PageLocation>, Status> {
        let found = match self.history.commits(volume, lsn, 1).await {
            Ok(found) => found,
            // Retention dropped the record: the commit happened at `lsn`, which is what the
            // retry needs to know; where its pages were is history nobody keeps any more.
            Err(ReadError::NotRetained { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(status::read(e)),
        };
        match found.into_iter().next() {
            Some(c) if c.lsn == lsn => Ok(c.pages),
            _ => Err(Status::internal(format!(
                "commit {lsn} of volume {volume} is in the idempotency window but not in the \
                 history index"
            ))),
        }
    }

    /// Proposes `cmd` through the batcher once the buffer has room for its pages.
    async fn submit(&self, cmd: Command) -> Result<CommandResult, Status> {
        // Backpressure: the buffer is bounded. Bytes admitted but not applied yet count too, so
        // concurrent writers cannot all pass the check before the buffer moves. A write into an
        // empty buffer is always admitted, so no single request is refused forever.
        let incoming = cmd.page_bytes();
        let _reservation = if incoming > 0 {
            let buffered = self.reader.group_state().buffered_bytes;
            let max = self.flush.buffer_bytes_max;
            let reserved = self.reserved.fetch_add(incoming, Ordering::SeqCst);
            let guard = Reservation(&self.reserved, incoming);
            let pending = buffered + reserved;
            if pending > 0 && pending + incoming > max {
                metrics::WRITES_REFUSED_BUFFER_FULL.inc();
                return Err(Status::unavailable(format!(
                    "the write buffer is full ({pending} of {max} bytes wait for the object \
                     store, which is unreachable or slow); nothing was written; retry with backoff"
                )));
            }
            Some(guard)
        } else {
            None
        };
        match self.batcher.submit(cmd).await? {
            CommandResult::Rejected(r) => Err(status::rejection(r)),
            ok => Ok(ok),
        }
    }

    /// Waits until every one of `segments` is in the object store, for `OBJECT_STORE`
    /// durability. The commit has already committed; a timeout says so.
    async fn wait_flushed(&self, lsn: Lsn, segments: &[SegmentId]) -> Result<(), Status> {
        let mut rx = self.reader.watch_group();
        let _demand = self.flush_demand.wait();
        let timeout = Duration::from_millis(self.flush.object_store_ack_timeout_ms);
        let wait = async {
            loop {
                if segments
                    .iter()
                    .all(|s| rx.borrow_and_update().is_flushed(*s))
                {
                    return;
                }
                if rx.changed().await.is_err() {
                    // The node is shutting down.
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| {
            Status::unavailable(format!(
                "committed at LSN {lsn} (durable in the group's quorum), but its segment did not \
                 reach the object store within {timeout:?}; retry with the same idempotency key \
                 to wait again"
            ))
        })
    }
}

/// Bytes a write holds in `WritePath::reserved` until its command has been applied (or failed).
struct Reservation<'a>(&'a AtomicU64, u64);

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::SeqCst);
    }
}
