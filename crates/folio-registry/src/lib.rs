//! Folio's volume registry: which group serves each volume, and which region and members each
//! group has. It is its own Raft group on Folio's shared Raft plumbing ([`folio_raft`]: the
//! RocksDB log store, the peer transport, node start-up), with the small state machine in
//! [`state`]. It never links the write tier's state machine.
//!
//! Replicated: group registrations (region, members) and volume placements. Not replicated:
//! group liveness. Each registry leader keeps the time of every group's last heartbeat in memory;
//! a new leader starts with none and, for one group timeout, treats groups it has not heard from
//! yet as eligible, so a registry failover does not refuse placements while heartbeats arrive.

#![allow(clippy::result_large_err)]

pub mod metrics;
pub mod node;
pub mod service;
pub mod state;

use std::io::Cursor;

use folio_core::GroupId;
use serde::{Deserialize, Serialize};

pub use folio_core::ids::{valid_region, REGION_NAME_MAX};
pub use node::{RegistryConfig, RegistryNode};

/// The registry's own Raft group id on the wire: no write-tier group may use it, so peer traffic
/// can never cross between the registry and a group.
pub const REGISTRY_GROUP: GroupId = GroupId(u64::MAX);

/// Most members a registered group may list.
pub const GROUP_MEMBERS_MAX: usize = 16;
/// Longest member address.
pub const MEMBER_ADDR_MAX: usize = 256;
/// Most groups the registry records.
pub const GROUPS_MAX: usize = 10_000;

/// A registry command, replicated through the registry's Raft log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegCommand {
    /// Records a group, or updates its members. A group never changes region.
    RegisterGroup {
        group: u64,
        region: String,
        members: Vec<(u64, String)>,
    },
    /// Places a volume on a group, for good: placements never move or go away. Refused if the
    /// volume is placed already.
    AssignVolume { volume: [u8; 16], group: u64 },
    /// Records that a placed volume was deleted on its group: resolving it answers NOT_FOUND
    /// from then on, and its id is never placed again. The placement is kept as a tombstone.
    RetireVolume { volume: [u8; 16] },
}

/// The outcome of one command.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegResponse {
    /// Why the command changed nothing, when it was refused.
    pub refused: Option<String>,
}

openraft::declare_raft_types!(
    /// The registry's openraft types. Snapshots are the whole registry state, held in memory
    /// (it is small: one entry per volume and per group).
    pub RegTypes:
        D = RegCommand,
        R = RegResponse,
        NodeId = u64,
        Node = folio_raft::RaftNode,
        Entry = openraft::Entry<RegTypes>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The registry's Raft handle.
pub type RegRaft = openraft::Raft<RegTypes>;
