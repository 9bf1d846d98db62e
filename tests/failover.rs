//! A 3-node group as three `folio server` processes. Concurrent writers commit to several volumes
//! while one node is SIGKILLed mid-load. Afterwards every acknowledged commit is present with
//! exactly the LSN and page locations it was acknowledged with, LSNs have no gaps, no commit
//! appears twice, nothing appears that no writer sent, and the killed node restarts and catches up.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use folio_client::Error;
use folio_core::{Lsn, VolumeId, PAGE_SIZE};
use folio_proto::volume::v1::PageRef;
use folio_system_tests::folio_bin;
use folio_testkit::Cluster;

const VOLUMES: usize = 4;
const WRITERS_PER_VOLUME: usize = 2;
const COMMITS_PER_WRITER: usize = 40;
/// Acknowledged commits before the kill, so it lands mid-load.
const KILL_AFTER_ACKS: usize = 80;
const DEADLINE: Duration = Duration::from_secs(90);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Victim {
    Leader,
    Follower,
}

#[derive(Debug)]
struct Ack {
    volume: VolumeId,
    key: String,
    lsn: Lsn,
    pages: Vec<PageRef>,
}

/// One writer: read the head, commit one page on it, rebase on conflict, keep the idempotency
/// key across every retry of the same logical write.
async fn writer(
    client: Arc<folio_client::Client>,
    volume: VolumeId,
    w: usize,
    acks: Arc<AtomicUsize>,
) -> anyhow::Result<(Vec<Ack>, HashSet<String>)> {
    let mut out = Vec::new();
    let mut sent = HashSet::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    for seq in 0..COMMITS_PER_WRITER {
        let key = format!("w{w}-{seq}");
        sent.insert(key.clone());
        let mut data = vec![0u8; PAGE_SIZE];
        data[..key.len()].copy_from_slice(key.as_bytes());
        let page = (w * 1000 + seq) as u32;
        loop {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "writer {w} ran out of time"
            );
            let base = match client.snapshot(volume).await {
                Ok(l) => l,
                Err(Error::Unavailable { .. }) => continue,
                Err(e) => anyhow::bail!("snapshot: {e}"),
            };
            match client
                .commit(
                    volume,
                    base,
                    vec![(page, Bytes::from(data.clone()))],
                    key.clone(),
                )
                .await
            {
                Ok(c) => {
                    acks.fetch_add(1, Ordering::Relaxed);
                    out.push(Ack {
                        volume,
                        key: key.clone(),
                        lsn: c.lsn,
                        pages: c.pages,
                    });
                    break;
                }
                Err(Error::Conflict { .. }) | Err(Error::Unavailable { .. }) => continue,
                Err(e) => anyhow::bail!("commit {key}: {e}"),
            }
        }
    }
    Ok((out, sent))
}

async fn kill_mid_load(victim: Victim) -> anyhow::Result<()> {
    let mut cluster = Cluster::start(folio_bin(), 3)?;
    let res = run(&mut cluster, victim).await;
    if res.is_err() {
        cluster.dump_logs();
    }
    res
}

async fn run(cluster: &mut Cluster, victim: Victim) -> anyhow::Result<()> {
    let leader = cluster.wait_leader(Duration::from_secs(30)).await?;
    let client = Arc::new(cluster.client());
    let mut volumes = Vec::new();
    for _ in 0..VOLUMES {
        volumes.push(client.create_volume(None).await?);
    }
    let acks = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (i, v) in volumes.iter().enumerate() {
        for j in 0..WRITERS_PER_VOLUME {
            let w = i * WRITERS_PER_VOLUME + j;
            tasks.push(tokio::spawn(writer(client.clone(), *v, w, acks.clone())));
        }
    }

    // Kill mid-load: once enough commits are acknowledged, while writers are still running.
    let wait_start = tokio::time::Instant::now();
    while acks.load(Ordering::Relaxed) < KILL_AFTER_ACKS {
        anyhow::ensure!(wait_start.elapsed() < DEADLINE, "load did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let killed = match victim {
        Victim::Leader => leader,
        Victim::Follower => (1..=3).find(|id| *id != leader).expect("a follower"),
    };
    cluster.kill(killed);
    let acked_at_kill = acks.load(Ordering::Relaxed);

    let mut all_acks = Vec::new();
    let mut sent: HashMap<VolumeId, HashSet<String>> = HashMap::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let (a, s) = t.await??;
        sent.entry(volumes[i / WRITERS_PER_VOLUME])
            .or_default()
            .extend(s);
        all_acks.extend(a);
    }
    let total = VOLUMES * WRITERS_PER_VOLUME * COMMITS_PER_WRITER;
    assert_eq!(
        all_acks.len(),
        total,
        "every write is eventually acknowledged"
    );
    assert!(
        acked_at_kill < total,
        "the kill happened while writes were still going on"
    );

    let new_leader = cluster.wait_leader(Duration::from_secs(30)).await?;
    if victim == Victim::Leader {
        assert_ne!(new_leader, killed, "a new leader took over");
    }
    check_histories(&client, &volumes, &all_acks, &sent).await?;

    // The killed node restarts on its data and catches up with the leader.
    cluster.restart(killed)?;
    let target =
        folio_client::Client::node_status(&cluster.node(new_leader).addr, Duration::from_secs(2))
            .await?
            .applied_index;
    cluster
        .wait_applied(killed, target, Duration::from_secs(30))
        .await?;
    // Once caught up it serves as a member again: a write through it succeeds.
    let via_restarted = cluster.client_for(killed);
    let v = volumes[0];
    let head = via_restarted.snapshot(v).await?;
    let c = via_restarted
        .commit(v, head, vec![], "after-restart")
        .await?;
    assert_eq!(c.lsn, head.next());
    Ok(())
}

async fn check_histories(
    client: &folio_client::Client,
    volumes: &[VolumeId],
    acks: &[Ack],
    sent: &HashMap<VolumeId, HashSet<String>>,
) -> anyhow::Result<()> {
    for v in volumes {
        let history = client.all_commits(*v).await?;
        let lsns: Vec<u64> = history.iter().map(|c| c.lsn).collect();
        let expected: Vec<u64> = (1..=history.len() as u64).collect();
        assert_eq!(lsns, expected, "volume {v}: LSNs are 1..=n with no gaps");
        let mut by_key: HashMap<String, &folio_proto::volume::v1::CommitRecord> = HashMap::new();
        for c in &history {
            let key = String::from_utf8(c.idempotency_key.to_vec())?;
            assert!(
                sent[v].contains(&key),
                "volume {v}: commit {key} was never sent"
            );
            assert!(
                by_key.insert(key.clone(), c).is_none(),
                "volume {v}: {key} committed twice"
            );
        }
        for a in acks.iter().filter(|a| a.volume == *v) {
            let c = by_key
                .get(&a.key)
                .unwrap_or_else(|| panic!("acknowledged {} is missing", a.key));
            assert_eq!(
                c.lsn, a.lsn.0,
                "{} keeps the LSN it was acknowledged with",
                a.key
            );
            assert_eq!(c.pages, a.pages, "{} keeps its page locations", a.key);
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_killed_mid_load_loses_no_acknowledged_commit() -> anyhow::Result<()> {
    kill_mid_load(Victim::Leader).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follower_killed_mid_load_loses_no_acknowledged_commit() -> anyhow::Result<()> {
    kill_mid_load(Victim::Follower).await
}
