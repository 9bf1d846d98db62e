//! The edge of the gRPC services: what every call goes through once, so that a handler is only
//! the part that is its own. A call's request is validated (the proto → domain step of
//! `folio_proto::convert`) on whichever node receives it; the call then runs on the leader, is
//! forwarded once to it, or is refused naming it; reads on the leader pass a read-index check
//! first; and the answer is measured (latency, errors by code) and, when it is a NOT_FOUND for a
//! volume another group serves, turned into a redirect to that group.

mod route;
pub mod status;

use std::sync::Arc;
use std::time::Instant;

use folio_auth::{Here, Need, Principal, VolumeOp, VolumeRef};
use folio_core::{GroupId, VolumeId};
use folio_proto::channels::Channel;
use folio_proto::channels::Security;
use folio_proto::forward::Forwarder;
use folio_state::Raft;
use tonic::metadata::MetadataMap;
use tonic::{Code, Extensions, Request, Response, Status};
use tracing::Instrument;

pub use folio_proto::forward::Route;

use crate::metrics;
use crate::registry::RegistryLink;

/// What the edge knows about this node and its group: who it is, who leads, how to reach the
/// leader, and where the volume registry is.
pub struct Edge {
    pub id: u64,
    pub group: GroupId,
    pub raft: Raft,
    forward: Forwarder,
    /// The volume registry, when the group is linked to one.
    registry: Option<Arc<RegistryLink>>,
    pub access: Access,
    leadership: folio_raft::leadership::Leadership,
}

/// What the edge checks callers against.
#[derive(Clone, Debug)]
pub struct Access {
    /// The group's region: the region of every volume it serves, for region scopes.
    pub region: String,
    /// Whether every call must carry a principal (the node authenticates callers).
    pub required: bool,
    /// How this node calls the leader when it forwards.
    pub client: Security,
    /// The node's security, in one line, for admin Status.
    pub mode: String,
}

impl Access {
    /// No authentication: tests and tools that start services by hand.
    pub fn open(region: impl Into<String>) -> Access {
        Access {
            region: region.into(),
            required: false,
            client: Security::default(),
            mode: "INSECURE: no TLS, no client tokens".into(),
        }
    }
}

/// What a call needs, by the volumes it names.
#[derive(Clone, Copy, Debug)]
pub enum Wants {
    Read(VolumeId),
    Write(VolumeId),
    /// Create this volume in the group's region.
    Create,
    /// Read the source and create the fork in the group's region.
    Fork {
        source: VolumeId,
    },
    /// List the group's volumes.
    List,
    Admin,
}

/// What the edge does around a call that runs on the leader.
#[derive(Clone, Copy, Debug)]
pub enum OnLeader {
    /// A membership change (the admin API), not measured.
    Admin,
    /// A client call that changes the group, measured under this method name.
    Write(&'static str),
    /// A client read, measured under this method name. The leader runs it after a read-index
    /// check, so the answer is linearizable.
    Read(&'static str),
}

/// A request's proto → domain step, run once per call by the edge.
pub trait Validate: Sized {
    /// What the handler works with: values that cannot be malformed.
    type Args;

    /// Checks everything the client controls (through `folio_proto::convert`). By value, so
    /// that a write's pages move into its arguments.
    fn validate(self) -> Result<Self::Args, Status>;

    /// The volume the call is about: recorded on its span, and the volume a NOT_FOUND answer
    /// is redirected for.
    fn volume(_args: &Self::Args) -> Option<VolumeId> {
        None
    }

    /// What the caller needs the right to.
    fn wants(args: &Self::Args) -> Wants;
}

impl Edge {
    pub fn new(
        id: u64,
        group: GroupId,
        raft: Raft,
        registry: Option<Arc<RegistryLink>>,
        access: Access,
        leadership: folio_raft::leadership::Leadership,
    ) -> Edge {
        Edge {
            id,
            group,
            raft,
            forward: Forwarder::new(status::LEADER, access.client.clone()),
            registry,
            access,
            leadership,
        }
    }

    /// Checks that the caller (the principal the authentication layer left in `ext`) may do what
    /// a call wants; returns the principal.
    pub fn authorize(&self, ext: &Extensions, wants: Wants) -> Result<Principal, Status> {
        let p = Principal::of(ext.get::<Principal>(), self.access.required)?;
        let here = Here::Group(self.group.0);
        let region = self.access.region.as_str();
        let on = |v: VolumeId, op: VolumeOp| {
            let id = v.to_string();
            p.check(
                &op.on(VolumeRef {
                    id: &id,
                    region: Some(region),
                }),
                here,
            )
        };
        match wants {
            Wants::Read(v) => on(v, VolumeOp::Read)?,
            Wants::Write(v) => on(v, VolumeOp::Write)?,
            Wants::Create => p.check(&Need::Create(region), here)?,
            Wants::Fork { source } => {
                on(source, VolumeOp::Read)?;
                p.check(&Need::Create(region), here)?;
            }
            Wants::List => p.check(&Need::List(region), here)?,
            Wants::Admin => p.check(&Need::Admin, here)?,
        }
        Ok(p)
    }

    /// A call that runs on the leader. Its request is validated here, whichever node this is;
    /// then `local` runs it with the validated arguments on the leader, or `forward` sends it to
    /// the leader with the leader's channel and the request marked as forwarded, or it is
    /// refused naming the leader.
    pub async fn on_leader<Req, Resp, F, L>(
        &self,
        kind: OnLeader,
        req: Request<Req>,
        forward: F,
        local: L,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Validate + Clone,
        F: AsyncFn(Channel, Request<Req>) -> Result<Response<Resp>, Status>,
        L: AsyncFnOnce(Req::Args) -> Result<Resp, Status>,
    {
        let (md, ext, msg) = req.into_parts();
        let target = self.target(&md, &msg);
        let deadline = folio_proto::forward::client_timeout(&md);
        let run = async |args| {
            let local = async |args| {
                if let OnLeader::Read(_) = kind {
                    self.read_index().await?;
                }
                local(args).await
            };
            target.run(self, deadline, args, forward, local).await
        };
        match kind {
            OnLeader::Admin => {
                let args = msg.validate()?;
                self.authorize(&ext, Req::wants(&args))?;
                run(args).await.map(Response::new)
            }
            OnLeader::Write(method) | OnLeader::Read(method) => {
                let req = Request::from_parts(md, ext, msg);
                self.call(method, req, async |_, args| run(args).await)
                    .await
            }
        }
    }

    /// A client call, measured as `method`, that decides for itself where it runs: `body` gets
    /// the call's metadata (to route it) and its validated arguments.
    pub async fn call<Req, Resp, B>(
        &self,
        method: &'static str,
        req: Request<Req>,
        body: B,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Validate,
        B: AsyncFnOnce(MetadataMap, Req::Args) -> Result<Resp, Status>,
    {
        let started = Instant::now();
        let span = tracing::info_span!(
            "rpc",
            method,
            node = self.id,
            term = self.term(),
            volume = tracing::field::Empty
        );
        let mut volume = None;
        let res = async {
            let (md, ext, msg) = req.into_parts();
            let args = msg.validate()?;
            volume = Req::volume(&args);
            if let Some(v) = &volume {
                tracing::Span::current().record("volume", tracing::field::display(v));
            }
            self.authorize(&ext, Req::wants(&args))?;
            body(md, args).await
        }
        .instrument(span)
        .await;
        observe(method, started, &res);
        match (res, volume) {
            (Err(s), Some(v)) => Err(self.redirect(v, s).await),
            (res, _) => res,
        }
        .map(Response::new)
    }

    /// `status` as the caller should see it: a NOT_FOUND for a volume that another group serves
    /// (when this group is linked to the registry) becomes a NOT_FOUND naming that group.
    /// Anything else, and any failure to ask the registry, passes through unchanged.
    pub async fn redirect(&self, volume: VolumeId, status: Status) -> Status {
        let Some(link) = &self.registry else {
            return status;
        };
        if status.code() != Code::NotFound {
            return status;
        }
        match link.home(volume).await {
            Some(home) if home.group_id != self.group.0 => {
                status::elsewhere(volume, self.group, &home)
            }
            _ => status,
        }
    }
}

/// Records latency and errors for one call.
fn observe<T>(method: &'static str, started: Instant, res: &Result<T, Status>) {
    metrics::REQUEST_SECONDS
        .with_label_values(&[method])
        .observe(started.elapsed().as_secs_f64());
    if let Err(s) = res {
        metrics::REQUEST_ERRORS
            .with_label_values(&[method, &format!("{:?}", s.code())])
            .inc();
    }
}
