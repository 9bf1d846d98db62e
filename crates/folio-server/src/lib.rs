//! A Folio node: the gRPC services (client API, admin, Raft peer traffic), group commit, config
//! and metrics, around the replicated state of `folio-raft`.

pub mod admin;
pub mod batcher;
pub mod config;
pub mod flusher;
pub mod metrics;
pub mod node;
pub mod objstore;
pub mod pages;
pub mod registry;
pub mod route;
pub mod service;

pub use config::Config;
pub use node::Node;
