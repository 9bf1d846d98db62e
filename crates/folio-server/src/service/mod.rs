//! The client API (`folio.volume.v1.VolumeService`). Each handler is its own part only: the edge
//! (`crate::edge`) validates the request on whichever node receives it, runs the call on the
//! leader or forwards it there, checks the read index before leader reads, and measures the call.
//! Writes go through the group-commit batcher (`write`), reads through the applied state and the
//! page reader (`read`), and watches stream applied commits (`watch`).

mod args;
mod read;
mod watch;
mod write;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use folio_core::limits::MAX_CLIENT_MESSAGE_BYTES;
use folio_core::VolumeId;
use folio_proto::channels::Channel;
use folio_proto::volume::v1 as pb;
use folio_proto::volume::v1::volume_service_client::VolumeServiceClient;
use folio_proto::volume::v1::volume_service_server::{VolumeService, VolumeServiceServer};
use tonic::{Request, Response, Status};

pub use args::MAX_READ_PAGES;
pub use read::{ReadPath, LIST_COMMITS_PAGES_MAX};
pub use watch::{WATCH_BUFFER, WATCH_STREAMS_MAX};
pub use write::WritePath;

use watch::{WatchStream, Watches};

use crate::edge::OnLeader::{Read, Write};
use crate::edge::{Edge, Validate};
use crate::metrics;

pub struct VolumeSvc {
    edge: Arc<Edge>,
    writes: WritePath,
    reads: ReadPath,
    watches: Watches,
}

impl VolumeSvc {
    pub fn server(
        edge: Arc<Edge>,
        writes: WritePath,
        reads: ReadPath,
    ) -> VolumeServiceServer<VolumeSvc> {
        let watches = Watches::new(folio_raft::stop_signal(edge.raft.clone()));
        VolumeServiceServer::new(VolumeSvc {
            edge,
            writes,
            reads,
            watches,
        })
        .max_decoding_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_CLIENT_MESSAGE_BYTES)
    }
}

/// The client a call is forwarded to the leader with.
fn client(ch: Channel) -> VolumeServiceClient<Channel> {
    VolumeServiceClient::new(ch)
        .max_decoding_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_CLIENT_MESSAGE_BYTES)
}

#[tonic::async_trait]
impl VolumeService for VolumeSvc {
    type WatchVolumeStream = WatchStream;

    async fn create_volume(
        &self,
        req: Request<pb::CreateVolumeRequest>,
    ) -> Result<Response<pb::CreateVolumeResponse>, Status> {
        // The receiving node picks a missing id, so a forwarded create carries it.
        let req = req.map(|mut m| {
            if m.volume_id.is_empty() {
                m.volume_id = Bytes::copy_from_slice(VolumeId::new_random().as_bytes());
            }
            m
        });
        let forward = async |ch, m| client(ch).create_volume(m).await;
        let local = |volume| self.writes.create_volume(volume);
        self.edge
            .on_leader(Write("CreateVolume"), req, forward, local)
            .await
    }

    async fn write_pages(
        &self,
        req: Request<pb::WritePagesRequest>,
    ) -> Result<Response<pb::WritePagesResponse>, Status> {
        let forward = async |ch, m| client(ch).write_pages(m).await;
        let local = |args| self.writes.write_pages(args);
        self.edge
            .on_leader(Write("WritePages"), req, forward, local)
            .await
    }

    async fn commit(
        &self,
        req: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        let started = Instant::now();
        let forward = async |ch, m| client(ch).commit(m).await;
        let local = |args| self.writes.commit(args);
        let res = self
            .edge
            .on_leader(Write("Commit"), req, forward, local)
            .await;
        if res.is_ok() {
            metrics::COMMIT_SECONDS.observe(started.elapsed().as_secs_f64());
        }
        res
    }

    async fn get_snapshot(
        &self,
        req: Request<pb::GetSnapshotRequest>,
    ) -> Result<Response<pb::GetSnapshotResponse>, Status> {
        let forward = async |ch, m| client(ch).get_snapshot(m).await;
        let local = async |volume: VolumeId| {
            self.reads.head(volume).map(|h| pb::GetSnapshotResponse {
                volume_id: Bytes::copy_from_slice(volume.as_bytes()),
                lsn: h.lsn.0,
                oldest_lsn: h.horizon.0,
            })
        };
        self.edge
            .on_leader(Read("GetSnapshot"), req, forward, local)
            .await
    }

    async fn pull_changes(
        &self,
        req: Request<pb::PullChangesRequest>,
    ) -> Result<Response<pb::PullChangesResponse>, Status> {
        let forward = async |ch, m| client(ch).pull_changes(m).await;
        let local = |(volume, since)| self.reads.pull_changes(volume, since);
        self.edge
            .on_leader(Read("PullChanges"), req, forward, local)
            .await
    }

    async fn list_commits(
        &self,
        req: Request<pb::ListCommitsRequest>,
    ) -> Result<Response<pb::ListCommitsResponse>, Status> {
        let forward = async |ch, m| client(ch).list_commits(m).await;
        let local =
            async |(volume, from, limit)| self.reads.list_commits(volume, from, limit).await;
        self.edge
            .on_leader(Read("ListCommits"), req, forward, local)
            .await
    }

    async fn list_volumes(
        &self,
        req: Request<pb::ListVolumesRequest>,
    ) -> Result<Response<pb::ListVolumesResponse>, Status> {
        let forward = async |ch, m| client(ch).list_volumes(m).await;
        let local = async |(after, limit)| self.reads.list_volumes(after, limit);
        self.edge
            .on_leader(Read("ListVolumes"), req, forward, local)
            .await
    }

    async fn delete_volume(
        &self,
        req: Request<pb::DeleteVolumeRequest>,
    ) -> Result<Response<pb::DeleteVolumeResponse>, Status> {
        let forward = async |ch, m| client(ch).delete_volume(m).await;
        let local = |volume| self.writes.delete_volume(volume);
        self.edge
            .on_leader(Write("DeleteVolume"), req, forward, local)
            .await
    }

    async fn set_retention(
        &self,
        req: Request<pb::SetRetentionRequest>,
    ) -> Result<Response<pb::SetRetentionResponse>, Status> {
        let forward = async |ch, m| client(ch).set_retention(m).await;
        let local = |(volume, retention)| self.writes.set_retention(volume, retention);
        self.edge
            .on_leader(Write("SetRetention"), req, forward, local)
            .await
    }

    async fn fork_volume(
        &self,
        req: Request<pb::ForkVolumeRequest>,
    ) -> Result<Response<pb::ForkVolumeResponse>, Status> {
        let req = req.map(|mut m| {
            if m.volume_id.is_empty() {
                m.volume_id = Bytes::copy_from_slice(VolumeId::new_random().as_bytes());
            }
            m
        });
        let forward = async |ch, m| client(ch).fork_volume(m).await;
        let local = |(volume, source, at)| self.writes.fork_volume(volume, source, at);
        self.edge
            .on_leader(Write("ForkVolume"), req, forward, local)
            .await
    }

    async fn read_pages(
        &self,
        req: Request<pb::ReadPagesRequest>,
    ) -> Result<Response<pb::ReadPagesResponse>, Status> {
        let forward = async |ch, m| client(ch).read_pages(m).await;
        let body = async |md, args| self.reads.read_pages(&self.edge, &md, args, forward).await;
        self.edge.call("ReadPages", req, body).await
    }

    async fn watch_volume(
        &self,
        req: Request<pb::WatchVolumeRequest>,
    ) -> Result<Response<Self::WatchVolumeStream>, Status> {
        let (_, ext, msg) = req.into_parts();
        let args = msg.validate()?;
        let principal = self
            .edge
            .authorize(&ext, pb::WatchVolumeRequest::wants(&args))?;
        let (volume, since) = args;
        let watch = self
            .watches
            .watch(&self.edge, &self.reads, volume, since, principal.expires());
        Ok(Response::new(watch.await?))
    }
}
