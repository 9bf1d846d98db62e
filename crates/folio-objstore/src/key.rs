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
}

impl ObjectKey {
    pub const SEGMENTS_PREFIX: &'static str = "segments/";

    /// The prefix under which every object of group `g` lives.
    pub fn group_prefix(g: GroupId) -> String {
        format!("groups/{g}/")
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectKey::Segment(id) => write!(f, "segments/{id}"),
            ObjectKey::Group { group, name } => write!(f, "groups/{group}/{name}"),
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
    }
}
