//! The one encoding of Raft entries, votes and state-machine records on disk and on the wire:
//! MessagePack through serde. Every group shares it, so a log written by one version of a group's
//! code is read by the next as long as its types evolve compatibly.

use serde::{Deserialize, Serialize};

/// Encodes a value Folio itself produced.
pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    rmp_serde::to_vec(v).expect("Folio's own types always serialize")
}

/// Decodes bytes that came from disk or the network.
pub fn decode<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, rmp_serde::decode::Error> {
    rmp_serde::from_slice(b)
}
