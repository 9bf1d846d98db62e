//! Records the state machine keeps in RocksDB, one column family per kind.

use bytes::Bytes;
use folio_core::{Lsn, PageLocation, SegmentId, VolumeId};
use serde::{Deserialize, Serialize};

/// A volume's head: its latest LSN, the oldest LSN it still keeps, and whether it was deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeHead {
    pub lsn: Lsn,
    pub created_at_ms: u64,
    /// The oldest LSN still readable (the retention horizon): reads, PullChanges and
    /// ListCommits below it are refused with an error naming it. Only ever moves forward, and
    /// always before the data below it is dropped from the bucket's index. 0 in heads written
    /// before retention existed: everything is kept.
    #[serde(default)]
    pub horizon: Lsn,
    /// DeleteVolume was applied: the volume answers NOT_FOUND, its pages become garbage, and its
    /// id is never given to a new volume.
    #[serde(default)]
    pub deleted: bool,
    /// A fork's source: the volume's LSN 0 is `base.volume` as of `base.lsn`, and a page the fork
    /// never wrote reads as the source's page there. `None` for a volume created empty.
    #[serde(default)]
    pub base: Option<ForkBase>,
    /// The volume's own retention (SetRetention); `None`: the group's default.
    #[serde(default)]
    pub retention: Option<Retention>,
}

/// How much of a volume's history stays readable: every snapshot that was current within the
/// last `ms` milliseconds, and its last `commits` snapshots, whichever reaches further back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    pub ms: u64,
    pub commits: u64,
}

/// Where a fork's history starts: a snapshot of another volume of the same group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkBase {
    pub volume: VolumeId,
    pub lsn: Lsn,
}

/// Forks of forks of forks ...: at most this many levels, so a read that falls through to the
/// sources does a bounded number of lookups.
pub const MAX_FORK_DEPTH: usize = 8;

/// The reserved LSN of a volume's deletion record in a segment (its creation is LSN 0).
pub const DELETION_LSN: Lsn = Lsn(u64::MAX);

/// The reserved LSN of a record that sets a volume's retention (SetRetention).
pub const RETENTION_LSN: Lsn = Lsn(u64::MAX - 1);

/// Whether a segment record at `lsn` is a volume's creation, retention change or deletion
/// rather than a commit.
pub fn is_volume_event(lsn: Lsn) -> bool {
    lsn == Lsn::ZERO || lsn >= RETENTION_LSN
}

/// The key of a retention record: `R`, then for a volume's own retention its milliseconds and
/// commits (u64 little-endian each); `R` alone returns the volume to the group's default.
pub fn retention_record_key(r: Option<&Retention>) -> Bytes {
    let mut k = Vec::with_capacity(17);
    k.push(b'R');
    if let Some(r) = r {
        k.extend_from_slice(&r.ms.to_le_bytes());
        k.extend_from_slice(&r.commits.to_le_bytes());
    }
    Bytes::from(k)
}

/// The retention a retention record's key sets.
pub fn parse_retention_record_key(key: &[u8]) -> Result<Option<Retention>, String> {
    match key {
        [b'R'] => Ok(None),
        [b'R', rest @ ..] if rest.len() == 16 => Ok(Some(Retention {
            ms: u64::from_le_bytes(rest[..8].try_into().expect("8 bytes")),
            commits: u64::from_le_bytes(rest[8..].try_into().expect("8 bytes")),
        })),
        _ => Err(format!("a retention record's key of {} bytes", key.len())),
    }
}

/// The key of a fork's creation record (LSN 0): `F`, the source volume, the source LSN (u64
/// little-endian). A plain creation has an empty key; the key of LSN 0 is never a client's.
pub fn fork_record_key(base: &ForkBase) -> Bytes {
    let mut k = Vec::with_capacity(25);
    k.push(b'F');
    k.extend_from_slice(base.volume.as_bytes());
    k.extend_from_slice(&base.lsn.0.to_le_bytes());
    Bytes::from(k)
}

/// The fork base an LSN-0 record's key names; `None` for a plain creation.
pub fn parse_fork_record_key(key: &[u8]) -> Result<Option<ForkBase>, String> {
    match key {
        [] => Ok(None),
        [b'F', rest @ ..] if rest.len() == 24 => Ok(Some(ForkBase {
            volume: VolumeId::from_slice(&rest[..16]).map_err(|e| e.to_string())?,
            lsn: Lsn(u64::from_le_bytes(rest[16..].try_into().expect("8 bytes"))),
        })),
        _ => Err(format!("a creation record's key of {} bytes", key.len())),
    }
}

/// The key of a deletion record.
pub const DELETION_RECORD_KEY: &[u8] = b"deleted";

impl VolumeHead {
    /// A live volume at `lsn` that keeps all of its history.
    pub fn new(lsn: Lsn, created_at_ms: u64) -> VolumeHead {
        VolumeHead {
            lsn,
            created_at_ms,
            horizon: Lsn::ZERO,
            deleted: false,
            base: None,
            retention: None,
        }
    }

    /// Whether snapshot `lsn` is still readable: retained and not past the head.
    pub fn retains(&self, lsn: Lsn) -> bool {
        !self.deleted && lsn >= self.horizon && lsn <= self.lsn
    }
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
    /// Whether the segments differ between `self` and `other`: which one is open, which are
    /// sealed, how many were flushed, the latest checkpoint, a rebuild under way. What the
    /// flusher and the waiters for a flush act on; the open segment's offsets and the buffered
    /// bytes, which move with every commit, are not among them.
    pub fn segments_differ(&self, other: &GroupState) -> bool {
        self.open.map(|o| o.id) != other.open.map(|o| o.id)
            || self.sealed != other.sealed
            || self.flushed_segments != other.flushed_segments
            || self.manifest != other.manifest
            || self.restoring != other.restoring
            || self.next_segment_seq != other.next_segment_seq
    }

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
