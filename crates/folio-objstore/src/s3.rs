//! The S3 backend, through aws-sdk-s3: AWS S3 or any S3-compatible store (custom endpoint,
//! path-style addressing). Credentials come from the standard AWS chain (environment, profile,
//! SSO, container and instance roles) unless given explicitly. Conditional puts use
//! `If-None-Match: *`, which the store must enforce atomically (AWS S3 does; see the
//! conformance suite for how that is checked).

use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;

use crate::{check_range, check_size, Listed, ObjectKey, ObjectStore, PutOutcome, StoreError};

/// Where the bucket is and how to reach it.
#[derive(Clone, Debug, Default)]
pub struct S3Config {
    pub bucket: String,
    /// Every key is stored under this prefix (empty: the bucket root).
    pub prefix: String,
    pub region: Option<String>,
    /// For S3-compatible stores, e.g. `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    /// Path-style URLs (`endpoint/bucket/key`), which most S3-compatible stores need.
    pub path_style: bool,
    /// Explicit credentials (access key, secret); `None` uses the standard AWS chain.
    pub credentials: Option<(String, String)>,
}

pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

/// How many times a conditional put that collided with a concurrent one (409) is retried.
const CONFLICT_RETRIES: usize = 5;
/// The wait before the first such retry; each further one doubles it (40, 80, ... 640 ms), so
/// the retries give up after about 1.2 s in all.
const CONFLICT_BACKOFF_MIN: Duration = Duration::from_millis(40);
/// The longest wait between conflicting puts (the fifth).
const CONFLICT_BACKOFF_MAX: Duration = Duration::from_millis(640);
/// The waits between conflicting puts: exponential, unjittered, bounded in count and length.
const CONFLICT_BACKOFF: ExponentialBuilder = ExponentialBuilder::new()
    .with_factor(2.0)
    .with_min_delay(CONFLICT_BACKOFF_MIN)
    .with_max_delay(CONFLICT_BACKOFF_MAX)
    .with_max_times(CONFLICT_RETRIES);

fn status<E>(e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Option<u16> {
    match e {
        SdkError::ServiceError(s) => Some(s.raw().status().as_u16()),
        SdkError::ResponseError(r) => Some(r.raw().status().as_u16()),
        _ => None,
    }
}

/// Maps an SDK error: transport failures, timeouts, throttling and 5xx are retryable.
fn map_err<E: ProvideErrorMetadata + std::fmt::Debug>(
    what: &str,
    key: &str,
    e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> StoreError {
    let code = status(&e);
    let detail = match &e {
        SdkError::ServiceError(s) => {
            format!(
                "{} {}",
                s.err().code().unwrap_or("?"),
                s.err().message().unwrap_or("")
            )
        }
        other => format!("{other:?}"),
    };
    let service_code = match &e {
        SdkError::ServiceError(s) => s.err().code(),
        _ => None,
    };
    if service_code == Some("NoSuchBucket") {
        return StoreError::Other(format!(
            "{what} {key}: the bucket does not exist (NoSuchBucket)"
        ));
    }
    match code {
        Some(404) => StoreError::NotFound(key.to_string()),
        Some(429) | Some(500..=599) | None => {
            StoreError::Unavailable(format!("{what} {key}: {detail}"))
        }
        Some(c) => StoreError::Other(format!("{what} {key}: HTTP {c}: {detail}")),
    }
}

/// Reads a whole response body; a connection lost mid-body is retryable.
async fn read_body(body: ByteStream, key: &str) -> Result<Bytes, StoreError> {
    let data = body
        .collect()
        .await
        .map_err(|e| StoreError::Unavailable(format!("read {key}: {e}")))?;
    Ok(data.into_bytes())
}

impl S3Store {
    pub async fn connect(cfg: S3Config) -> Result<S3Store, StoreError> {
        if cfg.bucket.is_empty() {
            return Err(StoreError::Other("S3 bucket name is empty".into()));
        }
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(r) = &cfg.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        if let Some((id, secret)) = &cfg.credentials {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                id.clone(),
                secret.clone(),
                None,
                None,
                "folio-config",
            ));
        }
        let shared = loader.load().await;
        let mut b = aws_sdk_s3::config::Builder::from(&shared).force_path_style(cfg.path_style);
        if let Some(e) = &cfg.endpoint {
            b = b.endpoint_url(e.clone());
        }
        let prefix = match cfg.prefix.trim_matches('/') {
            "" => String::new(),
            p => format!("{p}/"),
        };
        Ok(S3Store {
            client: aws_sdk_s3::Client::from_conf(b.build()),
            bucket: cfg.bucket,
            prefix,
        })
    }

    fn key(&self, key: &ObjectKey) -> String {
        format!("{}{key}", self.prefix)
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put_if_absent(&self, key: &ObjectKey, bytes: Bytes) -> Result<PutOutcome, StoreError> {
        check_size(&bytes)?;
        let k = self.key(key);
        let (k, bytes) = (&k, &bytes);
        let put = || async move {
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(k)
                .if_none_match("*")
                .body(ByteStream::from(bytes.clone()))
                .send()
                .await
        };
        // A 409 means a concurrent conditional put on the same key is in flight: try again, and
        // the store answers 412 once the other one has landed.
        let res = put
            .retry(CONFLICT_BACKOFF)
            .when(|e| status(e) == Some(409))
            .await;
        match res {
            Ok(_) => Ok(PutOutcome::Created),
            Err(e) if status(&e) == Some(412) => Ok(PutOutcome::AlreadyExists),
            Err(e) => Err(map_err("put", k, e)),
        }
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes, StoreError> {
        let k = self.key(key);
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&k)
            .send()
            .await
            .map_err(|e| map_err("get", &k, e))?;
        read_body(out.body, &k).await
    }

    async fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Bytes, StoreError> {
        if range.start >= range.end {
            // HTTP ranges cannot name zero bytes: check the object and the bounds instead.
            let len = self
                .head(key)
                .await?
                .ok_or_else(|| StoreError::NotFound(key.to_string()))?;
            check_range(key, &range, len)?;
            return Ok(Bytes::new());
        }
        let k = self.key(key);
        let res = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&k)
            .range(format!("bytes={}-{}", range.start, range.end - 1))
            .send()
            .await;
        let out = match res {
            Ok(o) => o,
            Err(e) if status(&e) == Some(416) => {
                let len = self.head(key).await?.unwrap_or(0);
                return Err(StoreError::Range {
                    key: key.to_string(),
                    start: range.start,
                    end: range.end,
                    len,
                });
            }
            Err(e) => return Err(map_err("get range", &k, e)),
        };
        let bytes = read_body(out.body, &k).await?;
        // Stores clamp a range that runs past the end; the contract refuses it.
        if bytes.len() as u64 != range.end - range.start {
            let len = self.head(key).await?.unwrap_or(0);
            return Err(StoreError::Range {
                key: key.to_string(),
                start: range.start,
                end: range.end,
                len,
            });
        }
        Ok(bytes)
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<u64>, StoreError> {
        let k = self.key(key);
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&k)
            .send()
            .await
        {
            Ok(o) => Ok(Some(o.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(map_err("head", &k, e)),
        }
    }

    async fn list_sized(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Listed>, StoreError> {
        let full = format!("{}{prefix}", self.prefix);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        while out.len() < limit {
            let mut req = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full)
                .max_keys((limit - out.len()).min(1000) as i32);
            if let Some(t) = &token {
                req = req.continuation_token(t);
            } else if let Some(s) = start_after {
                req = req.start_after(format!("{}{s}", self.prefix));
            }
            let page = req.send().await.map_err(|e| map_err("list", &full, e))?;
            for o in page.contents() {
                if let Some(k) = o.key().and_then(|k| k.strip_prefix(&self.prefix)) {
                    out.push(Listed {
                        key: k.to_string(),
                        size: o.size().unwrap_or(0).max(0) as u64,
                    });
                }
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError> {
        let k = self.key(key);
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(&k)
            .send()
            .await
            .map_err(|e| map_err("delete", &k, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use backon::BackoffBuilder;

    use super::*;

    #[test]
    fn conflict_backoff_is_five_doubling_waits() {
        let waits: Vec<Duration> = CONFLICT_BACKOFF.build().collect();
        assert_eq!(waits.len(), CONFLICT_RETRIES);
        for (i, w) in waits.iter().enumerate() {
            let want = CONFLICT_BACKOFF_MIN * (1 << i);
            assert!(
                w.abs_diff(want) < Duration::from_millis(1),
                "wait {i}: {w:?}"
            );
        }
    }
}
