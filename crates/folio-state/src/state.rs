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
    /// The segment that carries this record to the object store.
    pub segment: SegmentId,
}

/// What an idempotency key maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdemRecord {
    pub lsn: Lsn,
    pub fingerprint: u128,
    /// The segment that carries the commit record, so a retry is answered after the record has
    /// left the node (checkpointed). Absent in records written before it existed.
    #[serde(default)]
    pub segment: Option<SegmentId>,
}

/// The group's current checkpoint: manifest version `seq` in the object store, whose runs hold
/// the page index and commit records of every segment up to and including `through`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRef {
    pub seq: u64,
    pub through: SegmentId,
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
    /// Segments that were closed (full, or sealed by the flusher), oldest first, not yet in the
    /// object store.
    pub sealed: Vec<SealedSegment>,
    /// Segments flushed so far.
    pub flushed_segments: u64,
    /// The latest checkpoint; `None` before the first.
    #[serde(default)]
    pub manifest: Option<ManifestRef>,
    /// A rebuild from the bucket is under way: client writes are refused until it ends.
    #[serde(default)]
    pub restoring: bool,
}

impl GroupState {
    /// Whether `segment`, which this replica has seen opened, has been flushed: it is neither
    /// open nor sealed.
    pub fn is_flushed(&self, segment: SegmentId) -> bool {
        self.open.is_none_or(|o| o.id != segment) && !self.sealed.iter().any(|s| s.id == segment)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenSegment {
    pub id: SegmentId,
    /// Byte offset of the next page; also the page bytes the segment holds.
    pub next_offset: u64,
    /// Bytes of commit records the segment carries so far.
    pub record_bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSegment {
    pub id: SegmentId,
    pub bytes: u64,
}
