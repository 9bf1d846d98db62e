//! Folio's security, shared by every node and client: TLS settings and the node identities in
//! certificates (`tls`, `identity`), scoped bearer tokens (`token`, `scope`), the gRPC layer
//! that authenticates every call and the check of what a call needs (`layer`), where a client's
//! token comes from (`client`), and a CA for development and tests (`dev`).
//!
//! The design and threat model are in `docs/rfcs/0005-security.md`.

pub mod client;
pub mod dev;
pub mod identity;
pub mod layer;
pub mod scope;
pub mod tls;
pub mod token;

pub use client::TokenSource;
pub use identity::NodeIdentity;
pub use layer::{Authenticator, Here, Principal};
pub use scope::{Need, Scope, VolumeOp, VolumeRef};
pub use tls::{ClientTls, TlsConfig, TlsMaterial};
pub use token::{AuthConfig, Verifier};
