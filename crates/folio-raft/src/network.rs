//! Raft peer traffic over tonic. Requests and responses are openraft's own types, MessagePack
//! encoded inside a `RaftMessage` that carries the group id. Message sizes are bounded on both
//! sides by [`PEER_MESSAGE_BYTES_MAX`]; the server's openraft config keeps entries per message
//! small enough to fit (see `folio-server`'s config).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use folio_auth::{NodeIdentity, Principal};
use folio_core::GroupId;
use folio_proto::channels::Channel;
use folio_proto::channels::{ChannelCache, Security};
use folio_proto::raft::v1::raft_service_client::RaftServiceClient;
use folio_proto::raft::v1::raft_service_server::{RaftService, RaftServiceServer};
use folio_proto::raft::v1::RaftMessage;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::AnyError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Code, Request, Status};

use std::marker::PhantomData;

use crate::codec::{decode, encode};
use crate::elect::{self, PreVoteRequest, PreVoteResponse, Voter};
use crate::health::Health;
use crate::{GroupTypes, RaftNode};

/// Largest Raft peer message, either way. Large enough for `max_payload_entries` full batches.
pub const PEER_MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Connect timeout for a peer; openraft's own TTLs bound each call.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Creates peer clients, sharing one HTTP/2 channel per peer address. Generic over the group's
/// types: the write tier and the registry use the same transport.
pub struct Network<C> {
    group: GroupId,
    channels: Arc<ChannelCache>,
    _types: PhantomData<fn() -> C>,
}

impl<C> Clone for Network<C> {
    fn clone(&self) -> Self {
        Network {
            group: self.group,
            channels: self.channels.clone(),
            _types: PhantomData,
        }
    }
}

impl<C: GroupTypes> Network<C> {
    /// `security`: TLS with this node's certificate, when it has one.
    pub fn new(group: GroupId, security: Security) -> Self {
        Network {
            group,
            channels: Arc::new(ChannelCache::secured(CONNECT_TIMEOUT, None, security)),
            _types: PhantomData,
        }
    }
}

impl<C: GroupTypes> Network<C> {
    /// Asks `target` (at `node`) for a pre-vote, within `ttl`. A node that does not know the
    /// call (a build before pre-vote, during a rolling upgrade) counts as a yes: its own vote
    /// handling still applies openraft's lease when the real vote comes.
    pub(crate) async fn pre_vote(
        &self,
        target: u64,
        node: &RaftNode,
        req: &PreVoteRequest,
        ttl: Duration,
    ) -> Result<PreVoteResponse, String> {
        let ch = self.channels.get(node.peer())?;
        let mut client = RaftServiceClient::new(ch);
        let mut r = Request::new(RaftMessage {
            group_id: self.group.0,
            payload: Bytes::from(encode(req)),
            target_node_id: target,
            data: Bytes::new(),
        });
        r.set_timeout(ttl);
        match client.pre_vote(r).await {
            Ok(m) => decode(&m.into_inner().payload).map_err(|e| e.to_string()),
            Err(s) if s.code() == Code::Unimplemented => Ok(PreVoteResponse {
                granted: true,
                term: 0,
                reason: String::new(),
            }),
            Err(s) => Err(format!("{}: {}", s.code(), s.message())),
        }
    }
}

impl<C: GroupTypes> RaftNetworkFactory<C> for Network<C> {
    type Network = PeerClient<C>;

    async fn new_client(&mut self, target: u64, node: &RaftNode) -> PeerClient<C> {
        let client = self.channels.get(node.peer()).map(|c| {
            RaftServiceClient::new(c)
                .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX)
        });
        PeerClient {
            target,
            group: self.group,
            client,
            _types: PhantomData,
        }
    }
}

/// Calls to one peer.
pub struct PeerClient<C> {
    target: u64,
    group: GroupId,
    client: Result<RaftServiceClient<Channel>, String>,
    _types: PhantomData<fn() -> C>,
}

type RpcErr<E> = RPCError<u64, RaftNode, RaftError<u64, E>>;

#[derive(Clone, Copy)]
enum Kind {
    Append,
    Vote,
    Snapshot,
}

impl<C: GroupTypes> PeerClient<C> {
    async fn call<Req, Resp, E>(
        &mut self,
        kind: Kind,
        req: &Req,
        data: Bytes,
        option: &RPCOption,
    ) -> Result<Resp, RpcErr<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = match &mut self.client {
            Ok(c) => c,
            Err(e) => {
                return Err(RPCError::Unreachable(Unreachable::new(&AnyError::error(
                    e.clone(),
                ))))
            }
        };
        let mut r = Request::new(RaftMessage {
            group_id: self.group.0,
            payload: Bytes::from(encode(req)),
            target_node_id: self.target,
            data,
        });
        r.set_timeout(option.hard_ttl());
        let res = match kind {
            Kind::Append => client.append_entries(r).await,
            Kind::Vote => client.vote(r).await,
            Kind::Snapshot => client.install_snapshot(r).await,
        };
        let msg = res.map_err(|s| status_to_rpc_error(&s))?.into_inner();
        let out: Result<Resp, RaftError<u64, E>> =
            decode(&msg.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        out.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

fn status_to_rpc_error<E: std::error::Error>(s: &Status) -> RpcErr<E> {
    let e = AnyError::error(format!("{}: {}", s.code(), s.message()));
    match s.code() {
        // Connection refused or reset: openraft backs off from unreachable peers.
        Code::Unavailable => RPCError::Unreachable(Unreachable::new(&e)),
        _ => RPCError::Network(NetworkError::new(&e)),
    }
}

impl<C: GroupTypes> RaftNetwork<C> for PeerClient<C> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RpcErr<openraft::error::Infallible>> {
        self.call(Kind::Append, &rpc, Bytes::new(), &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<C>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RpcErr<InstallSnapshotError>> {
        {
            // The chunk travels raw; MessagePack would encode a Vec<u8> as an array of integers.
            let mut rpc = rpc;
            let data = Bytes::from(std::mem::take(&mut rpc.data));
            self.call(Kind::Snapshot, &rpc, data, &option).await
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RpcErr<openraft::error::Infallible>> {
        self.call(Kind::Vote, &rpc, Bytes::new(), &option).await
    }
}

/// Which nodes may send this node Raft messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peers {
    /// Members of this write-tier group (`spiffe://folio/group/<g>/node/<n>`).
    Group(u64),
    /// Registry nodes (`spiffe://folio/registry/node/<n>`).
    Registry,
}

impl Peers {
    /// The node id `id` has as a peer of this group, if it is one.
    fn node(&self, id: &NodeIdentity) -> Option<u64> {
        match (self, id) {
            (Peers::Group(g), NodeIdentity::Member { group, node }) if g == group => Some(*node),
            (Peers::Registry, NodeIdentity::Registry { node }) => Some(*node),
            _ => None,
        }
    }
}

/// The server side of peer traffic: hands requests to the local Raft.
pub struct PeerService<C: GroupTypes> {
    raft: openraft::Raft<C>,
    group: GroupId,
    node: u64,
    /// Told of every AppendEntries accepted from a leader, for readiness.
    health: Health,
    peers: Peers,
    /// Whether a message must come with a peer's certificate (TLS is on).
    certs_required: bool,
    /// What pre-vote answers need beyond the Raft state.
    voter: Voter,
}

impl<C: GroupTypes> PeerService<C> {
    /// `peers`: whose certificates this node accepts messages from, when `certs_required`;
    /// `voter`: from [`crate::node::start_raft`].
    pub fn new(
        raft: openraft::Raft<C>,
        group: GroupId,
        node: u64,
        health: Health,
        peers: Peers,
        certs_required: bool,
        voter: Voter,
    ) -> RaftServiceServer<Self> {
        RaftServiceServer::new(PeerService {
            raft,
            group,
            node,
            health,
            peers,
            certs_required,
            voter,
        })
        .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX)
    }

    /// The node id of the peer that sent `r`, as its certificate says, and whether it is in this
    /// node's membership (voter or learner; a node whose membership is still empty, new and
    /// waiting to be added, counts every peer of its group in). `None` when certificates are not
    /// required and none was presented.
    fn sender(&self, r: &Request<RaftMessage>) -> Result<Option<(u64, bool)>, Status> {
        let id = match r.extensions().get::<Principal>() {
            Some(Principal::Node(id)) => *id,
            _ if !self.certs_required => return Ok(None),
            _ => {
                return Err(Status::unauthenticated(
                    "Raft peer calls need a Folio node certificate",
                ))
            }
        };
        let Some(node) = self.peers.node(&id) else {
            return Err(Status::permission_denied(format!(
                "{id} is not a peer of this group"
            )));
        };
        let m = self.raft.metrics().borrow().membership_config.clone();
        let mut members = m.membership().nodes().map(|(id, _)| *id).peekable();
        let member = members.peek().is_none() || members.any(|n| n == node);
        Ok(Some((node, member)))
    }

    /// Refuses a message whose vote names another node than the certificate that sent it (a
    /// member speaks only for itself), and one from a node outside this node's membership,
    /// unless `leading` and its vote is at least this node's: a leader this node has not yet
    /// learned of (the entry that added it is among those it sends). A removed node's vote
    /// requests are refused, so it cannot disturb the group by campaigning.
    fn admit(
        &self,
        sender: Option<(u64, bool)>,
        vote: &openraft::Vote<u64>,
        leading: bool,
    ) -> Result<(), Status> {
        let Some((n, member)) = sender else {
            return Ok(());
        };
        if vote.leader_id().voted_for() != Some(n) {
            return Err(Status::permission_denied(format!(
                "node {n} sent a message on behalf of node {:?}",
                vote.leader_id().voted_for()
            )));
        }
        let current = self.raft.metrics().borrow().vote;
        let new_leader = leading && *vote >= current;
        if !member && !new_leader {
            return Err(Status::permission_denied(format!(
                "node {n} is not a member of this group"
            )));
        }
        Ok(())
    }

    /// Checks that the message is for this group and this node; returns the decoded request and
    /// the raw data field.
    fn open<T: DeserializeOwned>(&self, r: Request<RaftMessage>) -> Result<(T, Bytes), Status> {
        let m = r.into_inner();
        if m.group_id != self.group.0 {
            return Err(Status::failed_precondition(format!(
                "this node belongs to group {}, not {}",
                self.group, m.group_id
            )));
        }
        if m.target_node_id != self.node {
            return Err(Status::failed_precondition(format!(
                "this is node {}, not node {}",
                self.node, m.target_node_id
            )));
        }
        let req = decode(&m.payload)
            .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))?;
        Ok((req, m.data))
    }

    fn reply<T: Serialize>(&self, v: &T) -> Result<tonic::Response<RaftMessage>, Status> {
        Ok(tonic::Response::new(RaftMessage {
            group_id: self.group.0,
            payload: Bytes::from(encode(v)),
            target_node_id: 0,
            data: Bytes::new(),
        }))
    }
}

#[tonic::async_trait]
impl<C: GroupTypes> RaftService for PeerService<C> {
    async fn append_entries(
        &self,
        r: Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, Status> {
        let sender = self.sender(&r)?;
        let (req, _): (AppendEntriesRequest<C>, _) = self.open(r)?;
        self.admit(sender, &req.vote, true)?;
        let (vote, commit) = (req.vote, req.leader_commit.map(|l| l.index));
        let res = self.raft.append_entries(req).await;
        // Accepted (or in conflict, which still means the sender leads this node's term):
        // this node hears from its leader.
        if let Ok(r) = &res {
            if !matches!(r, openraft::raft::AppendEntriesResponse::HigherVote(_)) {
                let l = vote.leader_id();
                self.health
                    .heard_from_leader(l.get_term(), l.voted_for().unwrap_or(0), commit);
            }
        }
        self.reply(&res)
    }

    async fn vote(&self, r: Request<RaftMessage>) -> Result<tonic::Response<RaftMessage>, Status> {
        let sender = self.sender(&r)?;
        let (req, _): (VoteRequest<u64>, _) = self.open(r)?;
        self.admit(sender, &req.vote, false)?;
        let res = self.raft.vote(req).await;
        self.reply(&res)
    }

    async fn pre_vote(
        &self,
        r: Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, Status> {
        let sender = self.sender(&r)?;
        let (req, _): (PreVoteRequest, _) = self.open(r)?;
        self.admit(sender, &openraft::Vote::new(req.term, req.candidate), false)?;
        let res = elect::answer(&self.raft, &self.voter, &req).await;
        self.reply(&res)
    }

    async fn install_snapshot(
        &self,
        r: Request<RaftMessage>,
    ) -> Result<tonic::Response<RaftMessage>, Status> {
        let sender = self.sender(&r)?;
        let (mut req, data): (InstallSnapshotRequest<C>, _) = self.open(r)?;
        self.admit(sender, &req.vote, true)?;
        req.data = data.to_vec();
        let res = self.raft.install_snapshot(req).await;
        self.reply(&res)
    }
}
