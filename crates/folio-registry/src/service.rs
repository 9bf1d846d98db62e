//! The registry's gRPC API. Reads of placements are answered by any registry node that has the
//! answer; everything else (placing volumes, heartbeats, the health view) runs on the registry
//! leader: a follower forwards the call once, or answers UNAVAILABLE naming the leader.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use folio_auth::{Here, Need, NodeIdentity, Principal, VolumeOp, VolumeRef};
use folio_client::{Client, RetryPolicy};
use folio_core::VolumeId;
use folio_proto::channels::{Channel, Security};
use folio_proto::forward::{client_timeout, forward_timeout, Forwarder, Route};
use folio_proto::forwarded;
use folio_proto::registry::v1 as pb;
use folio_proto::registry::v1::registry_service_client::RegistryServiceClient;
use folio_proto::registry::v1::registry_service_server::{RegistryService, RegistryServiceServer};
use folio_raft::leadership::{Leadership, Watched};
use folio_raft::node::NodeSecurity;
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use tonic::metadata::MetadataMap;
use tonic::{Extensions, Request, Response, Status};

use crate::metrics;
use crate::state::{GroupRecord, SharedState};
use crate::{valid_region, RegCommand, RegRaft, GROUPS_MAX, GROUP_MEMBERS_MAX, MEMBER_ADDR_MAX};

/// Liveness settings.
#[derive(Clone, Copy, Debug)]
pub struct Liveness {
    /// How often groups are asked to send a heartbeat.
    pub heartbeat_interval: Duration,
    /// A group not heard from for this long is unhealthy.
    pub group_timeout: Duration,
}

/// What this leader has heard from each group (soft state: not replicated).
#[derive(Default)]
struct Heard {
    /// The Raft term this view belongs to; a new term starts a new view.
    term: u64,
    since: Option<Instant>,
    groups: HashMap<u64, (Instant, String)>,
}

pub struct RegistrySvc {
    id: u64,
    raft: RegRaft,
    state: SharedState,
    live: Liveness,
    heard: Mutex<Heard>,
    forward: Forwarder,
    /// Who leads, and whether this node still hears from it, for forwarding.
    leadership: Leadership,
    /// Retry policy for creating volumes on groups.
    group_policy: RetryPolicy,
    /// How this node calls groups and its leader.
    client: Security,
    /// Whether every call must carry a principal, and groups their certificates.
    required: bool,
    certs_required: bool,
    /// The node's security, in one line, for Status.
    mode: String,
}

/// How this service names its leader in refusals.
pub const LEADER: &str = "registry leader";

fn members_pb(m: &[(u64, String)]) -> Vec<pb::GroupMember> {
    m.iter()
        .map(|(id, a)| pb::GroupMember {
            node_id: *id,
            addr: a.clone(),
        })
        .collect()
}

fn client(ch: Channel) -> RegistryServiceClient<Channel> {
    RegistryServiceClient::new(ch)
}

/// Where [`RegistrySvc::at_leader`] left a call.
enum AtLeader<Req, Resp> {
    /// This node leads: the handler runs it.
    Here(Request<Req>),
    /// The leader answered it.
    Answered(Response<Resp>),
}

impl RegistrySvc {
    pub fn server(
        id: u64,
        raft: RegRaft,
        state: SharedState,
        live: Liveness,
        leadership: Leadership,
        security: &NodeSecurity,
    ) -> RegistryServiceServer<RegistrySvc> {
        RegistryServiceServer::new(RegistrySvc {
            id,
            raft,
            state,
            live,
            heard: Mutex::default(),
            forward: Forwarder::new(LEADER, security.client.clone()),
            leadership,
            group_policy: RetryPolicy {
                total_timeout: Duration::from_secs(10),
                ..RetryPolicy::default()
            },
            client: security.client.clone(),
            required: security.tokens_required() || security.tls.is_some(),
            certs_required: security.tls.is_some(),
            mode: security.mode.clone(),
        })
    }

    /// Checks that the caller may do what a call needs.
    fn authorize(&self, ext: &Extensions, needs: &[Need<'_>]) -> Result<(), Status> {
        let p = Principal::of(ext.get::<Principal>(), self.required)?;
        needs.iter().try_for_each(|n| p.check(n, Here::Registry))
    }

    /// The region a placed volume lives in, for region scopes.
    fn region_of(&self, volume: &[u8; 16]) -> Option<String> {
        self.location(volume).map(|l| l.region)
    }

    /// Checks a call on one placed (or not yet placed) volume.
    fn authorize_volume(
        &self,
        ext: &Extensions,
        volume: &[u8; 16],
        op: VolumeOp,
    ) -> Result<(), Status> {
        let id = hex(volume);
        let region = self.region_of(volume);
        self.authorize(
            ext,
            &[op.on(VolumeRef {
                id: &id,
                region: region.as_deref(),
            })],
        )
    }

    /// A heartbeat must come from a member of the group it speaks for, by its certificate,
    /// whenever nodes have certificates: otherwise anyone could rewrite a group's member
    /// addresses and send its clients elsewhere.
    /// A heartbeat comes from a member of the group it reports, or is one a registry node
    /// checked that way and forwarded to its leader.
    fn authorize_heartbeat(&self, req: &Request<pb::HeartbeatRequest>) -> Result<(), Status> {
        if !self.certs_required {
            return Ok(());
        }
        heartbeat_sender(
            req.get_ref(),
            req.extensions().get::<NodeIdentity>(),
            req.metadata().contains_key(folio_proto::meta::FORWARDED),
        )
    }

    fn leader(&self) -> Option<(u64, Option<String>)> {
        folio_raft::leader_of(&self.raft)
    }

    /// Where a call with metadata `md` runs: here (`None`), or at the leader (its id and the
    /// channel to it). A leader this node has not heard from within the election timeout is not
    /// forwarded to: the call is refused at once rather than held on a leader that may be gone.
    fn forwarding(&self, md: &MetadataMap) -> Result<Option<(u64, Channel)>, Status> {
        let leader = self.leader();
        let id = leader.as_ref().map_or(0, |(l, _)| *l);
        match self
            .forward
            .route(self.id, leader, md, "this registry node is not the leader")?
        {
            Route::Local => Ok(None),
            Route::Forward(ch) => match self.leadership.silent(id) {
                Some(s) => Err(s),
                None => Ok(Some((id, ch))),
            },
        }
    }

    /// Runs a call on the registry leader: gives `req` back when this node leads, or answers it
    /// with the leader's answer to `call`. The forwarded call gets three quarters of the
    /// client's time and is given up on if the leader falls silent; if leadership moves while
    /// the call is there, it goes where leadership went, once: back to the handler when this
    /// node now leads, else to the new leader. That repeats the call, as a client's own retry
    /// would (every registry call is safe to repeat).
    async fn at_leader<Req: Clone, Resp>(
        &self,
        req: Request<Req>,
        call: impl AsyncFn(
            RegistryServiceClient<Channel>,
            Request<Req>,
        ) -> Result<Response<Resp>, Status>,
    ) -> Result<AtLeader<Req, Resp>, Status> {
        let Some(to) = self.forwarding(req.metadata())? else {
            return Ok(AtLeader::Here(req));
        };
        let (md, ext, msg) = req.into_parts();
        let timeout = forward_timeout(client_timeout(&md));
        let send = async |(l, ch): (u64, Channel)| {
            let mut r = forwarded(msg.clone());
            r.set_timeout(timeout);
            self.leadership.watch(l, call(client(ch), r)).await
        };
        match send(to).await {
            Watched::Answered(r) => return r.map(AtLeader::Answered),
            Watched::Abandoned(s) => return Err(s),
            Watched::NewLeader => {}
        }
        metrics::FORWARDS_REROUTED.inc();
        let Some(to) = self.forwarding(&md)? else {
            return Ok(AtLeader::Here(Request::from_parts(md, ext, msg)));
        };
        match send(to).await {
            Watched::Answered(r) => r.map(AtLeader::Answered),
            Watched::Abandoned(s) => Err(s),
            Watched::NewLeader => Err(self.forward.not_leader(
                self.leader(),
                "registry leadership moved twice while the call was forwarded",
            )),
        }
    }

    /// The leader's view of group liveness, reset when the term changes.
    fn heard(&self) -> std::sync::MutexGuard<'_, Heard> {
        let term = self.raft.metrics().borrow().current_term;
        let mut h = self.heard.lock().expect("heard lock is never poisoned");
        if h.term != term || h.since.is_none() {
            *h = Heard {
                term,
                since: Some(Instant::now()),
                groups: HashMap::new(),
            };
        }
        h
    }

    /// Whether a group may receive new volumes. Heard from within the timeout: yes (`Some(true)`).
    /// Not heard from at all while this leader is younger than the timeout (heartbeats are still
    /// arriving after a registry failover): only if no group of the region has been heard from
    /// (`Some(false)`). Otherwise no (`None`).
    fn eligible(&self, h: &Heard, group: u64) -> Option<bool> {
        match h.groups.get(&group) {
            Some((at, _)) => (at.elapsed() <= self.live.group_timeout).then_some(true),
            None => h
                .since
                .is_some_and(|s| s.elapsed() <= self.live.group_timeout)
                .then_some(false),
        }
    }

    /// Answers a create whose volume is placed already (a retry, or a concurrent create with
    /// the same id): creating it on its group again is harmless and finishes a create whose
    /// first attempt was cut short.
    async fn finish_placed(
        &self,
        volume: VolumeId,
        region: &str,
        loc: pb::VolumeLocation,
    ) -> Result<Response<pb::CreateVolumeResponse>, Status> {
        if loc.region != region {
            return Err(Status::already_exists(format!(
                "volume {volume} already exists in region {:?}",
                loc.region
            )));
        }
        self.create_on_group(volume, &loc).await?;
        metrics::PLACEMENTS.with_label_values(&["retried"]).inc();
        Ok(Response::new(pb::CreateVolumeResponse {
            location: Some(loc),
        }))
    }

    async fn propose(&self, cmd: RegCommand) -> Result<(), Status> {
        match self.raft.client_write(cmd).await {
            Ok(r) => match r.data.refused {
                None => Ok(()),
                Some(why) => Err(Status::failed_precondition(why)),
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(self
                .forward
                .not_leader(folio_raft::forward_target(f), "registry leadership changed")),
            Err(e) => Err(Status::unavailable(format!(
                "the registry could not replicate the change: {e}; retry"
            ))),
        }
    }

    async fn read_index(&self) -> Result<(), Status> {
        match self.raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(self.forward.not_leader(
                    folio_raft::forward_target(f),
                    "registry leadership changed during the read",
                ))
            }
            Err(e) => Err(Status::unavailable(format!(
                "registry read-index check failed: {e}; retry"
            ))),
        }
    }

    fn location(&self, volume: &[u8; 16]) -> Option<pb::VolumeLocation> {
        let s = self.state.read().expect("registry state lock");
        let g = *s.volumes.get(volume)?;
        let rec = s.groups.get(&g)?;
        let hint = self
            .heard
            .lock()
            .expect("heard lock is never poisoned")
            .groups
            .get(&g)
            .map(|(_, l)| l.clone())
            .unwrap_or_default();
        Some(location(volume, g, rec, hint))
    }

    fn retired(&self, volume: &[u8; 16]) -> bool {
        self.state
            .read()
            .expect("registry state lock")
            .retired
            .contains(volume)
    }

    /// A client of the group at `loc`: the leader hint first, then every member.
    fn group_client(&self, loc: &pb::VolumeLocation) -> Result<Client, Status> {
        let mut addrs: Vec<String> = Vec::new();
        if !loc.leader_hint.is_empty() {
            addrs.push(loc.leader_hint.clone());
        }
        addrs.extend(loc.members.iter().map(|m| m.addr.clone()));
        addrs.dedup();
        Client::secured(addrs, self.group_policy.clone(), self.client.clone())
            .map_err(|e| Status::internal(e.to_string()))
    }

    /// Creates the volume on its group.
    async fn create_on_group(
        &self,
        volume: VolumeId,
        loc: &pb::VolumeLocation,
    ) -> Result<(), Status> {
        let group = self.group_client(loc)?;
        match group.create_volume(Some(volume)).await {
            Ok(_) | Err(folio_client::Error::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(Status::unavailable(format!(
                "volume {volume} is placed on group {} but the group could not create it yet \
                 ({e}); retry with the same volume id",
                loc.group_id
            ))),
        }
    }
}

fn retired_id(volume: VolumeId) -> Status {
    Status::failed_precondition(format!(
        "volume id {volume} belonged to a volume that was deleted; ids are never reused, choose \
         another"
    ))
}

fn location(volume: &[u8; 16], g: u64, rec: &GroupRecord, hint: String) -> pb::VolumeLocation {
    pb::VolumeLocation {
        volume_id: Bytes::copy_from_slice(volume),
        group_id: g,
        region: rec.region.clone(),
        members: members_pb(&rec.members),
        leader_hint: hint,
    }
}

fn valid_addr(what: &str, a: &str) -> Result<(), Status> {
    if a.is_empty() || a.len() > MEMBER_ADDR_MAX || a.contains([',', ' ', '/']) {
        return Err(Status::invalid_argument(format!(
            "{what} {a:?} is not a host:port of at most {MEMBER_ADDR_MAX} bytes"
        )));
    }
    Ok(())
}

fn validate_heartbeat(m: &pb::HeartbeatRequest) -> Result<(), Status> {
    valid_region(&m.region).map_err(Status::invalid_argument)?;
    if m.group_id > folio_core::GroupId::MAX {
        return Err(Status::invalid_argument(format!(
            "group id {} is not below 2^48",
            m.group_id
        )));
    }
    if m.members.is_empty() || m.members.len() > GROUP_MEMBERS_MAX {
        return Err(Status::invalid_argument(format!(
            "a group lists 1 to {GROUP_MEMBERS_MAX} members, not {}",
            m.members.len()
        )));
    }
    let mut ids: Vec<u64> = m.members.iter().map(|x| x.node_id).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != m.members.len() || ids.contains(&0) {
        return Err(Status::invalid_argument(
            "member node ids must be distinct and at least 1",
        ));
    }
    for x in &m.members {
        valid_addr("member address", &x.addr)?;
    }
    if !m.leader_addr.is_empty() {
        valid_addr("leader address", &m.leader_addr)?;
    }
    Ok(())
}

fn hex(volume: &[u8; 16]) -> String {
    VolumeId::from_slice(volume)
        .map(|v| v.to_string())
        .unwrap_or_default()
}

fn volume_bytes(b: &[u8]) -> Result<[u8; 16], Status> {
    b.try_into().map_err(|_| {
        Status::invalid_argument(format!("volume_id must be 16 bytes, not {}", b.len()))
    })
}

#[tonic::async_trait]
impl RegistryService for RegistrySvc {
    async fn create_volume(
        &self,
        req: Request<pb::CreateVolumeRequest>,
    ) -> Result<Response<pb::CreateVolumeResponse>, Status> {
        valid_region(&req.get_ref().region).map_err(Status::invalid_argument)?;
        if !req.get_ref().volume_id.is_empty() {
            volume_bytes(&req.get_ref().volume_id)?;
        }
        self.authorize(req.extensions(), &[Need::Create(&req.get_ref().region)])?;
        let req = match self
            .at_leader(req, async |mut c, r| c.create_volume(r).await)
            .await?
        {
            AtLeader::Here(req) => req,
            AtLeader::Answered(r) => return Ok(r),
        };
        let msg = req.into_inner();
        let region = msg.region;
        let volume = if msg.volume_id.is_empty() {
            VolumeId::new_random()
        } else {
            VolumeId::from_slice(&msg.volume_id)
                .map_err(|e| Status::invalid_argument(format!("volume_id: {e}")))?
        };
        let vb = *volume.as_bytes();
        if self.retired(&vb) {
            return Err(retired_id(volume));
        }
        if let Some(loc) = self.location(&vb) {
            return self.finish_placed(volume, &region, loc).await;
        }
        // The least-loaded eligible group of the region (ties: the lowest id), preferring groups
        // this leader has heard from over ones it has not heard from yet.
        let (group, rec, known) = {
            let s = self.state.read().expect("registry state lock");
            let h = self.heard();
            let in_region: Vec<u64> = s
                .groups
                .iter()
                .filter(|(_, g)| g.region == region)
                .map(|(id, _)| *id)
                .collect();
            if in_region.is_empty() {
                let mut regions: Vec<&str> = s.groups.values().map(|g| g.region.as_str()).collect();
                regions.sort_unstable();
                regions.dedup();
                metrics::PLACEMENTS.with_label_values(&["refused"]).inc();
                return Err(Status::not_found(format!(
                    "unknown region {region:?}; regions with groups: [{}]",
                    regions.join(", ")
                )));
            }
            let best = in_region
                .iter()
                .filter_map(|g| Some((self.eligible(&h, *g)?, *g)))
                .min_by_key(|(heard, g)| {
                    (!heard, s.volume_counts.get(g).copied().unwrap_or(0), *g)
                });
            match best {
                Some((_, g)) => (g, s.groups[&g].clone(), in_region.len()),
                None => {
                    metrics::PLACEMENTS.with_label_values(&["refused"]).inc();
                    return Err(Status::unavailable(format!(
                        "no healthy group in region {region:?}: {} registered, none heard from \
                         in the last {:?}; retry",
                        in_region.len(),
                        self.live.group_timeout
                    )));
                }
            }
        };
        // The placement is committed first and for good, so the registry never forgets a volume
        // a group may have created. If creating it on the group fails (or its outcome is
        // unknown), the answer is UNAVAILABLE and a retry with the same id finishes it.
        if let Err(e) = self
            .propose(RegCommand::AssignVolume { volume: vb, group })
            .await
        {
            // A concurrent create with the same id placed it first.
            if let Some(loc) = self.location(&vb) {
                return self.finish_placed(volume, &region, loc).await;
            }
            return Err(e);
        }
        let hint = self
            .heard()
            .groups
            .get(&group)
            .map(|(_, l)| l.clone())
            .unwrap_or_default();
        let loc = location(&vb, group, &rec, hint);
        self.create_on_group(volume, &loc).await?;
        metrics::PLACEMENTS.with_label_values(&["placed"]).inc();
        tracing::info!(%volume, group, region = %region, groups_in_region = known, "volume placed");
        Ok(Response::new(pb::CreateVolumeResponse {
            location: Some(loc),
        }))
    }

    async fn resolve_volume(
        &self,
        req: Request<pb::ResolveVolumeRequest>,
    ) -> Result<Response<pb::VolumeLocation>, Status> {
        let volume = volume_bytes(&req.get_ref().volume_id)?;
        self.authorize_volume(req.extensions(), &volume, VolumeOp::Read)?;
        // Placements never move, so any replica that has one may answer. A miss is only
        // trusted from the leader after a read-index check: a follower may be behind.
        if let Some(loc) = self.location(&volume) {
            if self.retired(&volume) {
                return Err(Status::not_found(format!(
                    "volume {} was deleted",
                    VolumeId::from_slice(&volume)
                        .map(|v| v.to_string())
                        .unwrap_or_default()
                )));
            }
            metrics::RESOLVES.with_label_values(&["local"]).inc();
            return Ok(Response::new(loc));
        }
        if let AtLeader::Answered(r) = self
            .at_leader(req, async |mut c, r| c.resolve_volume(r).await)
            .await?
        {
            return Ok(r);
        }
        self.read_index().await?;
        let found = self.location(&volume);
        metrics::RESOLVES
            .with_label_values(&[if found.is_some() {
                "confirmed"
            } else {
                "not_found"
            }])
            .inc();
        found.map(Response::new).ok_or_else(|| {
            Status::not_found(format!(
                "volume {} is not known to the registry",
                VolumeId::from_slice(&volume)
                    .map(|v| v.to_string())
                    .unwrap_or_default()
            ))
        })
    }

    async fn delete_volume(
        &self,
        req: Request<pb::DeleteVolumeRequest>,
    ) -> Result<Response<pb::DeleteVolumeResponse>, Status> {
        let vb = volume_bytes(&req.get_ref().volume_id)?;
        self.authorize_volume(req.extensions(), &vb, VolumeOp::Write)?;
        if let AtLeader::Answered(r) = self
            .at_leader(req, async |mut c, r| c.delete_volume(r).await)
            .await?
        {
            return Ok(r);
        }
        let volume = VolumeId::from_slice(&vb).expect("16 bytes");
        self.read_index().await?;
        let Some(loc) = self.location(&vb) else {
            return Err(Status::not_found(format!(
                "volume {volume} is not known to the registry"
            )));
        };
        if self.retired(&vb) {
            return Ok(Response::new(pb::DeleteVolumeResponse {
                already_deleted: true,
            }));
        }
        // The group deletes first: a placement is retired only once nothing can write to it.
        let group = self.group_client(&loc)?;
        let already = match group.delete_volume(volume).await {
            Ok(already) => already,
            // Never created on its group (a create cut short): nothing to delete there.
            Err(folio_client::Error::NotFound(_)) => false,
            Err(e) => {
                return Err(Status::unavailable(format!(
                    "group {} could not delete volume {volume} ({e}); retry",
                    loc.group_id
                )))
            }
        };
        self.propose(RegCommand::RetireVolume { volume: vb })
            .await?;
        tracing::info!(%volume, group = loc.group_id, "volume deleted");
        Ok(Response::new(pb::DeleteVolumeResponse {
            already_deleted: already,
        }))
    }

    async fn fork_volume(
        &self,
        req: Request<pb::ForkVolumeRequest>,
    ) -> Result<Response<pb::ForkVolumeResponse>, Status> {
        let source = volume_bytes(&req.get_ref().source_volume_id)?;
        if !req.get_ref().volume_id.is_empty() {
            volume_bytes(&req.get_ref().volume_id)?;
        }
        self.authorize_volume(req.extensions(), &source, VolumeOp::Read)?;
        if let Some(region) = self.region_of(&source) {
            self.authorize(req.extensions(), &[Need::Create(&region)])?;
        }
        let req = match self
            .at_leader(req, async |mut c, r| c.fork_volume(r).await)
            .await?
        {
            AtLeader::Here(req) => req,
            AtLeader::Answered(r) => return Ok(r),
        };
        let msg = req.into_inner();
        let volume = if msg.volume_id.is_empty() {
            VolumeId::new_random()
        } else {
            VolumeId::from_slice(&msg.volume_id).expect("checked above")
        };
        let source_id = VolumeId::from_slice(&source).expect("16 bytes");
        let vb = *volume.as_bytes();
        if self.retired(&vb) {
            return Err(retired_id(volume));
        }
        self.read_index().await?;
        let Some(src) = self.location(&source) else {
            return Err(Status::not_found(format!(
                "volume {source_id} is not known to the registry"
            )));
        };
        if self.retired(&source) {
            return Err(Status::not_found(format!("volume {source_id} was deleted")));
        }
        // Placed first, on the source's group (a fork shares its source's segments), so the
        // registry never forgets a volume the group may have created.
        match self.location(&vb) {
            Some(loc) if loc.group_id != src.group_id => {
                return Err(Status::already_exists(format!(
                    "volume {volume} already exists on group {}",
                    loc.group_id
                )))
            }
            Some(_) => {}
            None => {
                if let Err(e) = self
                    .propose(RegCommand::AssignVolume {
                        volume: vb,
                        group: src.group_id,
                    })
                    .await
                {
                    if self
                        .location(&vb)
                        .is_none_or(|l| l.group_id != src.group_id)
                    {
                        return Err(e);
                    }
                }
            }
        }
        let loc = self.location(&vb).expect("placed above");
        let group = self.group_client(&loc)?;
        let at = msg.at_lsn.map(folio_core::Lsn);
        let at = match group.fork_volume(source_id, at, Some(volume)).await {
            Ok((_, at)) => at,
            Err(folio_client::Error::AlreadyExists(_)) => {
                // A retry whose first attempt forked: the fork point is the fork's base.
                match msg.at_lsn {
                    Some(at) => folio_core::Lsn(at),
                    None => {
                        return Err(Status::already_exists(format!(
                            "volume {volume} exists already; name the fork point to retry"
                        )))
                    }
                }
            }
            Err(e @ (folio_client::Error::Invalid { .. } | folio_client::Error::NotFound(_))) => {
                return Err(e.into_status())
            }
            Err(e) => {
                return Err(Status::unavailable(format!(
                    "volume {volume} is placed on group {} but the group could not fork it yet \
                     ({e}); retry with the same volume id",
                    loc.group_id
                )))
            }
        };
        metrics::PLACEMENTS.with_label_values(&["forked"]).inc();
        tracing::info!(%volume, source = %source_id, at = at.0, group = loc.group_id, "volume forked");
        Ok(Response::new(pb::ForkVolumeResponse {
            location: Some(loc),
            at_lsn: at.0,
        }))
    }

    async fn list_groups(
        &self,
        req: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        self.authorize(req.extensions(), &[Need::Admin])?;
        if let AtLeader::Answered(r) = self
            .at_leader(req, async |mut c, r| c.list_groups(r).await)
            .await?
        {
            return Ok(r);
        }
        self.read_index().await?;
        let s = self.state.read().expect("registry state lock");
        let h = self.heard();
        let groups = s
            .groups
            .iter()
            .map(|(id, g)| {
                let heard = h.groups.get(id);
                pb::GroupInfo {
                    group_id: *id,
                    region: g.region.clone(),
                    members: members_pb(&g.members),
                    leader_hint: heard.map(|(_, l)| l.clone()).unwrap_or_default(),
                    healthy: heard.is_some_and(|(at, _)| at.elapsed() <= self.live.group_timeout),
                    last_heartbeat_ms_ago: heard
                        .map(|(at, _)| at.elapsed().as_millis() as u64)
                        .unwrap_or(0),
                    volumes: s.volume_counts.get(id).copied().unwrap_or(0),
                }
            })
            .collect();
        let mut regions: Vec<String> = s.groups.values().map(|g| g.region.clone()).collect();
        regions.sort();
        regions.dedup();
        Ok(Response::new(pb::ListGroupsResponse { groups, regions }))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        validate_heartbeat(req.get_ref())?;
        self.authorize_heartbeat(&req)?;
        let req = match self
            .at_leader(req, async |mut c, r| c.heartbeat(r).await)
            .await?
        {
            AtLeader::Here(req) => req,
            AtLeader::Answered(r) => return Ok(r),
        };
        let m = req.into_inner();
        let mut members: Vec<(u64, String)> =
            m.members.into_iter().map(|x| (x.node_id, x.addr)).collect();
        members.sort();
        let known = {
            let s = self.state.read().expect("registry state lock");
            match s.groups.get(&m.group_id) {
                Some(g) if g.region != m.region => {
                    return Err(Status::failed_precondition(format!(
                        "group {} is registered in region {:?}, not {:?}: a group cannot move \
                         (its volumes would move with it); give it a new group id",
                        m.group_id, g.region, m.region
                    )))
                }
                Some(g) => g.members == members,
                None if s.groups.len() >= GROUPS_MAX => {
                    return Err(Status::resource_exhausted(format!(
                        "the registry holds its maximum of {GROUPS_MAX} groups"
                    )))
                }
                None => false,
            }
        };
        metrics::HEARTBEATS
            .with_label_values(&[if known { "seen" } else { "registered" }])
            .inc();
        if !known {
            tracing::info!(group = m.group_id, region = %m.region, ?members, "registering group");
            self.propose(RegCommand::RegisterGroup {
                group: m.group_id,
                region: m.region,
                members,
            })
            .await?;
        }
        self.heard()
            .groups
            .insert(m.group_id, (Instant::now(), m.leader_addr));
        Ok(Response::new(pb::HeartbeatResponse {
            interval_ms: self.live.heartbeat_interval.as_millis() as u64,
        }))
    }

    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.authorize(req.extensions(), &[Need::Admin])?;
        let m = self.raft.metrics().borrow().clone();
        let (leader_id, leader_addr) = match self.leader() {
            Some((id, a)) => (id, a.unwrap_or_default()),
            None => (0, String::new()),
        };
        let s = self.state.read().expect("registry state lock");
        Ok(Response::new(pb::StatusResponse {
            node_id: self.id,
            state: format!("{:?}", m.state),
            term: m.current_term,
            leader_id,
            leader_addr,
            members: m
                .membership_config
                .membership()
                .nodes()
                .map(|(id, n)| pb::GroupMember {
                    node_id: *id,
                    addr: n.addr.clone(),
                })
                .collect(),
            applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            groups: s.groups.len() as u64,
            volumes: (s.volumes.len() - s.retired.len()) as u64,
            security: self.mode.clone(),
        }))
    }
}

/// Whether a heartbeat may be accepted from the peer certificate `id` when certificates are
/// required: from a member of the group it reports, naming itself among the members it lists, or
/// from a registry node forwarding one (its own check ran where the heartbeat arrived).
fn heartbeat_sender(
    m: &pb::HeartbeatRequest,
    id: Option<&NodeIdentity>,
    forwarded: bool,
) -> Result<(), Status> {
    match id {
        Some(NodeIdentity::Member { group, node })
            if *group == m.group_id && m.members.iter().any(|x| x.node_id == *node) =>
        {
            Ok(())
        }
        Some(NodeIdentity::Registry { .. }) if forwarded => Ok(()),
        Some(id) => Err(Status::permission_denied(format!(
            "a heartbeat for group {} must come from one of its members; the certificate \
             names {id}",
            m.group_id
        ))),
        None => Err(Status::unauthenticated(
            "heartbeats need the sending member's Folio node certificate",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(group: u64, members: &[u64]) -> pb::HeartbeatRequest {
        pb::HeartbeatRequest {
            group_id: group,
            region: "r".into(),
            members: members
                .iter()
                .map(|&n| pb::GroupMember {
                    node_id: n,
                    addr: format!("10.0.0.{n}:7070"),
                })
                .collect(),
            leader_addr: "10.0.0.1:7070".into(),
        }
    }

    fn code(r: Result<(), Status>) -> Option<tonic::Code> {
        r.err().map(|s| s.code())
    }

    #[test]
    fn heartbeats_come_only_from_the_groups_own_members() {
        let m = |group, node| NodeIdentity::Member { group, node };
        let b = beat(7, &[1, 2, 3]);
        assert_eq!(code(heartbeat_sender(&b, Some(&m(7, 2)), false)), None);
        // No certificate at all.
        let no_cert = heartbeat_sender(&b, None, false);
        assert_eq!(code(no_cert), Some(tonic::Code::Unauthenticated));
        // A node of another group cannot rewrite group 7's addresses.
        let other_group = heartbeat_sender(&b, Some(&m(8, 2)), false);
        assert_eq!(code(other_group), Some(tonic::Code::PermissionDenied));
        // A group-7 certificate for a node the heartbeat does not list as a member.
        let not_listed = heartbeat_sender(&b, Some(&m(7, 4)), false);
        assert_eq!(code(not_listed), Some(tonic::Code::PermissionDenied));
        // A registry node may forward one to its leader, but may not originate one.
        let r = NodeIdentity::Registry { node: 1 };
        assert_eq!(code(heartbeat_sender(&b, Some(&r), true)), None);
        let unforwarded = heartbeat_sender(&b, Some(&r), false);
        assert_eq!(code(unforwarded), Some(tonic::Code::PermissionDenied));
        // The forwarded marker does not help a member of another group.
        let marked = heartbeat_sender(&b, Some(&m(8, 1)), true);
        assert_eq!(code(marked), Some(tonic::Code::PermissionDenied));
    }
}
