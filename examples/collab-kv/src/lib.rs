//! A shared key-value map stored in a Folio volume, edited by several clients at once.
//!
//! Keys hash to one of [`BUCKETS`] pages; a page holds its bucket as JSON (length-prefixed,
//! zero-padded). An edit is a Folio transaction: read the bucket page, change it, write it back,
//! commit with CAS. Edits to different buckets never conflict: the client library rebases the
//! later one over the earlier automatically. Two edits of the same bucket do conflict; the app
//! is told which page, syncs, and re-applies its edit on the fresh state.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use folio_client::{Client, TxError, Volume};
use folio_core::{VolumeId, PAGE_SIZE};

/// Pages the map spreads its keys over.
pub const BUCKETS: u32 = 64;

pub fn bucket(key: &str) -> u32 {
    // FNV-1a: stable across runs and machines, unlike std's hasher.
    let mut h: u32 = 0x811c9dc5;
    for b in key.bytes() {
        h = (h ^ b as u32).wrapping_mul(0x0100_0193);
    }
    h % BUCKETS
}

fn decode(page: &[u8]) -> anyhow::Result<BTreeMap<String, String>> {
    let len = u32::from_le_bytes(page[..4].try_into()?) as usize;
    if len == 0 {
        return Ok(BTreeMap::new());
    }
    anyhow::ensure!(len <= PAGE_SIZE - 4, "corrupt bucket length {len}");
    Ok(serde_json::from_slice(&page[4..4 + len])?)
}

fn encode(map: &BTreeMap<String, String>) -> anyhow::Result<Bytes> {
    let json = serde_json::to_vec(map)?;
    anyhow::ensure!(
        json.len() <= PAGE_SIZE - 4,
        "bucket full: a page holds {} bytes of JSON",
        PAGE_SIZE - 4
    );
    let mut page = vec![0u8; PAGE_SIZE];
    page[..4].copy_from_slice(&(json.len() as u32).to_le_bytes());
    page[4..4 + json.len()].copy_from_slice(&json);
    Ok(Bytes::from(page))
}

/// One participant's handle on the shared map.
pub struct SharedMap {
    pub name: String,
    volume: Arc<Volume>,
}

/// How one edit went.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Committed; `rebases` other commits were slipped under it.
    Committed { lsn: u64, rebases: u32 },
    /// Someone else changed the same bucket first.
    Conflict { pages: Vec<u32> },
}

/// An edit prepared on the current snapshot, not yet committed.
pub struct Edit {
    tx: folio_client::Transaction,
}

impl SharedMap {
    pub async fn open(
        name: &str,
        client: Arc<Client>,
        volume: VolumeId,
    ) -> anyhow::Result<SharedMap> {
        Ok(SharedMap {
            name: name.into(),
            volume: Volume::open(client, volume, 4 << 20).await?,
        })
    }

    /// Brings the local view up to date (only changed pages are refetched).
    pub async fn sync(&self) -> anyhow::Result<()> {
        self.volume.sync().await?;
        Ok(())
    }

    pub async fn get(&self, key: &str) -> anyhow::Result<Option<String>> {
        let page = self.volume.read(bucket(key)).await?;
        Ok(decode(&page)?.get(key).cloned())
    }

    /// Prepares `key = value` on the current snapshot.
    pub async fn prepare(&self, key: &str, value: &str) -> anyhow::Result<Edit> {
        let mut tx = self.volume.begin();
        let b = bucket(key);
        let mut map = decode(&tx.read(b).await?)?;
        map.insert(key.into(), value.into());
        tx.write(b, encode(&map)?)?;
        Ok(Edit { tx })
    }

    pub async fn commit(&self, edit: Edit) -> anyhow::Result<Outcome> {
        match edit.tx.commit().await {
            Ok(c) => Ok(Outcome::Committed {
                lsn: c.lsn.0,
                rebases: c.rebases,
            }),
            Err(TxError::Conflict { pages, .. }) => Ok(Outcome::Conflict { pages }),
            Err(e) => Err(e.into()),
        }
    }

    /// Sets `key`, re-applying the edit on fresh state after each conflict (at most 8 times).
    pub async fn put(&self, key: &str, value: &str) -> anyhow::Result<Outcome> {
        for _ in 0..8 {
            let edit = self.prepare(key, value).await?;
            match self.commit(edit).await? {
                Outcome::Conflict { .. } => self.sync().await?,
                done => return Ok(done),
            }
        }
        anyhow::bail!("{}: gave up on {key} after 8 conflicts", self.name)
    }
}

/// What the demo saw, for people (printed) and tests (checked).
#[derive(Debug)]
pub struct Report {
    pub disjoint: (Outcome, Outcome),
    pub overlapping: (Outcome, Outcome),
    pub final_title: Option<String>,
    pub final_color: Option<String>,
}

/// The demo: Alice and Bob edit concurrently, first different keys (merged by rebase), then the
/// same key (Bob's edit conflicts; he syncs and re-applies it).
pub async fn demo(addrs: Vec<String>) -> anyhow::Result<Report> {
    let connect = || Client::new(addrs.clone(), folio_client::RetryPolicy::default()).map(Arc::new);
    let volume = connect()?.create_volume(None).await?;
    let alice = SharedMap::open("alice", connect()?, volume).await?;
    let bob = SharedMap::open("bob", connect()?, volume).await?;
    // Keys in different buckets.
    anyhow::ensure!(
        bucket("title") != bucket("color"),
        "demo keys share a bucket"
    );

    let a = alice.prepare("title", "Draft").await?;
    let b = bob.prepare("color", "blue").await?;
    let disjoint = (alice.commit(a).await?, bob.commit(b).await?);

    alice.sync().await?;
    bob.sync().await?;
    let a = alice.prepare("title", "Alice's title").await?;
    let b = bob.prepare("title", "Bob's title").await?;
    let first = alice.commit(a).await?;
    let second = bob.commit(b).await?;
    if matches!(second, Outcome::Conflict { .. }) {
        // Bob looks at what changed and decides to apply his edit on top.
        bob.sync().await?;
        bob.put("title", "Bob's title (after Alice's)").await?;
    }
    let overlapping = (first, second);

    alice.sync().await?;
    Ok(Report {
        disjoint,
        overlapping,
        final_title: alice.get("title").await?,
        final_color: alice.get("color").await?,
    })
}
