//! Opening the configured object store, wrapped so every request is counted and timed.

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use folio_objstore::{
    Listed, LocalDirStore, ObjectKey, ObjectStore, PutOutcome, S3Config, S3Store, StoreError,
};

use crate::config::ObjectStoreConfig;
use crate::metrics;

/// Opens the store a node's config names.
pub async fn open(cfg: &ObjectStoreConfig) -> Result<Arc<dyn ObjectStore>, StoreError> {
    Ok(match cfg {
        ObjectStoreConfig::Local { path } => Arc::new(Metered(LocalDirStore::open(path)?)),
        ObjectStoreConfig::S3 {
            bucket,
            prefix,
            region,
            endpoint,
            path_style,
        } => Arc::new(Metered(
            S3Store::connect(S3Config {
                bucket: bucket.clone(),
                prefix: prefix.clone(),
                region: region.clone(),
                endpoint: endpoint.clone(),
                path_style: *path_style,
                credentials: None,
            })
            .await?,
        )),
    })
}

/// Counts requests by operation, kind of object and outcome, and times them.
pub struct Metered<S>(pub S);

fn outcome<T>(r: &Result<T, StoreError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(StoreError::NotFound(_)) => "not_found",
        Err(StoreError::Range { .. }) => "bad_range",
        Err(StoreError::TooLarge(_)) => "too_large",
        Err(StoreError::Unavailable(_)) => "unavailable",
        Err(StoreError::Other(_)) => "error",
    }
}

/// What kind of object a key names, for the request metrics.
fn kind(key: &ObjectKey) -> &'static str {
    match key {
        ObjectKey::Segment(_) => "segment",
        ObjectKey::Run { .. } => "run",
        ObjectKey::Manifest { .. } => "manifest",
        ObjectKey::Identity { .. } | ObjectKey::NodeClaim { .. } => "claim",
        ObjectKey::Group { .. } => "group",
    }
}

fn record(op: &'static str, kind: &'static str, started: Instant, out: &'static str) {
    metrics::OBJECT_STORE_REQUESTS
        .with_label_values(&[op, kind, out])
        .inc();
    metrics::OBJECT_STORE_SECONDS
        .with_label_values(&[op])
        .observe(started.elapsed().as_secs_f64());
}

#[async_trait]
impl<S: ObjectStore> ObjectStore for Metered<S> {
    async fn put_if_absent(&self, key: &ObjectKey, bytes: Bytes) -> Result<PutOutcome, StoreError> {
        let t = Instant::now();
        let r = self.0.put_if_absent(key, bytes).await;
        let out = match &r {
            Ok(PutOutcome::AlreadyExists) => "already_exists",
            other => outcome(other),
        };
        record("put", kind(key), t, out);
        r
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes, StoreError> {
        let t = Instant::now();
        let r = self.0.get(key).await;
        record("get", kind(key), t, outcome(&r));
        r
    }

    async fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Bytes, StoreError> {
        let t = Instant::now();
        let r = self.0.get_range(key, range).await;
        record("get_range", kind(key), t, outcome(&r));
        r
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<u64>, StoreError> {
        let t = Instant::now();
        let r = self.0.head(key).await;
        record("head", kind(key), t, outcome(&r));
        r
    }

    async fn list_sized(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Listed>, StoreError> {
        let t = Instant::now();
        let r = self.0.list_sized(prefix, start_after, limit).await;
        record("list", "listing", t, outcome(&r));
        r
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError> {
        let t = Instant::now();
        let r = self.0.delete(key).await;
        record("delete", kind(key), t, outcome(&r));
        r
    }
}
