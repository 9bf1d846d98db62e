//! The Rust client's volume API against a live node: read-your-writes, CAS conflicts reported
//! with the overlapping pages, disjoint transactions rebased automatically, the prefetcher
//! cutting round trips for scans, the page cache staying within its byte bound, and the view
//! kept fresh by following WatchVolume.

use std::sync::Arc;
use std::time::Duration;

use anyhow::ensure;
use bytes::Bytes;
use folio_client::{TxError, Volume};
use folio_core::{Lsn, PAGE_SIZE};
use folio_system_tests::folio_bin;
use folio_testkit::Cluster;

fn page(fill: u8) -> Bytes {
    Bytes::from(vec![fill; PAGE_SIZE])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_transactions_cache_prefetch_and_watch() -> anyhow::Result<()> {
    let c = Cluster::start(folio_bin(), 1)?;
    c.wait_leader(Duration::from_secs(20)).await?;
    let client = Arc::new(c.client());
    let id = client.create_volume(None).await?;
    let alice = Volume::open(client.clone(), id, 8 << 20).await?;
    let bob = Volume::open(Arc::new(c.client()), id, 8 << 20).await?;

    // Read-your-writes inside a transaction; zeros for never-written pages.
    let mut tx = alice.begin();
    ensure!(tx.read(5).await? == page(0));
    tx.write(5, page(1))?;
    ensure!(
        tx.read(5).await? == page(1),
        "a transaction reads its own writes"
    );
    for i in 0..300 {
        tx.write(100 + i, page((i % 200) as u8 + 10))?;
    }
    let done = tx.commit().await?;
    ensure!(done.lsn == Lsn(1) && done.rebases == 0);
    alice.sync().await?;
    ensure!(alice.read(5).await? == page(1));

    // Disjoint transactions on the same base: the loser is rebased and both land.
    bob.sync().await?;
    let mut a = alice.begin();
    let mut b = bob.begin();
    ensure!(a.read(1).await? == page(0));
    a.write(1, page(2))?;
    b.write(2, page(3))?;
    let ra = a.commit().await?;
    let rb = b.commit().await?;
    ensure!(ra.rebases == 0 && rb.rebases == 1, "{ra:?} {rb:?}");
    ensure!(rb.lsn == Lsn(3));

    // Overlapping: the loser gets a conflict naming the page (write/write and read/write).
    alice.sync().await?;
    bob.sync().await?;
    let mut a = alice.begin();
    let mut b = bob.begin();
    a.write(7, page(4))?;
    b.write(7, page(5))?;
    a.commit().await?;
    match b.commit().await {
        Err(TxError::Conflict { pages, .. }) => ensure!(pages == vec![7]),
        other => anyhow::bail!("expected a conflict, got {other:?}"),
    }
    bob.sync().await?;
    let mut a = alice.begin();
    let mut b = bob.begin();
    a.write(8, page(6))?;
    ensure!(b.read(8).await? == page(0));
    b.write(9, page(7))?;
    a.commit().await?;
    match b.commit().await {
        Err(TxError::Conflict { pages, .. }) => ensure!(pages == vec![8], "read set counts"),
        other => anyhow::bail!("expected a conflict, got {other:?}"),
    }

    // Prefetch: a sequential scan of 256 pages in far fewer calls than pages.
    let scan = |v: Arc<Volume>| async move {
        let before = v.read_rpcs();
        for i in 0..256u32 {
            let got = v.read(i).await?;
            if (100..400).contains(&i) {
                ensure!(got == page(((i - 100) % 200) as u8 + 10), "page {i}");
            }
        }
        anyhow::Ok(v.read_rpcs() - before)
    };
    let cold = Volume::open(Arc::new(c.client()), id, 8 << 20).await?;
    cold.set_prefetch(false);
    let without = scan(cold).await?;
    let warm = Volume::open(Arc::new(c.client()), id, 8 << 20).await?;
    let with = scan(warm).await?;
    eprintln!("sequential scan of 256 pages: {without} read calls without prefetch, {with} with");
    ensure!(without == 256, "one call per page without prefetch");
    ensure!(
        with * 4 < without,
        "prefetch cut the calls: {with} vs {without}"
    );

    // The cache stays within its byte bound.
    let small = Volume::open(Arc::new(c.client()), id, 64 << 10).await?;
    for i in 100..400 {
        small.read(i).await?;
    }
    ensure!(
        small.cached_bytes() <= 64 << 10,
        "cache {} bytes",
        small.cached_bytes()
    );

    // Following WatchVolume keeps a view fresh without polling.
    let follower = Volume::open(Arc::new(c.client()), id, 8 << 20).await?;
    ensure!(follower.read(42).await? == page(0));
    let f = follower.clone();
    let task = tokio::spawn(async move { f.follow().await });
    alice.sync().await?;
    let mut tx2 = alice.begin();
    tx2.write(42, page(9))?;
    let head = tx2.commit().await?.lsn;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while follower.synced() < head {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "watch did not deliver"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ensure!(
        follower.read(42).await? == page(9),
        "the cached zero page was replaced"
    );
    task.abort();
    Ok(())
}
