//! Identity in the bucket: which group owns a group id, and which node owns a node id within it.
//!
//! Segment ids name their group, so two groups that share a bucket (and prefix) under one id
//! would mint the same ids. And a node whose data directory was wiped has lost its Raft vote and
//! log; rejoining under its old id could let it vote twice in a term. Both are refused at start,
//! before Raft runs:
//!
//! - `groups/{g}/identity` holds the group's random incarnation. The node that bootstraps the
//!   group creates it with a conditional put; finding one already there means another group
//!   uses this id, and the node refuses to start (unless it is rebuilding the group from this
//!   very bucket, `restore`). Every node keeps a copy in its data directory (`group-identity`)
//!   and refuses to start when the bucket's differs.
//! - `groups/{g}/nodes/{n}` holds node `n`'s own random incarnation, created the first time the
//!   node starts on an empty data directory; the node keeps a copy (`node-claim`). A node that
//!   starts on an empty directory and finds a claim already there was wiped (or is another
//!   group's node): it refuses to start, unless `restore` is set.
//!
//! The local copy is written (and synced) before the conditional put, so a crash between the two
//! is harmless: the next start finds its own claim in the bucket.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use folio_core::GroupId;
use folio_objstore::{ObjectKey, ObjectStore, PutOutcome, StoreError};
use folio_segment::manifest::{Identity, NodeClaim};

use crate::config::Config;
use crate::now_ms;

const NODE_FILE: &str = "node-claim";
const GROUP_FILE: &str = "group-identity";
/// How long a node starting on an empty directory keeps trying an unreachable object store.
const FIRST_START_STORE_WAIT: Duration = Duration::from_secs(60);

fn write_synced(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn read_local<T>(
    path: &Path,
    decode: impl Fn(&[u8]) -> Result<T, folio_segment::manifest::RecordError>,
) -> anyhow::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(
            decode(&b).with_context(|| format!("read {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

/// Retries `f` while the store is unavailable, up to `wait`.
async fn retrying<T, F, Fut>(wait: Duration, mut f: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let deadline = Instant::now() + wait;
    let mut delay = Duration::from_millis(100);
    loop {
        match f().await {
            Err(e) if e.is_retryable() && Instant::now() + delay < deadline => {
                tracing::warn!(error = %e, "object store unavailable at start-up; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

async fn get_opt(store: &dyn ObjectStore, key: &ObjectKey) -> Result<Option<Bytes>, StoreError> {
    match store.get(key).await {
        Ok(b) => Ok(Some(b)),
        Err(StoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Checks and makes this node's claims before it starts Raft. `fresh`: the data directory held
/// no store yet.
pub async fn claim(cfg: &Config, store: &dyn ObjectStore, fresh: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("create {}", cfg.data_dir.display()))?;
    let group = cfg.group();
    // A restart may proceed with the store down (its directory is its proof); a first start
    // must reach the store to claim anything.
    let wait = if fresh {
        FIRST_START_STORE_WAIT
    } else {
        Duration::ZERO
    };
    match claim_node(cfg, store, group, fresh, wait).await {
        Err(e) if !fresh && is_unavailable(&e) => {
            tracing::warn!(error = %e, "could not check this node's claim in the object store");
        }
        other => other?,
    }
    let lowest = cfg.initial_members.iter().map(|m| m.id).min();
    let bootstraps = fresh && lowest == Some(cfg.node_id);
    match claim_group(cfg, store, group, bootstraps, wait).await {
        Err(e) if !bootstraps && is_unavailable(&e) => {
            tracing::warn!(error = %e, "could not check the group's identity in the object store");
            Ok(())
        }
        other => other,
    }
}

fn is_unavailable(e: &anyhow::Error) -> bool {
    e.downcast_ref::<StoreError>()
        .is_some_and(StoreError::is_retryable)
}

async fn claim_node(
    cfg: &Config,
    store: &dyn ObjectStore,
    group: GroupId,
    fresh: bool,
    wait: Duration,
) -> anyhow::Result<()> {
    let node = cfg.node_id;
    let path = cfg.data_dir.join(NODE_FILE);
    let key = ObjectKey::NodeClaim { group, node };
    let local = read_local(&path, NodeClaim::decode)?;
    if let Some(l) = &local {
        if l.group != group || l.node != node {
            bail!(
                "data directory {} belongs to node {} of group {}, not node {node} of group {group}",
                cfg.data_dir.display(),
                l.node,
                l.group
            );
        }
    }
    let found = retrying(wait, || get_opt(store, &key)).await?;
    let found = found
        .map(|b| NodeClaim::decode(&b))
        .transpose()
        .with_context(|| format!("read {key}"))?;
    let mine = match (&local, found) {
        (Some(l), Some(b)) if b.incarnation == l.incarnation => return Ok(()),
        (Some(l), Some(b)) if !cfg.restore => bail!(
            "node {node}'s claim in the bucket ({key}, incarnation {:032x}, created at {} ms) is \
             not this data directory's (incarnation {:032x}): another node {node} of group \
             {group} uses this bucket, or this directory is a stale copy. Refusing to start",
            b.incarnation,
            b.created_ms,
            l.incarnation
        ),
        (Some(l), _) => *l,
        (None, Some(b)) if !cfg.restore => {
            let what = if fresh {
                "this node's data directory is empty: it was wiped, or this is another group's \
                 node. A node that lost its disk must not rejoin under its old id (it has lost its \
                 Raft vote and log): add it to the group under a new node id, or rebuild the whole \
                 group from the bucket with --restore"
            } else {
                "this data directory has no claim of its own (it predates claims, or its claim \
                 file was removed); remove the claim from the bucket only if this is that node"
            };
            bail!(
                "node {node} of group {group} is already claimed in the bucket ({key}, created at \
                 {} ms): {what}. Refusing to start",
                b.created_ms
            )
        }
        (None, _) => NodeClaim {
            group,
            node,
            incarnation: rand::random(),
            created_ms: now_ms(),
        },
    };
    write_synced(&path, &mine.encode())?;
    if cfg.restore {
        // A rebuild replaces the node's old claim with this directory's.
        retrying(wait, || store.delete(&key)).await?;
    }
    match retrying(wait, || store.put_if_absent(&key, mine.encode())).await? {
        PutOutcome::Created => {
            tracing::info!(node, %group, incarnation = %format!("{:032x}", mine.incarnation), "claimed node id in the bucket");
            Ok(())
        }
        PutOutcome::AlreadyExists => bail!(
            "node {node} of group {group} was claimed in the bucket ({key}) by another process \
             just now; refusing to start"
        ),
    }
}

async fn claim_group(
    cfg: &Config,
    store: &dyn ObjectStore,
    group: GroupId,
    bootstraps: bool,
    wait: Duration,
) -> anyhow::Result<()> {
    let path = cfg.data_dir.join(GROUP_FILE);
    let key = ObjectKey::Identity { group };
    let local = read_local(&path, Identity::decode)?;
    let found = retrying(wait, || get_opt(store, &key)).await?;
    let found = found
        .map(|b| Identity::decode(&b))
        .transpose()
        .with_context(|| format!("read {key}"))?;
    match (local, found) {
        (Some(l), Some(b)) if l.incarnation == b.incarnation => Ok(()),
        (Some(l), Some(b)) if !cfg.restore => bail!(
            "group id {group} in this bucket belongs to incarnation {:032x} (created at {} ms by \
             node {}), but this node's data directory belongs to incarnation {:032x}: two groups \
             use group id {group} on one bucket and prefix. Give each group its own group_id. \
             Refusing to start",
            b.incarnation,
            b.created_ms,
            b.created_by,
            l.incarnation
        ),
        (_, Some(b)) if bootstraps && !cfg.restore => bail!(
            "group id {group} is already claimed in this bucket (incarnation {:032x}, created at \
             {} ms by node {}): another group uses this id on the same bucket and prefix. Choose \
             another group_id, or rebuild that group from the bucket with --restore. Refusing to \
             start",
            b.incarnation,
            b.created_ms,
            b.created_by
        ),
        (_, Some(b)) => write_synced(&path, &b.encode()),
        (_, None) if bootstraps => {
            let mine = Identity {
                group,
                incarnation: rand::random(),
                created_ms: now_ms(),
                created_by: cfg.node_id,
            };
            write_synced(&path, &mine.encode())?;
            match retrying(wait, || store.put_if_absent(&key, mine.encode())).await? {
                PutOutcome::Created => {
                    tracing::info!(%group, incarnation = %format!("{:032x}", mine.incarnation), "claimed group id in the bucket");
                    Ok(())
                }
                PutOutcome::AlreadyExists => bail!(
                    "group id {group} was claimed in the bucket ({key}) by another group just now; \
                     refusing to start"
                ),
            }
        }
        // Not the bootstrapping node, and the group has not claimed its id yet: it will.
        (_, None) => Ok(()),
    }
}
