//! A write-tier node: the gRPC services (client API, admin, Raft peer traffic), group commit, the
//! flusher, page reads, config and metrics, around the replicated state of `folio-state`, started
//! on the shared node plumbing of `folio-raft`.

pub mod admin;
pub mod batcher;
pub mod checkpointer;
pub mod config;
pub mod edge;
pub mod flusher;
pub mod history;
pub mod identity;
pub mod lifecycle;
pub mod metrics;
pub mod node;
pub mod objstore;
pub mod pages;
pub mod registry;
pub mod restore;
pub mod service;

pub use config::Config;
pub use node::Node;

/// Wall-clock milliseconds since the Unix epoch, as the leader stamps entries and records; 0 if
/// the clock is before 1970.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
