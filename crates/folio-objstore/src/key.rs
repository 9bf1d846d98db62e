//! The object-key layout: every object Folio writes has a key built here and nowhere else.

use std::fmt;

use folio_core::{GroupId, SegmentId};

/// Where an object lives in the bucket.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ObjectKey {
    /// `segments/{segment id, 32 hex}`: an immutable segment (see `folio-segment`): the pages
    /// of many volumes, and the commit records (volume creations at LSN 0, then commits) applied
    /// while it was open, so one PUT makes both pages and history durable. Segment ids start
    /// with their creation time, then the group id, so listing returns segments in time order
    /// and each segment names the group that wrote it.
    Segment(SegmentId),
    /// `groups/{group id}/{name}`: a group's own metadata. `name` is a short ASCII name chosen by
    /// Folio, never user input.
    Group { group: GroupId, name: &'static str },
    /// `groups/{group id}/identity`: the group's claim on its id in this bucket (an
    /// incarnation id), written once with a conditional put by the node that bootstraps the
    /// group. A second group with the same id finds it and refuses to start.
    Identity { group: GroupId },
    /// `groups/{group id}/nodes/{node id}`: a node's claim on its id within the group, written
    /// once when the node first starts on an empty data directory. A node whose directory was
    /// wiped finds its old claim and refuses to rejoin silently.
    NodeClaim { group: GroupId, node: u64 },
    /// `groups/{group id}/manifests/{seq, 20 digits}`: one version of the group's checkpoint
    /// manifest (the list of index runs and the last segment they cover). Versions are created
    /// with conditional puts in sequence order, so the newest is the last one listed.
    Manifest { group: GroupId, seq: u64 },
    /// `groups/{group id}/runs/{seq, 20 digits}-{nonce, 16 hex}`: an immutable index run (a
    /// sorted table of page versions, commit records and volume heads), written before the
    /// manifest that references it. The nonce keeps two leaders' attempts at one manifest
    /// version from colliding.
    Run {
        group: GroupId,
        seq: u64,
        nonce: u64,
    },
}

impl ObjectKey {
    pub const SEGMENTS_PREFIX: &'static str = "segments/";

    /// The prefix under which every object of group `g` lives.
    pub fn group_prefix(g: GroupId) -> String {
        format!("groups/{g}/")
    }

    /// The prefix under which group `g`'s manifest versions are listed, in sequence order.
    pub fn manifests_prefix(g: GroupId) -> String {
        format!("groups/{g}/manifests/")
    }

    /// The prefix under which group `g`'s index runs are listed.
    pub fn runs_prefix(g: GroupId) -> String {
        format!("groups/{g}/runs/")
    }

    /// The key a listing returned, back as a key: segments, manifests and runs (what garbage
    /// collection deletes). `None` for any other name.
    pub fn parse(key: &str) -> Option<ObjectKey> {
        if let Some(id) = key.strip_prefix(Self::SEGMENTS_PREFIX) {
            return id.parse().ok().map(ObjectKey::Segment);
        }
        let rest = key.strip_prefix("groups/")?;
        let (group, rest) = rest.split_once('/')?;
        let group = GroupId(group.parse().ok()?);
        let parsed = if let Some(seq) = rest.strip_prefix("manifests/") {
            ObjectKey::Manifest {
                group,
                seq: seq.parse().ok()?,
            }
        } else if let Some(run) = rest.strip_prefix("runs/") {
            let (seq, nonce) = run.split_once('-')?;
            ObjectKey::Run {
                group,
                seq: seq.parse().ok()?,
                nonce: u64::from_str_radix(nonce, 16).ok()?,
            }
        } else {
            return None;
        };
        // Only the canonical spelling: what Display writes.
        (parsed.to_string() == key).then_some(parsed)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectKey::Segment(id) => write!(f, "segments/{id}"),
            ObjectKey::Group { group, name } => write!(f, "groups/{group}/{name}"),
            ObjectKey::Identity { group } => write!(f, "groups/{group}/identity"),
            ObjectKey::NodeClaim { group, node } => write!(f, "groups/{group}/nodes/{node}"),
            ObjectKey::Manifest { group, seq } => write!(f, "groups/{group}/manifests/{seq:020}"),
            ObjectKey::Run { group, seq, nonce } => {
                write!(f, "groups/{group}/runs/{seq:020}-{nonce:016x}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_in_time_order_and_stay_under_their_prefix() {
        let s1 = ObjectKey::Segment(SegmentId::new(1, GroupId(1), 0)).to_string();
        let s2 = ObjectKey::Segment(SegmentId::new(2, GroupId(1), 0)).to_string();
        let s3 = ObjectKey::Segment(SegmentId::new(2, GroupId(1), 1)).to_string();
        assert!(s1 < s2 && s2 < s3 && s1.starts_with(ObjectKey::SEGMENTS_PREFIX));
        let g = ObjectKey::Group {
            group: GroupId(3),
            name: "checkpoint",
        }
        .to_string();
        assert_eq!(g, "groups/3/checkpoint");
        assert!(g.starts_with(&ObjectKey::group_prefix(GroupId(3))));
        let m = |seq| {
            ObjectKey::Manifest {
                group: GroupId(3),
                seq,
            }
            .to_string()
        };
        assert!(m(9) < m(10) && m(10).starts_with(&ObjectKey::manifests_prefix(GroupId(3))));
        let r = ObjectKey::Run {
            group: GroupId(3),
            seq: 7,
            nonce: 0xab,
        }
        .to_string();
        assert_eq!(r, "groups/3/runs/00000000000000000007-00000000000000ab");
    }

    #[test]
    fn listed_keys_parse_back() {
        let g = GroupId(3);
        for k in [
            ObjectKey::Segment(SegmentId::new(5, g, 2)),
            ObjectKey::Manifest { group: g, seq: 12 },
            ObjectKey::Run {
                group: g,
                seq: 7,
                nonce: u64::MAX,
            },
        ] {
            assert_eq!(ObjectKey::parse(&k.to_string()), Some(k));
        }
        for bad in [
            "groups/3/identity",
            "groups/3/nodes/1",
            "groups/3/manifests/12",
            "groups/x/manifests/00000000000000000012",
            "groups/3/runs/00000000000000000007",
            "segments/zz",
            "other",
        ] {
            assert_eq!(ObjectKey::parse(bad), None, "{bad}");
        }
    }
}
