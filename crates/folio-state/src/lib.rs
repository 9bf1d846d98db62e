//! The write tier's replicated state: the openraft type configuration, the commands a group
//! replicates, and the state machine on RocksDB (one instance per node, one column family per
//! kind of data, beside the Raft log of [`folio_raft`]): applying commands, snapshots, building
//! segment objects, and the read side that serves clients.

// openraft's storage traits return its `StorageError` by value; its size is not ours to choose.
#![allow(clippy::result_large_err)]

mod apply;
mod checkpoint;
pub mod command;
mod db;
pub mod keys;
pub mod lifecycle;
mod machine;
pub mod metrics;
mod reader;
pub mod runs;
mod segment_object;
mod signals;
pub mod snapshot;
pub mod state;

pub use apply::wait_for_background_compaction;
pub use checkpoint::{BuiltRun, CheckpointPlan, PlanCounts};
pub use command::{
    Command, CommandResult, Rejection, Request, Response, RestoreStep, RestoredCommit,
};
pub use db::{open_store, StoreError};
pub use machine::StateMachine;
pub use reader::StateReader;
pub use segment_object::SegmentObject;
pub use signals::{VolumeSignals, VolumeWatch};

openraft::declare_raft_types!(
    /// Folio's openraft types: one log entry carries one [`Request`], a batch of client commands.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = folio_raft::RaftNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle for a write-tier group.
pub type Raft = openraft::Raft<TypeConfig>;

/// The write tier's log store: [`folio_raft`]'s, with this crate's types.
pub type LogStore = folio_raft::LogStore<TypeConfig>;
