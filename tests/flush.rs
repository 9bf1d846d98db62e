//! The flush path on a 3-node group with a real S3-compatible server (moto) on 127.0.0.1: every
//! acknowledged page and commit record ends up in uploaded segments with valid checksums, under
//! steady load, when the leader dies between seal and flush, when the object store goes away and
//! comes back (backpressure, then drain), and when every node is SIGKILLed at once.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::ensure;
use common::*;
use folio_client::{Client, RetryPolicy};
use folio_core::{SegmentId, VolumeId};
use folio_objstore::{ObjectKey, ObjectStore};
use folio_proto::volume::v1::Durability;
use folio_system_tests::folio_bin;
use folio_testkit::moto::Moto;
use folio_testkit::proxy::Proxy;
use folio_testkit::{Cluster, Options};

const INTERVAL: &str = "interval_ms = 250\n";

fn options(endpoint: &str) -> Options {
    Options {
        flush: INTERVAL.into(),
        object_store: Some(Options::s3(endpoint, BUCKET)),
        ..Default::default()
    }
}

async fn with_cluster<F, Fut>(opts: Options, f: F) -> anyhow::Result<()>
where
    F: FnOnce(Cluster) -> Fut,
    Fut: std::future::Future<Output = (Cluster, anyhow::Result<()>)>,
{
    let c = Cluster::start_opts(folio_bin(), 3, opts)?;
    let (c, res) = f(c).await;
    if res.is_err() {
        c.dump_logs();
    }
    res
}

/// Starts `writers` writers per volume, `count` commits each.
fn spawn_writers(
    client: &Arc<Client>,
    volumes: &[VolumeId],
    writers: usize,
    count: usize,
    tag: &str,
    acked: &Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<anyhow::Result<WriterResult>>> {
    let mut tasks = Vec::new();
    for (i, v) in volumes.iter().enumerate() {
        for w in 0..writers {
            tasks.push(tokio::spawn(writer(
                client.clone(),
                *v,
                format!("{tag}-v{i}-w{w}"),
                count,
                Durability::Quorum,
                acked.clone(),
            )));
        }
    }
    tasks
}

async fn join(
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<WriterResult>>>,
) -> anyhow::Result<WriterResult> {
    let mut all = WriterResult::default();
    for t in tasks {
        let r = t.await??;
        all.acks.extend(r.acks);
        all.refused.extend(r.refused);
    }
    Ok(all)
}

/// A client with few retries, so a full buffer or a dead group reaches the writer instead of
/// being waited out.
fn impatient_client(c: &Cluster) -> anyhow::Result<Arc<Client>> {
    Ok(Arc::new(Client::new(
        c.addrs(),
        RetryPolicy {
            max_attempts: 3,
            total_timeout: Duration::from_secs(2),
            ..Default::default()
        },
    )?))
}

async fn wait_for(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    while !f() {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_load_lands_in_segments_with_one_put_per_segment() -> anyhow::Result<()> {
    let moto = Moto::start()?;
    moto.create_bucket(BUCKET)?;
    with_cluster(options(&moto.endpoint()), |c| async {
        let res = async {
            let leader = c.wait_leader(Duration::from_secs(30)).await?;
            let client = Arc::new(c.client());
            let volumes = vec![
                client.create_volume(None).await?,
                client.create_volume(None).await?,
            ];
            let acked = Arc::new(AtomicUsize::new(0));
            let tasks = spawn_writers(&client, &volumes, 2, 60, "steady", &acked);
            // Alongside, commits with OBJECT_STORE durability: once acknowledged, their segment
            // is in the store already.
            let durable = writer(
                client.clone(),
                client.create_volume(None).await?,
                "durable".into(),
                8,
                Durability::ObjectStore,
                acked.clone(),
            )
            .await?;
            ensure!(durable.refused.is_empty(), "{:?}", durable.refused);
            let store = bucket(&moto).await?;
            for a in &durable.acks {
                for (r, _) in &a.pages {
                    let sid = SegmentId::from_slice(&r.segment_id)?;
                    let len = store.head(&ObjectKey::Segment(sid)).await?;
                    ensure!(len.is_some(), "segment {sid} of {} not in the store at ack", a.key);
                }
            }
            let mut all = join(tasks).await?;
            ensure!(all.refused.is_empty(), "{:?}", all.refused);
            all.acks.extend(durable.acks);
            wait_drained(&c, Duration::from_secs(30)).await?;
            let segments = check_acks_in_segments(&moto, &all.acks).await?;
            let puts = counter(
                &c,
                leader,
                "folio_object_store_requests_total",
                &["op=\"put\"", "kind=\"segment\""],
            );
            let errors = counter(&c, leader, "folio_segment_upload_errors_total", &[]);
            eprintln!(
                "{} commits acknowledged, {segments} segments, {puts} PUTs by the leader",
                all.acks.len()
            );
            ensure!(errors == 0.0, "no upload failed in a fault-free run");
            ensure!(
                puts as usize == segments,
                "exactly one PUT per segment (commit records ride along): {puts} PUTs, {segments} segments"
            );
            Ok(())
        }
        .await;
        (c, res)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_between_seal_and_flush_loses_nothing() -> anyhow::Result<()> {
    let moto = Moto::start()?;
    moto.create_bucket(BUCKET)?;
    let proxy = Proxy::start(format!("127.0.0.1:{}", moto.port)).await?;
    with_cluster(options(&proxy.endpoint()), |mut c| async {
        let res = async {
            let leader = c.wait_leader(Duration::from_secs(30)).await?;
            let client = Arc::new(c.client());
            let v = client.create_volume(None).await?;
            let acked = Arc::new(AtomicUsize::new(0));
            let mut all = join(spawn_writers(&client, &[v], 2, 20, "before", &acked)).await?;
            // The store goes away: segments are sealed on time but cannot be uploaded.
            proxy.set_down(true);
            let r = join(spawn_writers(&client, &[v], 2, 20, "cut-off", &acked)).await?;
            ensure!(r.refused.is_empty(), "{:?}", r.refused);
            all.acks.extend(r.acks);
            wait_for(
                "a sealed, unflushed segment on the leader",
                Duration::from_secs(20),
                || c.metric(leader, "folio_sealed_segments").unwrap_or(0.0) >= 1.0,
            )
            .await?;
            c.kill(leader);
            proxy.set_down(false);
            let new_leader = c.wait_leader(Duration::from_secs(30)).await?;
            ensure!(new_leader != leader);
            let r = join(spawn_writers(&client, &[v], 1, 10, "after", &acked)).await?;
            ensure!(r.refused.is_empty(), "{:?}", r.refused);
            all.acks.extend(r.acks);
            wait_drained(&c, Duration::from_secs(30)).await?;
            check_acks_in_segments(&moto, &all.acks).await?;
            Ok(())
        }
        .await;
        (c, res)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_applies_backpressure_then_drains() -> anyhow::Result<()> {
    let moto = Moto::start()?;
    moto.create_bucket(BUCKET)?;
    let proxy = Proxy::start(format!("127.0.0.1:{}", moto.port)).await?;
    const BUFFER_MAX: f64 = (1 << 20) as f64;
    let opts = Options {
        flush: format!("{INTERVAL}buffer_bytes_max = {}\n", 1 << 20),
        limits: format!("segment_bytes_max = {}\n", 256 << 10),
        object_store: Some(Options::s3(&proxy.endpoint(), BUCKET)),
        ..Default::default()
    };
    with_cluster(opts, |c| async {
        let res = async {
            let leader = c.wait_leader(Duration::from_secs(30)).await?;
            let client = impatient_client(&c)?;
            let v = client.create_volume(None).await?;
            let acked = Arc::new(AtomicUsize::new(0));
            proxy.set_down(true);
            // 2 writers × up to 400 commits of 1–2 pages: three times the buffer.
            let r = join(spawn_writers(&client, &[v], 2, 400, "outage", &acked)).await?;
            ensure!(
                !r.refused.is_empty(),
                "writes were refused once the buffer was full"
            );
            ensure!(
                r.refused.iter().all(|m| m.contains("write buffer is full")),
                "refusals say why: {:?}",
                r.refused
            );
            let buffered = c.metric(leader, "folio_buffer_bytes")?;
            ensure!(
                buffered <= BUFFER_MAX,
                "admitted writes are reserved, so the buffer never passes its limit: {buffered} bytes"
            );
            ensure!(c.metric(leader, "folio_writes_refused_buffer_full_total")? >= 1.0);
            let mut all = r.acks;
            // The store comes back: the buffer drains and writes go on.
            proxy.set_down(false);
            wait_drained(&c, Duration::from_secs(30)).await?;
            let r = join(spawn_writers(&client, &[v], 2, 10, "resumed", &acked)).await?;
            ensure!(r.refused.is_empty(), "{:?}", r.refused);
            all.extend(r.acks);
            wait_drained(&c, Duration::from_secs(30)).await?;
            check_acks_in_segments(&moto, &all).await?;
            ensure!(
                counter(&c, leader, "folio_segment_upload_errors_total", &[]) >= 1.0,
                "upload failures during the outage were counted"
            );
            Ok(())
        }
        .await;
        (c, res)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_nodes_sigkilled_mid_load_lose_nothing() -> anyhow::Result<()> {
    let moto = Moto::start()?;
    moto.create_bucket(BUCKET)?;
    // The store is unreachable during the load, so at the crash every acknowledged commit exists
    // only in the nodes' Raft logs and buffers.
    let proxy = Proxy::start(format!("127.0.0.1:{}", moto.port)).await?;
    with_cluster(options(&proxy.endpoint()), |mut c| async {
        let res = async {
            let leader = c.wait_leader(Duration::from_secs(30)).await?;
            let client = impatient_client(&c)?;
            let volumes = vec![
                client.create_volume(None).await?,
                client.create_volume(None).await?,
            ];
            proxy.set_down(true);
            let acked = Arc::new(AtomicUsize::new(0));
            let tasks = spawn_writers(&client, &volumes, 2, 200, "crash", &acked);
            wait_for("load under way", Duration::from_secs(30), || {
                acked.load(Ordering::Relaxed) >= 100
            })
            .await?;
            ensure!(c.metric(leader, "folio_buffer_bytes")? > 0.0);
            for id in 1..=3 {
                c.kill(id);
            }
            let r = join(tasks).await?;
            ensure!(r.acks.len() >= 100);
            proxy.set_down(false);
            for id in 1..=3 {
                c.restart(id)?;
            }
            c.wait_leader(Duration::from_secs(30)).await?;
            wait_drained(&c, Duration::from_secs(30)).await?;
            check_acks_in_segments(&moto, &r.acks).await?;
            // The heads are at least as far as anything acknowledged.
            let client = c.client();
            for v in &volumes {
                let head = client.snapshot(*v).await?;
                let max = r
                    .acks
                    .iter()
                    .filter(|a| a.volume == *v)
                    .map(|a| a.lsn)
                    .max();
                ensure!(max.is_none_or(|m| head >= m), "head {head} behind an ack");
            }
            Ok(())
        }
        .await;
        (c, res)
    })
    .await
}
