//! Operating a group (`folio.admin.v1.AdminService`): status, and membership changes that run on
//! the leader (followers forward them once, like client writes, through the edge).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use folio_core::PAGE_SIZE;
use folio_proto::admin::v1 as pb;
use folio_proto::admin::v1::admin_service_client::AdminServiceClient;
use folio_proto::admin::v1::admin_service_server::{AdminService, AdminServiceServer};
use folio_raft::RaftNode;
use folio_state::StateReader;
use openraft::ChangeMembers;
use tonic::{Request, Response, Status};

use crate::edge::{status, Edge, OnLeader, Validate, Wants};
use crate::lifecycle::SharedReport;

/// How long AddMember waits for a new node to catch up before giving up on promoting it.
/// Shorter than a forwarded call's timeout, so the caller hears why.
pub const ADD_MEMBER_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(20);

pub struct AdminSvc {
    edge: Arc<Edge>,
    reader: StateReader,
    report: SharedReport,
}

impl AdminSvc {
    pub fn server(
        edge: Arc<Edge>,
        reader: StateReader,
        report: SharedReport,
    ) -> AdminServiceServer<AdminSvc> {
        AdminServiceServer::new(AdminSvc {
            edge,
            reader,
            report,
        })
    }

    /// The last lifecycle round's report (on the leader).
    async fn storage_here(&self) -> Result<pb::StorageResponse, Status> {
        let r = self.report.lock().expect("report lock").clone();
        let count = |(objects, bytes): (u64, u64)| Some(pb::ObjectCount { objects, bytes });
        Ok(pb::StorageResponse {
            group_id: self.edge.group.0,
            as_of_ms: r.as_of_ms,
            manifest_seq: r.manifest_seq,
            live_bytes: r.live_bytes,
            garbage_bytes: r.garbage_bytes,
            fragmented_bytes: r.fragmented_bytes,
            segments: count(r.segments),
            runs: count(r.runs),
            manifests: count(r.manifests),
            deleted: r.deleted,
            delete_errors: r.delete_errors,
            entries_dropped: r.entries_dropped,
            volumes: r
                .volumes
                .iter()
                .map(|v| pb::VolumeStorage {
                    volume_id: Bytes::copy_from_slice(v.volume.as_bytes()),
                    lsn: v.lsn.0,
                    oldest_lsn: v.oldest_lsn.0,
                    deleted: v.deleted,
                    fork_of: v
                        .base
                        .map(|b| Bytes::copy_from_slice(b.volume.as_bytes()))
                        .unwrap_or_default(),
                    fork_lsn: v.base.map_or(0, |b| b.lsn.0),
                    page_versions: v.page_versions,
                    live_bytes: v.page_versions * PAGE_SIZE as u64,
                    commits: v.commits,
                    retention: v.retention.map(|r| folio_proto::volume::v1::Retention {
                        retention_ms: r.ms,
                        retain_commits: r.commits,
                    }),
                })
                .collect(),
            volumes_truncated: r.volumes_truncated,
            compacted_segments: r.compacted_segments,
            compacted_bytes: r.compacted_bytes,
        })
    }

    fn members(&self) -> (Vec<pb::Member>, BTreeSet<u64>) {
        let m = self.edge.raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, n)| pb::Member {
                node_id: *id,
                addr: n.addr.clone(),
                voter: voters.contains(id),
                peer_addr: n.peer_addr.clone().unwrap_or_default(),
            })
            .collect();
        (members, voters)
    }

    fn reply(&self, log_index: u64) -> pb::MembershipResponse {
        pb::MembershipResponse {
            members: self.members().0,
            log_index,
        }
    }

    /// Adds a node as a learner, waits for it to catch up, then makes it a voter (on the leader).
    async fn add_here(&self, msg: pb::AddMemberRequest) -> Result<pb::MembershipResponse, Status> {
        let node = RaftNode::with_peer(&msg.addr, Some(msg.peer_addr.clone()));
        let (members, _) = self.members();
        if let Some(existing) = members.iter().find(|m| m.node_id == msg.node_id) {
            let recorded = RaftNode::with_peer(&existing.addr, Some(existing.peer_addr.clone()));
            if recorded != node {
                return Err(Status::already_exists(format!(
                    "node {} is already a member at {recorded}",
                    msg.node_id
                )));
            }
            if existing.voter {
                return Ok(self.reply(0));
            }
        }
        tracing::info!(node = self.edge.id, new = msg.node_id, member = %node, "adding member");
        let raft = &self.edge.raft;
        let learner = raft.add_learner(msg.node_id, node, true);
        match tokio::time::timeout(ADD_MEMBER_CATCH_UP_TIMEOUT, learner).await {
            Err(_) => {
                return Err(Status::deadline_exceeded(format!(
                    "node {} at {} did not catch up within {:?}; it stays a learner (remove it \
                     with remove-node, or retry once it runs)",
                    msg.node_id, msg.addr, ADD_MEMBER_CATCH_UP_TIMEOUT
                )))
            }
            Ok(r) => r.map_err(status::membership)?,
        };
        // Add just this voter: a voter set read before the catch-up wait could undo a concurrent
        // change.
        let res = raft
            .change_membership(
                ChangeMembers::AddVoterIds(BTreeSet::from([msg.node_id])),
                false,
            )
            .await
            .map_err(status::membership)?;
        Ok(self.reply(res.log_id.index))
    }

    /// Removes a voter (never the last one) or a learner (on the leader).
    async fn remove_here(&self, id: u64) -> Result<pb::MembershipResponse, Status> {
        let (members, voters) = self.members();
        if !members.iter().any(|m| m.node_id == id) {
            return Err(Status::not_found(format!(
                "node {id} is not a member of this group"
            )));
        }
        let change = if voters.contains(&id) {
            if voters.len() == 1 {
                return Err(Status::failed_precondition(
                    "cannot remove the group's last voter",
                ));
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        tracing::info!(node = self.edge.id, removed = id, "removing member");
        let res = self
            .edge
            .raft
            .change_membership(change, false)
            .await
            .map_err(status::membership)?;
        Ok(self.reply(res.log_id.index))
    }
}

impl Validate for pb::AddMemberRequest {
    type Args = pb::AddMemberRequest;

    fn validate(self) -> Result<Self, Status> {
        if self.node_id == 0 {
            return Err(Status::invalid_argument("node_id must be at least 1"));
        }
        let host_port = |a: &str| !a.is_empty() && a.len() <= 255 && a.rsplit_once(':').is_some();
        if !host_port(&self.addr) {
            return Err(Status::invalid_argument(format!(
                "addr must be host:port, got {:?}",
                self.addr
            )));
        }
        if !self.peer_addr.is_empty() && !host_port(&self.peer_addr) {
            return Err(Status::invalid_argument(format!(
                "peer_addr must be host:port (or empty), got {:?}",
                self.peer_addr
            )));
        }
        Ok(self)
    }

    fn wants(_: &Self) -> Wants {
        Wants::Admin
    }
}

impl Validate for pb::StorageRequest {
    type Args = ();

    fn validate(self) -> Result<(), Status> {
        Ok(())
    }

    fn wants(_: &()) -> Wants {
        Wants::Admin
    }
}

/// Any node id may be asked for: one that is not a member gets NOT_FOUND from the leader.
impl Validate for pb::RemoveMemberRequest {
    type Args = u64;

    fn validate(self) -> Result<u64, Status> {
        Ok(self.node_id)
    }

    fn wants(_: &u64) -> Wants {
        Wants::Admin
    }
}

#[tonic::async_trait]
impl AdminService for AdminSvc {
    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.edge.authorize(req.extensions(), Wants::Admin)?;
        let (members, _) = self.members();
        let m = self.edge.raft.metrics().borrow().clone();
        let (leader_id, leader_addr) = match self.edge.leader() {
            Some((id, addr)) => (id, addr.unwrap_or_default()),
            None => (0, String::new()),
        };
        Ok(Response::new(pb::StatusResponse {
            node_id: self.edge.id,
            group_id: self.edge.group.0,
            state: format!("{:?}", m.state),
            term: m.current_term,
            leader_id,
            leader_addr,
            members,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            buffered_bytes: self.reader.group_state().buffered_bytes,
            volumes: self.reader.volume_count(),
            snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
            purged_index: m.purged.map(|l| l.index).unwrap_or(0),
            security: self.edge.access.mode.clone(),
        }))
    }

    async fn add_member(
        &self,
        req: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let forward = async |ch, m| AdminServiceClient::new(ch).add_member(m).await;
        let local = |msg| self.add_here(msg);
        self.edge
            .on_leader(OnLeader::Admin, req, forward, local)
            .await
    }

    async fn storage(
        &self,
        req: Request<pb::StorageRequest>,
    ) -> Result<Response<pb::StorageResponse>, Status> {
        let forward = async |ch, m| AdminServiceClient::new(ch).storage(m).await;
        let local = async |()| self.storage_here().await;
        self.edge
            .on_leader(OnLeader::Admin, req, forward, local)
            .await
    }

    async fn remove_member(
        &self,
        req: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let forward = async |ch, m| AdminServiceClient::new(ch).remove_member(m).await;
        let local = |id| self.remove_here(id);
        self.edge
            .on_leader(OnLeader::Admin, req, forward, local)
            .await
    }
}
