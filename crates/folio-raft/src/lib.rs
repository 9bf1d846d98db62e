//! Folio's Raft plumbing, shared by every Raft group it runs (the write tier's groups and the
//! volume registry) whatever their state machine: the [`GroupTypes`] every group's type
//! configuration satisfies, the RocksDB [`LogStore`], peer traffic over tonic ([`network`]),
//! the MessagePack [`codec`] for entries and metadata, one-time [`bootstrap_once`],
//! [`leader_of`], and a node's liveness and readiness ([`health`]). This crate knows no state machine: a group's crate brings its own.

// openraft's storage traits return its `StorageError` by value; its size is not ours to choose.
#![allow(clippy::result_large_err)]

pub mod codec;
pub mod health;
pub mod keys;
pub mod log_store;
pub mod metrics;
pub mod network;
pub mod node;

pub use log_store::LogStore;

/// What every Raft group Folio runs has in common, whatever its state machine: u64 node ids,
/// nodes known by address, openraft's own entry type (MessagePack-encoded in the log and on the
/// wire). The write tier's and the registry's type configurations both satisfy it, and share
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

/// The leader of `raft`'s group as this node sees it: its id, and its address when known.
pub fn leader_of<C: GroupTypes>(raft: &openraft::Raft<C>) -> Option<(u64, Option<String>)> {
    let m = raft.metrics();
    let m = m.borrow();
    let l = m.current_leader?;
    Some((
        l,
        m.membership_config
            .membership()
            .get_node(&l)
            .map(|n| n.addr.clone()),
    ))
}

/// The leader named by openraft's "forward to the leader" error: its id, and its address when
/// known, in the same shape as [`leader_of`].
pub fn forward_target(
    f: openraft::error::ForwardToLeader<u64, openraft::BasicNode>,
) -> Option<(u64, Option<String>)> {
    let addr = f.leader_node.map(|n| n.addr);
    f.leader_id.map(|l| (l, addr))
}

/// Initializing a group failed.
#[derive(Debug, thiserror::Error)]
#[error("bootstrap: {0}")]
pub struct BootstrapError(String);

/// Initializes the group with `initial` (node id, address) as its members, once: only on the
/// member with the lowest id, and only if this node's store has never been initialized. `me`'s
/// own entry is announced as `advertise`. Returns whether this call initialized the group.
pub async fn bootstrap_once<C: GroupTypes>(
    raft: &openraft::Raft<C>,
    me: u64,
    advertise: &str,
    initial: &[(u64, String)],
) -> Result<bool, BootstrapError> {
    let lowest = initial.iter().map(|(id, _)| *id).min();
    if lowest != Some(me) {
        return Ok(false);
    }
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| BootstrapError(e.to_string()))?;
    if initialized {
        return Ok(false);
    }
    let members: std::collections::BTreeMap<u64, openraft::BasicNode> = initial
        .iter()
        .map(|(id, addr)| {
            let a = if *id == me { advertise } else { addr.as_str() };
            (*id, openraft::BasicNode::new(a))
        })
        .collect();
    tracing::info!(node = me, ?members, "bootstrapping the group");
    raft.initialize(members)
        .await
        .map_err(|e| BootstrapError(e.to_string()))?;
    Ok(true)
}
