//! Folio's object store: one trait ([`ObjectStore`]) that the flush and read paths use, the typed
//! key layout ([`ObjectKey`]), backends (S3 and S3-compatible stores, a local directory for
//! `folio dev`, memory for tests), a
//! fault-injecting wrapper ([`FaultyStore`]) and the conformance suite every backend must pass
//! ([`conformance`]).

pub mod conformance;
mod faulty;
mod key;
mod local;
mod memory;
mod s3;

use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;

pub use faulty::{FaultConfig, FaultyStore};
pub use key::ObjectKey;
pub use local::LocalDirStore;
pub use memory::MemoryStore;
pub use s3::{S3Config, S3Store};

/// Largest object a backend accepts in one put (segments are 8–16 MiB).
pub const MAX_OBJECT_BYTES: usize = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object {0} does not exist")]
    NotFound(String),
    #[error("range {start}..{end} is outside object {key} of {len} bytes")]
    Range {
        key: String,
        start: u64,
        end: u64,
        len: u64,
    },
    #[error("object of {0} bytes exceeds the limit of {MAX_OBJECT_BYTES}")]
    TooLarge(usize),
    /// Worth retrying: the store is down, slow or throttling.
    #[error("object store unavailable: {0}")]
    Unavailable(String),
    #[error("object store: {0}")]
    Other(String),
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// Outcome of a conditional put.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object did not exist and now holds the given bytes.
    Created,
    /// An object already existed under the key; it was left unchanged.
    AlreadyExists,
}

/// One object a listing returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
}

/// An object store.
///
/// To ensure correctness, an implementation must guarantee:
/// - `put_if_absent` is atomic: of any number of concurrent calls for one key, exactly one sees
///   `Created`, and afterwards every reader sees that call's bytes and nothing else, ever (the
///   semantics of S3's `If-None-Match: *`). Folio relies on it so a segment id never maps to two
///   contents.
/// - Once a put returns `Ok`, the object is durable and every later `get` returns it whole
///   (read-after-write consistency); a reader never sees a partial object.
/// - `get_range` returns exactly the requested bytes, or `StoreError::Range` when the range is
///   not within the object.
/// - Listing returns keys in lexicographic order.
/// - Transient failures are `StoreError::Unavailable`; callers retry those and nothing else.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Creates `key` with `bytes` unless it exists.
    async fn put_if_absent(&self, key: &ObjectKey, bytes: Bytes) -> Result<PutOutcome, StoreError>;
    /// Whole object.
    async fn get(&self, key: &ObjectKey) -> Result<Bytes, StoreError>;
    /// Bytes `range` of the object.
    async fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Bytes, StoreError>;
    /// The object's size, or `None` when it does not exist.
    async fn head(&self, key: &ObjectKey) -> Result<Option<u64>, StoreError>;
    /// Objects under a prefix with their sizes in bytes, in key order, starting after
    /// `start_after`, at most `limit`.
    async fn list_sized(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Listed>, StoreError>;
    /// Keys under a prefix, in order, starting after `start_after`, at most `limit`.
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let listed = self.list_sized(prefix, start_after, limit).await?;
        Ok(listed.into_iter().map(|l| l.key).collect())
    }
    /// Removes an object; removing a missing object is not an error.
    async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError>;
}

/// Checks a requested range against an object's length, the same way for every backend.
pub(crate) fn check_range(key: &ObjectKey, range: &Range<u64>, len: u64) -> Result<(), StoreError> {
    if range.start > range.end || range.end > len {
        return Err(StoreError::Range {
            key: key.to_string(),
            start: range.start,
            end: range.end,
            len,
        });
    }
    Ok(())
}

pub(crate) fn check_size(bytes: &Bytes) -> Result<(), StoreError> {
    if bytes.len() > MAX_OBJECT_BYTES {
        return Err(StoreError::TooLarge(bytes.len()));
    }
    Ok(())
}
