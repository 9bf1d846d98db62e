//! Folio's replicated state: the openraft type configuration, the commands a group replicates,
//! the RocksDB log store and state machine (one RocksDB instance per node, one column family per
//! kind of data), file-based snapshots, and Raft peer traffic over tonic.

// openraft's storage traits return its `StorageError` by value; its size is not ours to choose.
#![allow(clippy::result_large_err)]

pub mod command;
pub mod keys;
pub mod metrics;
pub mod network;
pub mod snapshot;
pub mod state;
pub mod store;

pub use command::{Command, CommandResult, Rejection, Request, Response};
pub use store::{open_store, LogStore, SegmentObject, StateMachine, StateReader, StoreError};

openraft::declare_raft_types!(
    /// Folio's openraft types: one log entry carries one [`Request`], a batch of client commands.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// What every Raft group Folio runs has in common, whatever its state machine: u64 node ids,
/// nodes known by address, openraft's own entry type (MessagePack-encoded in the log and on the
/// wire). The write tier ([`TypeConfig`]) and the registry both satisfy it, and share
/// [`LogStore`] and [`network`] through it.
pub trait GroupTypes:
    openraft::RaftTypeConfig<
    NodeId = u64,
    Node = openraft::BasicNode,
    Entry = openraft::Entry<Self>,
    AsyncRuntime = openraft::TokioRuntime,
>
{
}

impl<T> GroupTypes for T where
    T: openraft::RaftTypeConfig<
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<T>,
        AsyncRuntime = openraft::TokioRuntime,
    >
{
}

/// The Raft handle for a Folio group.
pub type Raft = openraft::Raft<TypeConfig>;
