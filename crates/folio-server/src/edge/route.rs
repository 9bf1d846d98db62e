//! Leader routing at the edge: who leads, where a call runs (here, forwarded once to the leader,
//! or refused), and the read-index check that makes a leader's answer linearizable.

use folio_proto::channels::Channel;
use folio_proto::forward::Route;
use folio_proto::forwarded;
use folio_raft::leadership::Watched;
use std::time::Duration;
use tonic::metadata::MetadataMap;

use tonic::{Request, Response, Status};

use super::{status, Edge};
use crate::metrics;

/// Where a call runs, decided before its request is validated so that the request is copied only
/// when it must be forwarded: on the leader its payload moves into the validated arguments.
pub(super) enum Target<Req> {
    /// This node leads: the call runs here.
    Local,
    /// The call goes to the leader once, with this copy of the request (and of its metadata,
    /// should the call have to go to a new leader instead).
    Forward(Forwarding<Req>),
    /// No leader to run or forward the call; answered with this status, but only after the
    /// request was validated, so bad input gets its own status even from a follower.
    Refused(Status),
}

/// A call on its way to the leader.
pub(super) struct Forwarding<Req> {
    leader: u64,
    channel: Channel,
    msg: Req,
    md: MetadataMap,
}

impl Edge {
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    /// The current leader's id and address, if known.
    pub fn leader(&self) -> Option<(u64, Option<String>)> {
        folio_raft::leader_of(&self.raft)
    }

    pub fn is_leader(&self) -> bool {
        self.leader().is_some_and(|(l, _)| l == self.id)
    }

    /// Decides where a call with metadata `md` runs (see `folio_proto::forward`). A leader this
    /// node has not heard from within the election timeout is not forwarded to: the call is
    /// refused at once rather than held on a leader that may be gone.
    pub fn route(&self, md: &MetadataMap) -> Result<Route, Status> {
        self.route_to(self.leader(), md).map(|(r, _)| r)
    }

    /// [`Edge::route`] given the leader this node knows; also returns that leader's id when the
    /// call is to be forwarded to it.
    fn route_to(
        &self,
        leader: Option<(u64, Option<String>)>,
        md: &MetadataMap,
    ) -> Result<(Route, u64), Status> {
        let id = leader.as_ref().map_or(0, |(l, _)| *l);
        let route = self
            .forward
            .route(self.id, leader, md, "this node is not the leader")?;
        if let Route::Forward(_) = route {
            if let Some(s) = self.leadership.silent(id) {
                return Err(s);
            }
        }
        Ok((route, id))
    }

    /// [`Edge::route`], keeping a copy of `msg` only when it is to be forwarded.
    pub(super) fn target<Req: Clone>(&self, md: &MetadataMap, msg: &Req) -> Target<Req> {
        match self.route_to(self.leader(), md) {
            Ok((Route::Local, _)) => Target::Local,
            Ok((Route::Forward(channel), leader)) => Target::Forward(Forwarding {
                leader,
                channel,
                msg: msg.clone(),
                md: md.clone(),
            }),
            Err(s) => Target::Refused(s),
        }
    }

    /// Waits until this node, as leader, has applied everything committed before the call.
    pub async fn read_index(&self) -> Result<(), Status> {
        self.raft
            .ensure_linearizable()
            .await
            .map(|_| ())
            .map_err(status::read_index)
    }

    /// Sends a call to the leader and waits for its answer, but only while that node still leads
    /// and this node keeps hearing from it within the election timeout; the call gets
    /// [`folio_proto::forward::forward_timeout`] of the client's time.
    async fn forward_watched<Req, Resp, F>(
        &self,
        f: &Forwarding<Req>,
        client: Option<Duration>,
        forward: &F,
    ) -> Watched<Resp>
    where
        Req: Clone,
        F: AsyncFn(Channel, Request<Req>) -> Result<Response<Resp>, Status>,
    {
        let mut req = forwarded(f.msg.clone());
        req.set_timeout(folio_proto::forward::forward_timeout(client));
        let call = async {
            forward(f.channel.clone(), req)
                .await
                .map(Response::into_inner)
        };
        self.leadership.watch(f.leader, call).await
    }
}

impl<Req: Clone> Target<Req> {
    /// Runs the call where it belongs: `local` with the validated arguments here, or `forward`
    /// with the leader's channel and the request marked as forwarded. A forwarded call whose
    /// leader loses the leadership meanwhile goes where leadership went, once: here if this node
    /// now leads, else to the new leader. That repeats the call, as a client's own retry would
    /// (commits carry idempotency keys; reads change nothing).
    pub(super) async fn run<A, Resp, F, L>(
        self,
        edge: &Edge,
        client: Option<Duration>,
        args: A,
        forward: F,
        local: L,
    ) -> Result<Resp, Status>
    where
        F: AsyncFn(Channel, Request<Req>) -> Result<Response<Resp>, Status>,
        L: AsyncFnOnce(A) -> Result<Resp, Status>,
    {
        let f = match self {
            Target::Local => return local(args).await,
            Target::Refused(s) => return Err(s),
            Target::Forward(f) => f,
        };
        match edge.forward_watched(&f, client, &forward).await {
            Watched::Answered(r) => return r,
            Watched::Abandoned(s) => return Err(s),
            Watched::NewLeader => {}
        }
        metrics::FORWARDS_REROUTED.inc();
        match edge.target(&f.md, &f.msg) {
            Target::Local => local(args).await,
            Target::Refused(s) => Err(s),
            Target::Forward(again) => match edge.forward_watched(&again, client, &forward).await {
                Watched::Answered(r) => r,
                Watched::Abandoned(s) => Err(s),
                Watched::NewLeader => Err(status::not_leader(
                    edge.leader(),
                    "leadership moved twice while the call was forwarded",
                )),
            },
        }
    }
}
