//! Folio's Raft plumbing, shared by every Raft group it runs (the write tier's groups and the
//! volume registry) whatever their state machine: the [`GroupTypes`] every group's type
//! configuration satisfies, the [`LogStore`] (entries in a [`seglog`] of their own, the vote in
//! RocksDB), peer traffic over tonic ([`network`]),
//! the MessagePack [`codec`] for entries and metadata, one-time [`bootstrap_once`],
//! [`leader_of`], elections with pre-vote and check-quorum ([`elect`]), a node's liveness and
//! readiness ([`health`]), and what a member watches while it forwards a call to its leader
//! ([`leadership`]). This crate knows no state machine: a group's crate brings its own.

// openraft's storage traits return its `StorageError` by value; its size is not ours to choose.
#![allow(clippy::result_large_err)]

pub mod blocking;
pub mod codec;
pub mod elect;
pub mod health;
pub mod keys;
pub mod leadership;
pub mod log_store;
pub mod metrics;
pub mod network;
pub mod node;
pub mod seglog;

pub use log_store::LogStore;

/// A member as the group's membership records it: `addr`, where clients and forwarded calls
/// reach it, and `peer_addr`, where its own peer listener takes Raft traffic (`peer_listen_addr`),
/// when it has one; without, peers dial `addr`.
///
/// Stored in every membership entry and snapshot. Without `peer_addr` it encodes exactly as
/// openraft's `BasicNode` did (a one-field array), so logs written before it decode unchanged and
/// builds before it read what this one writes for members without a peer listener; a member with
/// one is written as a two-field array (the codec's appended-field rule).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RaftNode {
    pub addr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_addr: Option<String>,
}

impl RaftNode {
    /// A member that takes peer traffic on its client address.
    pub fn new(addr: impl Into<String>) -> RaftNode {
        RaftNode {
            addr: addr.into(),
            peer_addr: None,
        }
    }

    /// A member with its own peer listener at `peer_addr`, when given.
    pub fn with_peer(addr: impl Into<String>, peer_addr: Option<String>) -> RaftNode {
        RaftNode {
            addr: addr.into(),
            peer_addr: peer_addr.filter(|p| !p.is_empty()),
        }
    }

    /// Where peers send Raft messages to this member.
    pub fn peer(&self) -> &str {
        self.peer_addr.as_deref().unwrap_or(&self.addr)
    }
}

impl std::fmt::Display for RaftNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.peer_addr {
            Some(p) => write!(f, "{} (peers: {p})", self.addr),
            None => f.write_str(&self.addr),
        }
    }
}

/// What every Raft group Folio runs has in common, whatever its state machine: u64 node ids,
/// nodes known by address, openraft's own entry type (MessagePack-encoded in the log and on the
/// wire). The write tier's and the registry's type configurations both satisfy it, and share
/// [`LogStore`] and [`network`] through it.
pub trait GroupTypes:
    openraft::RaftTypeConfig<
    NodeId = u64,
    Node = RaftNode,
    Entry = openraft::Entry<Self>,
    AsyncRuntime = openraft::TokioRuntime,
>
{
}

impl<T> GroupTypes for T where
    T: openraft::RaftTypeConfig<
        NodeId = u64,
        Node = RaftNode,
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

/// Resolves once `raft`'s core has stopped (openraft quits it on a fatal error, such as a log
/// write that failed with ENOSPC), with the reason. Long-lived calls select on it so that they
/// end with UNAVAILABLE instead of waiting forever on a node that will apply nothing more.
///
/// It waits on openraft's server metrics, which change only with the vote, the role, the leader
/// or the membership, and close when the core stops: not on the full metrics, which openraft
/// publishes on every pass of its loop (several times per commit), so the waiter does not wake
/// on every write. The reason is read from the full metrics, where the core leaves it.
pub async fn core_stopped<C: GroupTypes>(raft: &openraft::Raft<C>) -> String {
    let reason = || match &raft.metrics().borrow().running_state {
        Err(e) => Some(e.to_string()),
        Ok(()) => None,
    };
    let mut server = raft.server_metrics();
    loop {
        if let Some(why) = reason() {
            return why;
        }
        if server.changed().await.is_err() {
            return reason().unwrap_or_else(|| "the Raft core has stopped".into());
        }
    }
}

/// [`core_stopped`] for any number of waiters: one task waits on the Raft metrics and publishes
/// the reason once, so that each long-lived call (a WatchVolume stream) wakes only when the core
/// stops, not on every metrics change. Must be called inside a Tokio runtime.
pub fn stop_signal<C: GroupTypes>(
    raft: openraft::Raft<C>,
) -> tokio::sync::watch::Receiver<Option<String>> {
    let (tx, rx) = tokio::sync::watch::channel(None);
    tokio::spawn(async move {
        let why = core_stopped(&raft).await;
        tx.send_replace(Some(why));
    });
    rx
}

/// Who leads, as a node sees it: its current term and the leader it knows at that term.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderView {
    pub term: u64,
    pub leader: Option<u64>,
}

/// This node's [`LeaderView`], published on a watch channel by one task that watches openraft's
/// server metrics (they change only with the vote, the role, the leader or the membership, not
/// on every commit as the full metrics do) and sends only changes: waiters (writes in flight,
/// forwarded calls) wake when the leadership changes. Once the Raft core stops, the view names
/// no leader. Must be called inside a Tokio runtime.
pub fn leader_watch<C: GroupTypes>(
    raft: openraft::Raft<C>,
) -> tokio::sync::watch::Receiver<LeaderView> {
    let view = |m: &openraft::metrics::RaftServerMetrics<u64, RaftNode>| LeaderView {
        term: m.vote.leader_id().get_term(),
        leader: m.current_leader,
    };
    let mut m = raft.server_metrics();
    let stopped = raft.metrics().borrow().running_state.is_err();
    let mut first = view(&m.borrow_and_update());
    if stopped {
        first.leader = None;
    }
    let (tx, rx) = tokio::sync::watch::channel(first);
    tokio::spawn(async move {
        loop {
            // The core closes the channel when it stops.
            if m.changed().await.is_err() {
                tx.send_modify(|v| v.leader = None);
                return;
            }
            let now = view(&m.borrow_and_update());
            tx.send_if_modified(|cur| std::mem::replace(cur, now) != now);
        }
    });
    rx
}

/// The leader named by openraft's "forward to the leader" error: its id, and its address when
/// known, in the same shape as [`leader_of`].
pub fn forward_target(
    f: openraft::error::ForwardToLeader<u64, RaftNode>,
) -> Option<(u64, Option<String>)> {
    let addr = f.leader_node.map(|n| n.addr);
    f.leader_id.map(|l| (l, addr))
}

/// Initializing a group failed.
#[derive(Debug, thiserror::Error)]
#[error("bootstrap: {0}")]
pub struct BootstrapError(String);

/// Initializes the group with `initial` as its members, once: only on the member with the lowest
/// id, and only if this node's store has never been initialized. `me`'s own entry is announced
/// as `advertise`. Returns whether this call initialized the group.
pub async fn bootstrap_once<C: GroupTypes>(
    raft: &openraft::Raft<C>,
    me: u64,
    advertise: &RaftNode,
    initial: &[(u64, RaftNode)],
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
    let members: std::collections::BTreeMap<u64, RaftNode> = initial
        .iter()
        .map(|(id, node)| {
            let n = if *id == me { advertise } else { node };
            (*id, n.clone())
        })
        .collect();
    tracing::info!(node = me, ?members, "bootstrapping the group");
    raft.initialize(members)
        .await
        .map_err(|e| BootstrapError(e.to_string()))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::RaftNode;
    use crate::codec::{decode, encode};

    #[test]
    fn a_node_without_a_peer_listener_is_a_basic_node() {
        let basic = openraft::BasicNode::new("10.0.0.1:7070");
        let node = RaftNode::new("10.0.0.1:7070");
        assert_eq!(encode(&node), encode(&basic));
        assert_eq!(decode::<RaftNode>(&encode(&basic)).unwrap(), node);
        assert_eq!(node.peer(), "10.0.0.1:7070");
    }

    #[test]
    fn a_peer_address_is_an_appended_field() {
        let node = RaftNode::with_peer("10.0.0.1:7070", Some("10.0.0.1:7080".into()));
        assert_eq!(decode::<RaftNode>(&encode(&node)).unwrap(), node);
        assert_eq!(node.peer(), "10.0.0.1:7080");
        assert_eq!(node.to_string(), "10.0.0.1:7070 (peers: 10.0.0.1:7080)");
        // An empty peer address is none.
        assert_eq!(
            RaftNode::with_peer("a:1", Some(String::new())),
            RaftNode::new("a:1")
        );
    }
}
