//! Folio's gRPC API: the code generated from `proto/`, and the conversions between proto messages
//! and the validated domain types of `folio-core`. Requests are validated here, once; every layer
//! below works with types that cannot be malformed.

pub mod channels;
pub mod convert;

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
