//! Newtypes for identifiers and counters, so a page index can never be passed where an LSN or a
//! segment id is expected.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Error parsing an identifier from text or bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("{kind} must be {expected} bytes, got {got}")]
    Length {
        kind: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{kind} is not valid hex: {text:?}")]
    Hex { kind: &'static str, text: String },
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A volume's id: 16 bytes, time-ordered. The first 6 bytes are the creation time in Unix
/// milliseconds (big-endian), the other 10 are random, so ids sort by creation time and two nodes
/// creating volumes at the same instant do not collide.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VolumeId([u8; 16]);

impl VolumeId {
    pub const LEN: usize = 16;

    pub fn new_random() -> Self {
        let mut b = [0u8; 16];
        b[..6].copy_from_slice(&now_ms().to_be_bytes()[2..]);
        rand::fill(&mut b[6..]);
        VolumeId(b)
    }

    pub const fn from_array(b: [u8; 16]) -> Self {
        VolumeId(b)
    }

    pub fn from_slice(b: &[u8]) -> Result<Self, IdError> {
        let arr: [u8; 16] = b.try_into().map_err(|_| IdError::Length {
            kind: "volume id",
            expected: Self::LEN,
            got: b.len(),
        })?;
        Ok(VolumeId(arr))
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VolumeId({self})")
    }
}

impl FromStr for VolumeId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = hex::decode(s).map_err(|_| IdError::Hex {
            kind: "volume id",
            text: s.into(),
        })?;
        VolumeId::from_slice(&b)
    }
}

/// The top bit of a segment's sequence number marks a segment compaction wrote.
pub const COMPACTED_SEQ_BIT: u32 = 1 << 31;

/// A segment's id: 16 bytes, time-ordered and unique across groups that share a bucket.
/// Layout (big-endian): 6 bytes of Unix milliseconds, 6 bytes of the group id, 4 bytes of the
/// group's segment sequence number. Every part is taken from replicated state, so every replica
/// derives the same id for the same segment.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SegmentId([u8; 16]);

impl SegmentId {
    pub const LEN: usize = 16;

    pub fn new(time_ms: u64, group: GroupId, seq: u32) -> Self {
        let mut b = [0u8; 16];
        b[..6].copy_from_slice(&time_ms.to_be_bytes()[2..]);
        b[6..12].copy_from_slice(&group.0.to_be_bytes()[2..]);
        b[12..].copy_from_slice(&seq.to_be_bytes());
        SegmentId(b)
    }

    pub fn from_slice(b: &[u8]) -> Result<Self, IdError> {
        let arr: [u8; 16] = b.try_into().map_err(|_| IdError::Length {
            kind: "segment id",
            expected: Self::LEN,
            got: b.len(),
        })?;
        Ok(SegmentId(arr))
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    pub fn time_ms(&self) -> u64 {
        let mut t = [0u8; 8];
        t[2..].copy_from_slice(&self.0[..6]);
        u64::from_be_bytes(t)
    }

    pub fn seq(&self) -> u32 {
        u32::from_be_bytes(self.0[12..].try_into().expect("4 bytes"))
    }

    /// The id of a segment compaction wrote for manifest version `manifest_seq`, `k`
    /// milliseconds after `time_ms`: its sequence number has the top bit set (the state machine
    /// numbers its segments from 0 and never reaches it), and the manifest version's low 31 bits
    /// below.
    pub fn compacted(time_ms: u64, group: GroupId, manifest_seq: u64) -> Self {
        let seq = COMPACTED_SEQ_BIT | (manifest_seq as u32 & !COMPACTED_SEQ_BIT);
        SegmentId::new(time_ms, group, seq)
    }

    /// Whether compaction wrote this segment (it holds pages only, no commit records).
    pub fn is_compacted(&self) -> bool {
        self.seq() & COMPACTED_SEQ_BIT != 0
    }

    /// For a compacted segment, the low 31 bits of the manifest version it was written for.
    pub fn compacted_for(&self) -> Option<u32> {
        self.is_compacted().then(|| self.seq() & !COMPACTED_SEQ_BIT)
    }

    /// The group that wrote the segment.
    pub fn group(&self) -> GroupId {
        let mut g = [0u8; 8];
        g[2..].copy_from_slice(&self.0[6..12]);
        GroupId(u64::from_be_bytes(g))
    }
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SegmentId({self})")
    }
}

impl FromStr for SegmentId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = hex::decode(s).map_err(|_| IdError::Hex {
            kind: "segment id",
            text: s.into(),
        })?;
        SegmentId::from_slice(&b)
    }
}

/// A volume's commit number. LSN 0 means "no commit yet"; the first commit gets LSN 1 and every
/// later commit exactly one more (gap-free).
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
pub struct Lsn(pub u64);

impl Lsn {
    pub const ZERO: Lsn = Lsn(0);
    pub fn next(self) -> Lsn {
        Lsn(self.0 + 1)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A page's position in its volume.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
pub struct PageIdx(pub u32);

impl fmt::Display for PageIdx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A Raft node's id within its group.
pub type NodeId = u64;

/// A write-tier group's id. Only its low 48 bits enter segment ids, so configs keep it below
/// 2^48 (checked where the config is read).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct GroupId(pub u64);

impl GroupId {
    pub const MAX: u64 = (1 << 48) - 1;
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Longest region name.
pub const REGION_NAME_MAX: usize = 64;

/// Checks a region name: 1 to 64 characters of lower-case letters, digits, `-`, `_` and `.`.
pub fn valid_region(r: &str) -> Result<(), String> {
    if r.is_empty() || r.len() > REGION_NAME_MAX {
        return Err(format!(
            "a region name has 1 to {REGION_NAME_MAX} characters, not {}",
            r.len()
        ));
    }
    if !r
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
    {
        return Err(format!(
            "region {r:?} may only use lower-case letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_id_round_trips_through_text() {
        let v = VolumeId::new_random();
        let s = v.to_string();
        assert_eq!(s.len(), 32);
        assert_eq!(s.parse::<VolumeId>().unwrap(), v);
        assert!("zz".parse::<VolumeId>().is_err());
        assert_eq!(
            VolumeId::from_slice(&[1, 2, 3]),
            Err(IdError::Length {
                kind: "volume id",
                expected: 16,
                got: 3
            })
        );
    }

    #[test]
    fn segment_id_orders_by_time_then_group_then_seq() {
        let a = SegmentId::new(1000, GroupId(7), 9);
        let b = SegmentId::new(1001, GroupId(1), 0);
        let c = SegmentId::new(1001, GroupId(1), 1);
        assert!(a < b && b < c);
        assert_eq!(c.time_ms(), 1001);
        assert_eq!(c.seq(), 1);
        assert_eq!(c.to_string().parse::<SegmentId>().unwrap(), c);
    }
}
