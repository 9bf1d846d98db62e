//! Where a client call runs: locally on the leader, forwarded once to the leader, or refused with
//! a retryable status that names the leader. Also the single place where internal errors become
//! gRPC statuses.

use std::sync::Arc;
use std::time::Duration;

use folio_core::GroupId;
use folio_proto::channels::ChannelCache;
use folio_proto::meta;
use folio_raft::{Raft, Rejection, StateReader};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::batcher::{Batcher, WriteError};
use crate::config::{FlushConfig, ReadConfig};
use crate::flusher::FlushDemand;
use crate::pages::PageReader;

/// How long a forwarded call may take at the leader.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// What every service of a node shares.
pub struct Shared {
    pub id: u64,
    pub group: GroupId,
    pub raft: Raft,
    pub reader: StateReader,
    pub batcher: Batcher,
    pub flush: FlushConfig,
    pub flush_demand: Arc<FlushDemand>,
    /// One permit per WatchVolume stream this node may serve.
    pub watch_slots: Arc<tokio::sync::Semaphore>,
    /// Page bytes of writes admitted past the buffer check and not yet applied.
    pub buffer_reserved: std::sync::atomic::AtomicU64,
    pub pages: PageReader,
    pub read: ReadConfig,
    pub channels: ChannelCache,
    /// The volume registry, when the group is linked to one.
    pub registry: Option<Arc<crate::registry::RegistryLink>>,
}

pub enum Route {
    Local,
    Forward(Channel),
}

impl Shared {
    /// The channel cache for forwarding to the leader.
    pub fn forward_channels() -> ChannelCache {
        ChannelCache::new(Duration::from_secs(1), Some(FORWARD_TIMEOUT))
    }

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

    /// Decides where a call runs. A call that was already forwarded once is never forwarded
    /// again: it is answered with the leader's address instead, so forwarding cannot loop.
    pub fn route(&self, md: &MetadataMap) -> Result<Route, Status> {
        match self.leader() {
            Some((l, _)) if l == self.id => Ok(Route::Local),
            Some((l, Some(addr))) if !md.contains_key(meta::FORWARDED) => Ok(Route::Forward(
                self.channels
                    .get(&addr)
                    .map_err(|e| not_leader(Some((l, Some(addr))), &e))?,
            )),
            other => Err(not_leader(other, "this node is not the leader")),
        }
    }
}

/// Marks a request as forwarded.
pub use folio_proto::forwarded;

/// UNAVAILABLE, naming the leader when known, so clients can retry there.
pub fn not_leader(leader: Option<(u64, Option<String>)>, why: &str) -> Status {
    folio_proto::not_leader(leader, "leader", why)
}

impl From<WriteError> for Status {
    fn from(e: WriteError) -> Status {
        match e {
            WriteError::NotLeader { leader } => not_leader(
                leader.map(|(id, a)| (id, Some(a))),
                "leadership changed before the write was proposed",
            ),
            other => Status::unavailable(other.to_string()),
        }
    }
}

pub fn rejection_status(r: Rejection) -> Status {
    let msg = r.to_string();
    match r {
        Rejection::UnknownVolume(_) => Status::not_found(msg),
        Rejection::VolumeExists(_) => Status::already_exists(msg),
        Rejection::Conflict { current, .. } => {
            let mut s = Status::aborted(msg);
            s.metadata_mut()
                .insert(meta::CURRENT_LSN, MetadataValue::from(current.0));
            s
        }
        Rejection::KeyReused { .. } | Rejection::BadRef { .. } => Status::invalid_argument(msg),
    }
}

pub fn internal(what: &str, e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "{what}");
    Status::new(Code::Internal, format!("{what}: {e}"))
}
