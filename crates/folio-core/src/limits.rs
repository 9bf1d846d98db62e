//! Named limits shared by the server, the client and the tests. Every request size, batch and
//! retention window in Folio is bounded by one of these or by a config value whose default is
//! one of these.

/// Pages in one `Commit` or `WritePages` request (4 MiB of page data).
pub const MAX_PAGES_PER_REQUEST: usize = 1024;

/// Segment references in one two-step `Commit`.
pub const MAX_REFS_PER_COMMIT: usize = 16 * 1024;

/// Largest page index a volume may use: volumes are sparse, so this bounds the address space
/// (16 TiB per volume at 4 KiB pages), not storage.
pub const MAX_PAGE_IDX: u32 = u32::MAX - 1;

/// Bytes in an idempotency key. Keys are required on every commit.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;

/// Per volume, the idempotency keys of the last this-many commits are kept; a retry older than
/// that is no longer recognised (it then fails its LSN check instead of committing twice, as long
/// as the client retries with the same `expected_lsn`).
pub const IDEMPOTENCY_RETAIN_COMMITS: u64 = 4096;

/// Largest gRPC message a client may send or receive: one full request plus framing.
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// Commits returned by one `ListCommits` call.
pub const MAX_LIST_COMMITS: u32 = 1000;

/// Volumes returned by one `ListVolumes` call.
pub const MAX_LIST_VOLUMES: u32 = 1000;
