//! Validated write requests, as every layer below the gRPC edge sees them. They are built only by
//! the edge's conversions (which check sizes, counts and duplicates), so holders may rely on their
//! invariants.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{Lsn, Page, PageIdx, SegmentId, VolumeId};

/// When a commit is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Durability {
    /// After a majority of the group has the commit fsync'd in its Raft log.
    #[default]
    Quorum,
    /// After the segment holding the commit's pages is in the object store.
    ObjectStore,
}

/// One page to write at a page index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageWrite {
    pub idx: PageIdx,
    pub page: Page,
}

/// Where a page's bytes live: a byte offset into a segment's page data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageLocation {
    pub idx: PageIdx,
    pub segment: SegmentId,
    pub offset: u64,
}

/// A CAS commit: succeeds only if the volume is at `expected_lsn`. Pages come inline, as
/// references to pages uploaded earlier with `WritePages`, or both. Page indexes are distinct
/// across `pages` and `refs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitArgs {
    pub volume: VolumeId,
    pub expected_lsn: Lsn,
    pub idempotency_key: Bytes,
    pub durability: Durability,
    pub pages: Vec<PageWrite>,
    pub refs: Vec<PageLocation>,
}

impl CommitArgs {
    /// Bytes of page data this commit carries inline.
    pub fn payload_bytes(&self) -> usize {
        self.pages.len() * crate::PAGE_SIZE
    }
}

/// Upload pages for a later commit of the same volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WritePagesArgs {
    pub volume: VolumeId,
    pub pages: Vec<PageWrite>,
}
