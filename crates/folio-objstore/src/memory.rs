//! An in-memory object store, for tests.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{check_range, check_size, Listed, ObjectKey, ObjectStore, PutOutcome, StoreError};

#[derive(Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, Bytes>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Bytes>> {
        self.objects
            .lock()
            .expect("memory store lock is never poisoned")
    }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    async fn put_if_absent(&self, key: &ObjectKey, bytes: Bytes) -> Result<PutOutcome, StoreError> {
        check_size(&bytes)?;
        let mut m = self.map();
        match m.entry(key.to_string()) {
            std::collections::btree_map::Entry::Occupied(_) => Ok(PutOutcome::AlreadyExists),
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(bytes);
                Ok(PutOutcome::Created)
            }
        }
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes, StoreError> {
        self.map()
            .get(&key.to_string())
            .cloned()
            .ok_or_else(|| StoreError::NotFound(key.to_string()))
    }

    async fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Bytes, StoreError> {
        let b = self.get(key).await?;
        check_range(key, &range, b.len() as u64)?;
        Ok(b.slice(range.start as usize..range.end as usize))
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<u64>, StoreError> {
        Ok(self.map().get(&key.to_string()).map(|b| b.len() as u64))
    }

    async fn list_sized(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Listed>, StoreError> {
        let m = self.map();
        Ok(m.range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(k, _)| start_after.is_none_or(|s| k.as_str() > s))
            .take(limit)
            .map(|(k, v)| Listed {
                key: k.clone(),
                size: v.len() as u64,
            })
            .collect())
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError> {
        self.map().remove(&key.to_string());
        Ok(())
    }
}
