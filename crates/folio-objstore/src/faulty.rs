//! A fault-injecting wrapper for tests: outages, a number of failures, random failures, and
//! added latency (on every request or on some), switchable while the store is in use.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rand::Rng;

use crate::{Listed, ObjectKey, ObjectStore, PutOutcome, StoreError};

/// Faults to inject; shared with the test that controls them.
#[derive(Default)]
pub struct FaultConfig {
    /// Every request fails with `Unavailable` while set.
    pub outage: AtomicBool,
    /// The next this-many requests fail with `Unavailable`.
    pub fail_next: AtomicU32,
    /// One request in this many fails at random (0: never).
    pub fail_one_in: AtomicU32,
    /// Added to every request, in milliseconds.
    pub latency_ms: AtomicU64,
    /// One request in this many is delayed by `slow_ms` more (0: never).
    pub slow_one_in: AtomicU32,
    pub slow_ms: AtomicU64,
    /// One put or delete in this many reaches the store and then fails with `Unavailable`
    /// (0: never): the change happened but the caller cannot know, as when a process dies or a
    /// connection drops right after the store applied a request.
    pub lose_reply_one_in: AtomicU32,
    /// One delete in this many fails before it reaches the store (0: never), on top of the
    /// faults every request gets: garbage collection's retries, tested alone.
    pub fail_delete_one_in: AtomicU32,
    /// Requests that reached the wrapper, and those it failed.
    pub requests: AtomicU64,
    pub injected_failures: AtomicU64,
}

pub struct FaultyStore<S> {
    inner: S,
    faults: Arc<FaultConfig>,
}

impl<S: ObjectStore> FaultyStore<S> {
    pub fn new(inner: S) -> (Self, Arc<FaultConfig>) {
        let faults = Arc::new(FaultConfig::default());
        (
            FaultyStore {
                inner,
                faults: faults.clone(),
            },
            faults,
        )
    }

    /// Loses the reply of a change that happened, one time in `lose_reply_one_in`.
    fn after_change(&self, key: &ObjectKey) -> Result<(), StoreError> {
        let f = &self.faults;
        let one_in = f.lose_reply_one_in.load(Ordering::Relaxed);
        if one_in > 0 && rand::rng().random_range(0..one_in) == 0 {
            f.injected_failures.fetch_add(1, Ordering::Relaxed);
            return Err(StoreError::Unavailable(format!(
                "injected fault: the reply for {key} was lost (the change was made)"
            )));
        }
        Ok(())
    }

    async fn before(&self) -> Result<(), StoreError> {
        let f = &self.faults;
        f.requests.fetch_add(1, Ordering::Relaxed);
        let mut delay = f.latency_ms.load(Ordering::Relaxed);
        let slow = f.slow_one_in.load(Ordering::Relaxed);
        let one_in = f.fail_one_in.load(Ordering::Relaxed);
        let (slow_hit, fail_hit) = {
            let mut rng = rand::rng();
            (
                slow > 0 && rng.random_range(0..slow) == 0,
                one_in > 0 && rng.random_range(0..one_in) == 0,
            )
        };
        if slow_hit {
            delay += f.slow_ms.load(Ordering::Relaxed);
        }
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let take_one = f
            .fail_next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if f.outage.load(Ordering::Relaxed) || take_one || fail_hit {
            f.injected_failures.fetch_add(1, Ordering::Relaxed);
            return Err(StoreError::Unavailable("injected fault".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl<S: ObjectStore> ObjectStore for FaultyStore<S> {
    async fn put_if_absent(&self, key: &ObjectKey, bytes: Bytes) -> Result<PutOutcome, StoreError> {
        self.before().await?;
        let out = self.inner.put_if_absent(key, bytes).await?;
        self.after_change(key)?;
        Ok(out)
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes, StoreError> {
        self.before().await?;
        self.inner.get(key).await
    }

    async fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Bytes, StoreError> {
        self.before().await?;
        self.inner.get_range(key, range).await
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<u64>, StoreError> {
        self.before().await?;
        self.inner.head(key).await
    }

    async fn list_sized(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Listed>, StoreError> {
        self.before().await?;
        self.inner.list_sized(prefix, start_after, limit).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError> {
        self.before().await?;
        let one_in = self.faults.fail_delete_one_in.load(Ordering::Relaxed);
        if one_in > 0 && rand::rng().random_range(0..one_in) == 0 {
            self.faults
                .injected_failures
                .fetch_add(1, Ordering::Relaxed);
            return Err(StoreError::Unavailable(format!(
                "injected fault: delete of {key} failed"
            )));
        }
        self.inner.delete(key).await?;
        self.after_change(key)
    }
}
