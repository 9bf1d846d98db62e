//! Folio's gRPC API: the code generated from `proto/`, and the conversions between proto messages
//! and the validated domain types of `folio-core`. Requests are validated here, once; every layer
//! below works with types that cannot be malformed.

pub mod channels;
pub mod codec;
pub mod convert;
pub mod forward;

pub mod volume {
    pub mod v1 {
        tonic::include_proto!("folio.volume.v1");
    }
}
pub mod raft {
    pub mod v1 {
        tonic::include_proto!("folio.raft.v1");
    }
}
pub mod admin {
    pub mod v1 {
        tonic::include_proto!("folio.admin.v1");
    }
}
pub mod registry {
    pub mod v1 {
        tonic::include_proto!("folio.registry.v1");
    }
}

/// Encoded file descriptors of every Folio proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("folio_descriptor");

/// Metadata keys Folio sets on error statuses.
pub mod meta {
    /// On `ABORTED` (CAS conflict): the volume's current LSN, decimal.
    pub const CURRENT_LSN: &str = "folio-current-lsn";
    /// On `UNAVAILABLE` from a node that is not the leader: the leader's address, when known.
    pub const LEADER_ADDR: &str = "folio-leader-addr";
    /// Set by a node that forwards a call to its leader, so the call is forwarded at most once.
    pub const FORWARDED: &str = "folio-forwarded";
    /// On `NOT_FOUND` from a group that does not serve the volume: the group that does, its
    /// region, and its members' addresses (comma-separated), as the registry knows them.
    pub const HOME_GROUP: &str = "folio-home-group";
    pub const HOME_REGION: &str = "folio-home-region";
    pub const HOME_MEMBERS: &str = "folio-home-members";
}

/// A request marked as forwarded once by a non-leader, so it is never forwarded again.
pub fn forwarded<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        meta::FORWARDED,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    r
}

/// UNAVAILABLE from a node that is not its group's leader, naming the leader (`who`, e.g.
/// "leader" or "registry leader") and carrying its address in [`meta::LEADER_ADDR`] when known,
/// so clients retry there.
pub fn not_leader(leader: Option<(u64, Option<String>)>, who: &str, why: &str) -> tonic::Status {
    let (msg, addr) = match &leader {
        Some((id, Some(a))) => (
            format!("{why}; the {who} is node {id} at {a}; retry there"),
            Some(a.clone()),
        ),
        Some((id, None)) => (format!("{why}; the {who} is node {id}; retry"), None),
        None => (
            format!("{why}; no {who} is known yet (election in progress); retry"),
            None,
        ),
    };
    let mut s = tonic::Status::unavailable(msg);
    if let Some(a) = addr.and_then(|a| a.parse().ok()) {
        s.metadata_mut().insert(meta::LEADER_ADDR, a);
    }
    s
}
