//! The object-key layout: every object Folio writes has a key built here and nowhere else.

use std::fmt;

use folio_core::{GroupId, Lsn, SegmentId, VolumeId};

/// Where an object lives in the bucket.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ObjectKey {
    /// `segments/{segment id, 32 hex}`: an immutable segment (see `folio-segment`). Segment ids
    /// start with their creation time, so listing returns segments in time order.
    Segment(SegmentId),
    /// `volumes/{volume id, 32 hex}/commits/{LSN, 16 hex}`: one commit record of a volume, so a
    /// volume's history is durable in the store; fixed-width LSNs list in commit order.
    Commit { volume: VolumeId, lsn: Lsn },
    /// `groups/{group id}/{name}`: a group's own metadata (for example its flush checkpoint).
    /// `name` is a short ASCII name chosen by Folio, never user input.
    Group { group: GroupId, name: &'static str },
}

impl ObjectKey {
    /// The prefix under which every commit record of `volume` lives.
    pub fn commits_prefix(volume: VolumeId) -> String {
        format!("volumes/{volume}/commits/")
    }

    pub const SEGMENTS_PREFIX: &'static str = "segments/";
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectKey::Segment(id) => write!(f, "segments/{id}"),
            ObjectKey::Commit { volume, lsn } => {
                write!(f, "volumes/{volume}/commits/{:016x}", lsn.0)
            }
            ObjectKey::Group { group, name } => write!(f, "groups/{group}/{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_in_time_and_lsn_order() {
        let v = VolumeId::from_array([0xab; 16]);
        let a = ObjectKey::Commit {
            volume: v,
            lsn: Lsn(9),
        }
        .to_string();
        let b = ObjectKey::Commit {
            volume: v,
            lsn: Lsn(10),
        }
        .to_string();
        assert!(a < b, "{a} < {b}");
        assert!(a.starts_with(&ObjectKey::commits_prefix(v)));
        let s1 = ObjectKey::Segment(SegmentId::new(1, GroupId(1), 0)).to_string();
        let s2 = ObjectKey::Segment(SegmentId::new(2, GroupId(1), 0)).to_string();
        assert!(s1 < s2 && s1.starts_with(ObjectKey::SEGMENTS_PREFIX));
        assert_eq!(
            ObjectKey::Group {
                group: GroupId(3),
                name: "checkpoint"
            }
            .to_string(),
            "groups/3/checkpoint"
        );
    }
}
