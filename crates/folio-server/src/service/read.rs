//! The read path of the volume API: volume heads, changed pages, the commit log, the volume list,
//! and page versions by snapshot, which any replica that has applied the snapshot answers.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use folio_core::{Lsn, VolumeId};
use folio_proto::channels::Channel;
use folio_proto::forwarded;
use folio_proto::volume::v1 as pb;
use folio_state::state::VolumeHead;
use folio_state::StateReader;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::args::ReadPages;
use crate::config::ReadConfig;
use crate::edge::{status, Edge, Route};
use crate::history::History;
use crate::metrics;
use crate::pages::PageReader;

/// Page locations in one ListCommits answer (about 2 MiB encoded).
pub const LIST_COMMITS_PAGES_MAX: usize = 65_536;

/// What a node needs to answer reads.
pub struct ReadPath {
    pub(super) reader: StateReader,
    pub(super) history: Arc<History>,
    pages: PageReader,
    cfg: ReadConfig,
}

impl ReadPath {
    pub fn new(history: Arc<History>, pages: PageReader, cfg: ReadConfig) -> ReadPath {
        ReadPath {
            reader: history.state().clone(),
            history,
            pages,
            cfg,
        }
    }

    /// The volume's head in this replica's applied state.
    pub fn head(&self, volume: VolumeId) -> Result<VolumeHead, Status> {
        match self
            .reader
            .volume(volume)
            .map_err(|e| status::local_read("read volume head", e))?
        {
            None => Err(status::volume_not_found(volume)),
            Some(h) if h.deleted => Err(status::volume_deleted(volume)),
            Some(h) => Ok(h),
        }
    }

    /// The volume's head as of now: a read-index check, then the local applied state.
    pub async fn linearizable_head(
        &self,
        edge: &Edge,
        volume: VolumeId,
    ) -> Result<VolumeHead, Status> {
        edge.read_index().await?;
        self.head(volume)
    }

    /// The pages changed after `since`, as a serialized Roaring bitmap (on the leader).
    pub async fn pull_changes(
        &self,
        volume: VolumeId,
        since: u64,
    ) -> Result<pb::PullChangesResponse, Status> {
        let head = self.head(volume)?;
        if since > head.lsn.0 {
            return Err(status::future_lsn("since_lsn", since, head.lsn));
        }
        if Lsn(since) < head.horizon {
            return Err(status::not_retained(volume, Lsn(since), head.horizon));
        }
        let set = self
            .history
            .changed_pages(volume, Lsn(since + 1), head.lsn)
            .await
            .map_err(status::read)?;
        let mut bytes = Vec::with_capacity(set.serialized_size());
        set.serialize_into(&mut bytes)
            .map_err(|e| status::internal("encode bitmap", e))?;
        Ok(pb::PullChangesResponse {
            lsn: head.lsn.0,
            changed_pages: Bytes::from(bytes),
            changed_count: set.len(),
        })
    }

    /// Commits from `from` on, at most `limit` of them (on the leader).
    pub async fn list_commits(
        &self,
        volume: VolumeId,
        from: Lsn,
        limit: usize,
    ) -> Result<pb::ListCommitsResponse, Status> {
        let head = self.head(volume)?;
        let mut commits = self
            .history
            .commits(volume, from, limit)
            .await
            .map_err(status::read)?;
        // Bound the answer by size too: stop after LIST_COMMITS_PAGES_MAX page locations
        // (always at least one commit, which is within the message limit on its own).
        let mut pages = 0;
        let keep = commits
            .iter()
            .position(|c| {
                pages += c.pages.len();
                pages > LIST_COMMITS_PAGES_MAX
            })
            .unwrap_or(commits.len())
            .max(1);
        commits.truncate(keep);
        Ok(pb::ListCommitsResponse {
            head_lsn: head.lsn.0,
            commits: commits
                .into_iter()
                .map(|c| pb::CommitRecord {
                    lsn: c.lsn.0,
                    idempotency_key: c.idempotency_key,
                    committed_at_ms: c.committed_at_ms,
                    pages: c.pages.into_iter().map(Into::into).collect(),
                })
                .collect(),
        })
    }

    /// Volumes after `after`, at most `limit` of them (on the leader).
    pub fn list_volumes(
        &self,
        after: Option<VolumeId>,
        limit: usize,
    ) -> Result<pb::ListVolumesResponse, Status> {
        // Deleted volumes keep their heads (their ids are retired) but are not listed.
        let mut vols = Vec::new();
        let mut cursor = after;
        while vols.len() < limit {
            let batch = self
                .reader
                .volumes(cursor, limit)
                .map_err(|e| status::internal("list volumes", e))?;
            let full = batch.len() == limit;
            cursor = batch.last().map(|(id, _)| *id);
            vols.extend(batch.into_iter().filter(|(_, h)| !h.deleted));
            if !full {
                break;
            }
        }
        vols.truncate(limit);
        Ok(pb::ListVolumesResponse {
            volumes: vols
                .into_iter()
                .map(|(id, h)| pb::VolumeInfo {
                    volume_id: Bytes::copy_from_slice(id.as_bytes()),
                    lsn: h.lsn.0,
                    created_at_ms: h.created_at_ms,
                    oldest_lsn: h.horizon.0,
                    retention: h.retention.map(|r| pb::Retention {
                        retention_ms: r.ms,
                        retain_commits: r.commits,
                    }),
                })
                .collect(),
        })
    }

    /// Page versions as of a snapshot. Snapshots are immutable: any replica that has applied the
    /// snapshot's LSN answers. The leader knows the latest LSN for sure (after a read-index
    /// check); a follower that has not applied it waits briefly, then hands the call to the
    /// leader with `forward`. The route is decided only then, so the leader is the one known
    /// after the wait.
    pub async fn read_pages<F>(
        &self,
        edge: &Edge,
        md: &MetadataMap,
        args: ReadPages,
        forward: F,
    ) -> Result<pb::ReadPagesResponse, Status>
    where
        F: AsyncFnOnce(
            Channel,
            Request<pb::ReadPagesRequest>,
        ) -> Result<Response<pb::ReadPagesResponse>, Status>,
    {
        let ReadPages {
            volume,
            lsn,
            idxs,
            request,
        } = args;
        let mut local = self.wait_applied(volume, lsn, Duration::ZERO).await?;
        if !local {
            if edge.is_leader() {
                let head = self.linearizable_head(edge, volume).await?;
                if lsn > head.lsn {
                    return Err(status::future_lsn("lsn", lsn.0, head.lsn));
                }
                local = true;
            } else {
                let wait = Duration::from_millis(self.cfg.replica_wait_ms);
                local = self.wait_applied(volume, lsn, wait).await?;
            }
        }
        if !local {
            return match edge.route(md)? {
                Route::Forward(ch) => forward(ch, forwarded(request))
                    .await
                    .map(Response::into_inner),
                Route::Local => Err(Status::unavailable(
                    "leadership changed during the read; retry",
                )),
            };
        }
        let pages = self
            .pages
            .read(volume, lsn, &idxs)
            .await
            .map_err(status::read)?;
        metrics::PAGES_READ.inc_by(pages.len() as u64);
        Ok(pb::ReadPagesResponse {
            lsn: lsn.0,
            pages: pages
                .into_iter()
                .map(|p| pb::PageData {
                    page_idx: p.idx.0,
                    data: p.data,
                    written_lsn: p.written.0,
                })
                .collect(),
        })
    }

    /// Waits (at most `wait`) until this replica has applied `volume` up to `lsn`; returns
    /// whether it has.
    async fn wait_applied(
        &self,
        volume: VolumeId,
        lsn: Lsn,
        wait: Duration,
    ) -> Result<bool, Status> {
        // The volume's own signal: a wait does not wake on every entry the group applies.
        let mut changes = self.reader.watch_volume(volume);
        let reached = || -> Result<bool, Status> {
            Ok(self
                .reader
                .volume(volume)
                .map_err(|e| status::internal("read volume head", e))?
                .is_some_and(|h| h.lsn >= lsn))
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            changes.mark_seen();
            if reached()? {
                return Ok(true);
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return reached();
            }
        }
    }
}
