//! The read and sync API against an in-memory model, on a 3-node group of processes: many
//! commits over random pages of several volumes (pages written many times, some never), then
//! for random LSNs every page is read from every node and compared with the model: before the
//! flush (bytes from the buffers), after it (ranged GETs on segments), and after the leader is
//! killed. `PullChanges` must equal the model's union of changed pages, and `WatchVolume` must
//! deliver every commit once, in order, including live ones and after a resume.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context};
use bytes::Bytes;
use common::{counter, wait_drained};
use folio_client::Client;
use folio_core::{Lsn, VolumeId, PAGE_SIZE};
use folio_proto::volume::v1 as pb;
use folio_system_tests::folio_bin;
use folio_testkit::{Cluster, Options};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_stream::StreamExt;

const VOLUMES: usize = 3;
/// Pages 0..WRITTEN are written; reads also ask for some never written.
const WRITTEN: u32 = 24;
const READ: u32 = 32;

/// Every version of one volume: `states[lsn]` maps page → (LSN that wrote it, bytes).
#[derive(Default)]
struct Model {
    states: Vec<HashMap<u32, (u64, Bytes)>>,
    changed: Vec<BTreeSet<u32>>,
}

impl Model {
    fn new() -> Model {
        Model {
            states: vec![HashMap::new()],
            changed: vec![BTreeSet::new()],
        }
    }

    fn head(&self) -> u64 {
        self.states.len() as u64 - 1
    }
}

async fn commit_random(
    client: &Client,
    rng: &mut StdRng,
    v: VolumeId,
    m: &mut Model,
    tag: &str,
) -> anyhow::Result<()> {
    let n = rng.random_range(1..=4);
    let mut idxs = BTreeSet::new();
    while idxs.len() < n {
        idxs.insert(rng.random_range(0..WRITTEN));
    }
    let lsn = m.head() + 1;
    let pages: Vec<(u32, Bytes)> = idxs
        .iter()
        .map(|i| {
            let mut d = vec![rng.random::<u8>(); PAGE_SIZE];
            d[..8].copy_from_slice(&lsn.to_le_bytes());
            (*i, Bytes::from(d))
        })
        .collect();
    let c = client
        .commit(v, Lsn(m.head()), pages.clone(), format!("{tag}-{lsn}"))
        .await?;
    ensure!(c.lsn == Lsn(lsn), "commit got LSN {}, model {lsn}", c.lsn);
    let mut next = m.states.last().expect("state 0").clone();
    for (i, d) in pages {
        next.insert(i, (lsn, d));
    }
    m.states.push(next);
    m.changed.push(idxs);
    Ok(())
}

/// Reads every page at random LSNs (and the head, and 0) from each given node and compares.
async fn check_reads(
    c: &Cluster,
    rng: &mut StdRng,
    nodes: &[u64],
    vols: &[(VolumeId, Model)],
) -> anyhow::Result<()> {
    let all: Vec<u32> = (0..READ).collect();
    for id in nodes {
        let client = c.client_for(*id);
        for (v, m) in vols {
            let mut lsns = vec![0, m.head()];
            lsns.extend((0..4).map(|_| rng.random_range(0..=m.head())));
            for lsn in lsns {
                let state = &m.states[lsn as usize];
                common::check_snapshot(&client, *id, *v, lsn, &all, |p| state.get(&p).cloned())
                    .await?;
            }
        }
    }
    Ok(())
}

async fn check_pull(
    client: &Client,
    rng: &mut StdRng,
    vols: &[(VolumeId, Model)],
) -> anyhow::Result<()> {
    for (v, m) in vols {
        for since in [0, m.head(), rng.random_range(0..=m.head())] {
            let (lsn, set) = client.pull_changes(*v, Lsn(since)).await?;
            ensure!(lsn == Lsn(m.head()));
            let want: BTreeSet<u32> = m.changed[since as usize + 1..]
                .iter()
                .flatten()
                .copied()
                .collect();
            let got: BTreeSet<u32> = set.iter().collect();
            ensure!(
                got == want,
                "PullChanges since {since}: {got:?} != {want:?}"
            );
        }
    }
    Ok(())
}

async fn check_watch(
    client: &Arc<Client>,
    v: VolumeId,
    m: &mut Model,
    rng: &mut StdRng,
) -> anyhow::Result<()> {
    let since = m.head() / 2;
    let mut stream = client.watch(v, Lsn(since)).await?;
    // Live commits while the stream is open.
    for _ in 0..3 {
        commit_random(client, rng, v, m, "live").await?;
    }
    for lsn in since + 1..=m.head() {
        let ev = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .context("watch event within 10 s")?
            .context("stream open")??;
        ensure!(
            ev.lsn == lsn,
            "watch delivered {} where {lsn} was due",
            ev.lsn
        );
        let want: Vec<u32> = m.changed[lsn as usize].iter().copied().collect();
        ensure!(ev.page_idx == want, "watch pages for LSN {lsn}");
    }
    // Nothing more, nothing twice.
    ensure!(
        tokio::time::timeout(Duration::from_millis(300), stream.next())
            .await
            .is_err(),
        "no extra events"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_match_the_model_before_and_after_flush_and_failover() -> anyhow::Result<()> {
    // Flushes happen only when this test asks (OBJECT_STORE commits seal at once).
    let mut c = Cluster::start_opts(
        folio_bin(),
        3,
        Options {
            flush: "interval_ms = 600000\n".into(),
            ..Default::default()
        },
    )?;
    let res = run(&mut c).await;
    if res.is_err() {
        c.dump_logs();
    }
    res
}

async fn run(c: &mut Cluster) -> anyhow::Result<()> {
    let seed: u64 = rand::random();
    eprintln!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let leader = c.wait_leader(Duration::from_secs(30)).await?;
    let client = Arc::new(c.client());
    let mut vols = Vec::new();
    for _ in 0..VOLUMES {
        vols.push((client.create_volume(None).await?, Model::new()));
    }
    for round in 0..30 {
        for (v, m) in vols.iter_mut() {
            commit_random(&client, &mut rng, *v, m, &format!("a{round}")).await?;
        }
    }
    let all_nodes = [1, 2, 3];
    // Before any flush: every byte comes from the buffers.
    check_reads(c, &mut rng, &all_nodes, &vols).await?;
    check_pull(&client, &mut rng, &vols).await?;
    let from_buffer: f64 = all_nodes
        .iter()
        .map(|n| counter(c, *n, "folio_page_reads_total", &["source=\"buffer\""]))
        .sum();
    ensure!(from_buffer > 0.0);

    // Flush: an OBJECT_STORE commit seals the open segment and waits for its upload.
    for (v, m) in vols.iter_mut() {
        let lsn = m.head() + 1;
        let mut d = vec![7u8; PAGE_SIZE];
        d[..8].copy_from_slice(&lsn.to_le_bytes());
        let data = Bytes::from(d);
        client
            .commit_request(pb::CommitRequest {
                volume_id: Bytes::copy_from_slice(v.as_bytes()),
                expected_lsn: m.head(),
                idempotency_key: Bytes::from(format!("flush-{lsn}")),
                durability: pb::Durability::ObjectStore as i32,
                pages: vec![pb::PageWrite {
                    page_idx: 0,
                    data: data.clone(),
                }],
                refs: vec![],
            })
            .await?;
        let mut next = m.states.last().expect("state").clone();
        next.insert(0, (lsn, data));
        m.states.push(next);
        m.changed.push([0].into());
    }
    wait_drained(c, Duration::from_secs(30)).await?;
    check_reads(c, &mut rng, &all_nodes, &vols).await?;
    let from_store: f64 = all_nodes
        .iter()
        .map(|n| {
            counter(
                c,
                *n,
                "folio_page_reads_total",
                &["source=\"object_store\""],
            )
        })
        .sum();
    ensure!(from_store > 0.0, "flushed pages were read from segments");

    // Leader change: the survivors serve old (flushed) and new (buffered) versions alike.
    c.kill(leader);
    c.wait_leader(Duration::from_secs(30)).await?;
    for round in 0..10 {
        for (v, m) in vols.iter_mut() {
            commit_random(&client, &mut rng, *v, m, &format!("b{round}")).await?;
        }
    }
    let survivors: Vec<u64> = all_nodes.iter().copied().filter(|n| *n != leader).collect();
    check_reads(c, &mut rng, &survivors, &vols).await?;
    check_pull(&client, &mut rng, &vols).await?;
    let (v, m) = &mut vols[0];
    check_watch(&client, *v, m, &mut rng).await?;

    // Clear statuses.
    let v = vols[0].0;
    let head = vols[0].1.head();
    let err = client
        .read_pages(v, Lsn(head + 100), &[0])
        .await
        .unwrap_err();
    ensure!(
        matches!(
            &err,
            folio_client::Error::Invalid {
                code: tonic::Code::OutOfRange,
                ..
            }
        ),
        "future LSN: {err}"
    );
    let too_many: Vec<u32> = (0..2000).collect();
    let err = client
        .read_pages(v, Lsn(head), &too_many)
        .await
        .unwrap_err();
    ensure!(
        matches!(
            &err,
            folio_client::Error::Invalid {
                code: tonic::Code::ResourceExhausted,
                ..
            }
        ),
        "too many pages: {err}"
    );
    let err = client
        .read_pages(VolumeId::new_random(), Lsn(0), &[0])
        .await
        .unwrap_err();
    ensure!(
        matches!(err, folio_client::Error::NotFound(_)),
        "unknown volume: {err}"
    );
    let err = client.pull_changes(v, Lsn(head + 1)).await.unwrap_err();
    ensure!(
        matches!(
            &err,
            folio_client::Error::Invalid {
                code: tonic::Code::OutOfRange,
                ..
            }
        ),
        "future since: {err}"
    );
    Ok(())
}
