//! Records the state machine keeps in RocksDB, one column family per kind.

use bytes::Bytes;
use folio_core::{Lsn, PageLocation, SegmentId};
use serde::{Deserialize, Serialize};

/// A volume's head: its latest LSN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeHead {
    pub lsn: Lsn,
    pub created_at_ms: u64,
}

/// One commit of a volume's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRecord {
    pub lsn: Lsn,
    pub idempotency_key: Bytes,
    pub fingerprint: u128,
    pub committed_at_ms: u64,
    pub pages: Vec<PageLocation>,
}

/// What an idempotency key maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdemRecord {
    pub lsn: Lsn,
    pub fingerprint: u128,
}

/// The group's segment bookkeeping, replicated so every replica assigns the same offsets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    /// The segment new pages go to, and the byte offset of its next page.
    pub open: Option<OpenSegment>,
    /// Sequence number of the next segment this group opens.
    pub next_segment_seq: u32,
    /// Latest entry time seen; segment ids use max(this, entry time) so they never go back.
    pub last_time_ms: u64,
    /// Page bytes held in the local buffer (not yet in the object store).
    pub buffered_bytes: u64,
    /// Segments that reached the size limit and were closed, oldest first, not yet flushed.
    pub sealed: Vec<SealedSegment>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenSegment {
    pub id: SegmentId,
    pub next_offset: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSegment {
    pub id: SegmentId,
    pub bytes: u64,
}
