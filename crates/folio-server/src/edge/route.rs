//! Leader routing at the edge: who leads, where a call runs (here, forwarded once to the leader,
//! or refused), and the read-index check that makes a leader's answer linearizable.

use folio_proto::channels::Channel;
use folio_proto::forward::Route;
use folio_proto::forwarded;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::{status, Edge};

/// Where a call runs, decided before its request is validated so that the request is copied only
/// when it must be forwarded: on the leader its payload moves into the validated arguments.
pub(super) enum Target<Req> {
    /// This node leads: the call runs here.
    Local,
    /// The call goes to the leader once, with this copy of the request.
    Forward(Channel, Req),
    /// No leader to run or forward the call; answered with this status, but only after the
    /// request was validated, so bad input gets its own status even from a follower.
    Refused(Status),
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

    /// Decides where a call with metadata `md` runs (see `folio_proto::forward`).
    pub fn route(&self, md: &MetadataMap) -> Result<Route, Status> {
        self.forward
            .route(self.id, self.leader(), md, "this node is not the leader")
    }

    /// [`Edge::route`], keeping a copy of `msg` only when it is to be forwarded.
    pub(super) fn target<Req: Clone>(&self, md: &MetadataMap, msg: &Req) -> Target<Req> {
        match self.route(md) {
            Ok(Route::Local) => Target::Local,
            Ok(Route::Forward(ch)) => Target::Forward(ch, msg.clone()),
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
}

impl<Req> Target<Req> {
    /// Runs the call where it belongs: `local` with the validated arguments here, or `forward`
    /// with the leader's channel and the request marked as forwarded.
    pub(super) async fn run<A, Resp, F, L>(
        self,
        args: A,
        forward: F,
        local: L,
    ) -> Result<Resp, Status>
    where
        F: AsyncFnOnce(Channel, Request<Req>) -> Result<Response<Resp>, Status>,
        L: AsyncFnOnce(A) -> Result<Resp, Status>,
    {
        match self {
            Target::Local => local(args).await,
            Target::Forward(ch, msg) => forward(ch, forwarded(msg)).await.map(Response::into_inner),
            Target::Refused(s) => Err(s),
        }
    }
}
