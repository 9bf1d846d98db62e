//! The one mapping from a node's internal errors (write path, state machine rejections, local
//! store, object store, openraft) to the gRPC statuses clients see, with the metadata that tells
//! them what to do next: retry at the leader (`folio-leader-addr`), rebase (`folio-current-lsn`)
//! or go to the volume's home group (`folio-home-*`).

use folio_client::registry::pb::VolumeLocation;
use folio_core::{GroupId, Lsn, VolumeId};
use folio_proto::meta;
use folio_raft::RaftNode;
use folio_state::{CommandResult, Rejection};
use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::batcher::WriteError;
use crate::pages::ReadError;

/// How a write group's leader is named in statuses that refuse a call.
pub const LEADER: &str = "leader";

/// UNAVAILABLE, naming the leader when known, so clients can retry there.
pub fn not_leader(leader: Option<(u64, Option<String>)>, why: &str) -> Status {
    folio_proto::not_leader(leader, LEADER, why)
}

/// openraft's "this node is not the leader" as a status naming the leader it knows.
fn forward_to_leader(f: ForwardToLeader<u64, RaftNode>, why: &str) -> Status {
    not_leader(folio_raft::forward_target(f), why)
}

impl From<WriteError> for Status {
    fn from(e: WriteError) -> Status {
        let e_msg = e.to_string();
        match e {
            WriteError::NotLeader { leader } => not_leader(
                leader.map(|(id, a)| (id, Some(a))),
                "leadership changed before the write was proposed",
            ),
            WriteError::LeadershipLost { leader, .. } => not_leader(leader, &e_msg),
            other => Status::unavailable(other.to_string()),
        }
    }
}

/// A command the state machine refused: the caller's to fix or to rebase.
pub fn rejection(r: Rejection) -> Status {
    let msg = r.to_string();
    match r {
        Rejection::UnknownVolume(_) | Rejection::Deleted(_) => Status::not_found(msg),
        Rejection::VolumeExists(_) => Status::already_exists(msg),
        Rejection::Conflict { current, .. } => {
            let mut s = Status::aborted(msg);
            s.metadata_mut()
                .insert(meta::CURRENT_LSN, MetadataValue::from(current.0));
            s
        }
        Rejection::KeyReused { .. } | Rejection::BadRef { .. } => Status::invalid_argument(msg),
        Rejection::Restoring => Status::unavailable(msg),
        Rejection::RestoreRefused(_) | Rejection::IdRetired(_) | Rejection::ForkTooDeep(_) => {
            Status::failed_precondition(msg)
        }
        Rejection::ForkPoint { .. } => Status::out_of_range(msg),
    }
}

/// A failure that needs a human, logged here where it is handled.
pub fn internal(what: &str, e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "{what}");
    Status::new(Code::Internal, format!("{what}: {e}"))
}

/// The state machine answered a command with a result of another command.
pub fn unexpected(r: CommandResult) -> Status {
    internal("unexpected state machine result", format!("{r:?}"))
}

/// A failed read-index check.
pub fn read_index(e: RaftError<u64, CheckIsLeaderError<u64, RaftNode>>) -> Status {
    match e {
        RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => {
            forward_to_leader(f, "leadership changed during the read")
        }
        e => Status::unavailable(format!("read-index check failed: {e}; retry")),
    }
}

/// A membership change openraft did not make.
pub fn membership(e: RaftError<u64, ClientWriteError<u64, RaftNode>>) -> Status {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            forward_to_leader(f, "leadership changed")
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            Status::failed_precondition(format!("membership change refused: {c}"))
        }
        RaftError::Fatal(f) => Status::unavailable(format!("raft stopped: {f}")),
    }
}

/// Page bytes that could not be read: retry when the object store said so, a human otherwise.
pub fn read(e: ReadError) -> Status {
    match e {
        ReadError::Store(s) if s.is_retryable() => {
            Status::unavailable(format!("object store: {s}; retry"))
        }
        ReadError::Busy(s) => Status::unavailable(s),
        ReadError::NotRetained { .. } => Status::out_of_range(e.to_string()),
        ReadError::Deleted(_) => Status::not_found(e.to_string()),
        other => internal("read pages", other),
    }
}

/// A read of this replica's own state that failed: UNAVAILABLE while it installs a snapshot
/// (another member can answer), INTERNAL otherwise.
pub fn local_read(what: &str, e: folio_state::StoreError) -> Status {
    match e {
        folio_state::StoreError::Installing => Status::unavailable(e.to_string()),
        other => internal(what, other),
    }
}

/// No such volume in this group's applied state.
pub fn volume_not_found(volume: VolumeId) -> Status {
    Status::not_found(format!("volume {volume} does not exist"))
}

/// A volume DeleteVolume removed.
pub fn volume_deleted(volume: VolumeId) -> Status {
    Status::not_found(format!("volume {volume} was deleted"))
}

/// A snapshot below the volume's retention horizon.
pub fn not_retained(volume: VolumeId, lsn: Lsn, horizon: Lsn) -> Status {
    read(ReadError::NotRetained {
        volume,
        lsn,
        horizon,
    })
}

/// An LSN past the volume's head.
pub fn future_lsn(what: &str, lsn: u64, head: Lsn) -> Status {
    Status::out_of_range(format!(
        "{what} {lsn} is in the future: the volume's latest LSN is {head}"
    ))
}

/// NOT_FOUND for a volume that group `home.group_id` serves, not `mine`: it names that group and
/// carries its region and members, so the client goes there.
pub fn elsewhere(volume: VolumeId, mine: GroupId, home: &VolumeLocation) -> Status {
    let addrs: Vec<&str> = home.members.iter().map(|m| m.addr.as_str()).collect();
    let mut s = Status::not_found(format!(
        "volume {volume} is not served by group {mine}: it lives in group {} (region {}) at {}; \
         resolve it through the registry",
        home.group_id,
        home.region,
        addrs.join(", ")
    ));
    let md = s.metadata_mut();
    md.insert(meta::HOME_GROUP, MetadataValue::from(home.group_id));
    if let Ok(v) = home.region.parse() {
        md.insert(meta::HOME_REGION, v);
    }
    if let Ok(v) = addrs.join(",").parse() {
        md.insert(meta::HOME_MEMBERS, v);
    }
    s
}
