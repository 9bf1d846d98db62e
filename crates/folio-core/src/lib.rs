//! Folio's domain types: volume and segment ids, LSNs, page indexes, pages, and the named limits
//! every layer shares. This crate does no I/O.

pub mod ids;
pub mod limits;
pub mod ops;
pub mod page;
pub mod sqlite;

pub use ids::{GroupId, Lsn, NodeId, PageIdx, SegmentId, VolumeId, COMPACTED_SEQ_BIT};
pub use ops::{CommitArgs, Durability, PageLocation, PageWrite, WritePagesArgs};
pub use page::{Page, PageError, PAGE_SIZE};
