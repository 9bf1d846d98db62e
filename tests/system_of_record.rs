//! The object store as the system of record, on a 3-node group of processes: checkpoints move the
//! history off the nodes (reads at old LSNs then resolve through the bucket's index runs), a node
//! whose disk was wiped cannot rejoin under its old id, a second group cannot take the same group
//! id on the same bucket, and a group whose three disks are all lost is rebuilt from the bucket
//! with every flushed commit intact: every page at every LSN reads back byte-identical, LSNs go
//! on from where they were, CAS and idempotency still hold.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{ensure, Context};
use bytes::Bytes;
use common::{counter, wait_drained};
use folio_client::{Client, Error};
use folio_core::{Lsn, VolumeId, PAGE_SIZE};
use folio_system_tests::folio_bin;
use folio_testkit::{Cluster, Options};

const VOLUMES: usize = 2;
const COMMITS: u64 = 40;
const PAGES: u32 = 12;

/// Every version of one volume: `states[lsn]` maps page → (LSN that wrote it, bytes).
struct Model {
    states: Vec<BTreeMap<u32, (u64, Bytes)>>,
    keys: Vec<String>,
    writes: Vec<Vec<(u32, Bytes)>>,
}

impl Model {
    fn head(&self) -> u64 {
        self.states.len() as u64 - 1
    }
}

fn page(v: usize, lsn: u64, idx: u32) -> Bytes {
    let mut d = vec![(lsn as u8) ^ (idx as u8) ^ (v as u8 * 17); PAGE_SIZE];
    d[..8].copy_from_slice(&lsn.to_le_bytes());
    d[8..12].copy_from_slice(&idx.to_le_bytes());
    Bytes::from(d)
}

async fn commit_next(client: &Client, n: usize, v: VolumeId, m: &mut Model) -> anyhow::Result<()> {
    let lsn = m.head() + 1;
    // Deterministic, overlapping page sets: every page is rewritten many times.
    let idxs: BTreeSet<u32> = [lsn as u32 % PAGES, (lsn as u32 * 7 + 3) % PAGES].into();
    let pages: Vec<(u32, Bytes)> = idxs.iter().map(|i| (*i, page(n, lsn, *i))).collect();
    let key = format!("v{n}-{lsn}");
    let c = client
        .commit(v, Lsn(m.head()), pages.clone(), key.clone())
        .await?;
    ensure!(c.lsn == Lsn(lsn), "commit got LSN {}, model {lsn}", c.lsn);
    let mut next = m.states.last().expect("state 0").clone();
    for (i, d) in &pages {
        next.insert(*i, (lsn, d.clone()));
    }
    m.states.push(next);
    m.keys.push(key);
    m.writes.push(pages);
    Ok(())
}

/// Reads every page at every LSN through node `id` and compares with the model; also the commit
/// list and the roll-up from LSN 0.
async fn check_history(c: &Cluster, id: u64, vols: &[(VolumeId, Model)]) -> anyhow::Result<()> {
    let client = c.client_for(id);
    let all: Vec<u32> = (0..PAGES + 2).collect();
    for (v, m) in vols {
        for lsn in 0..=m.head() {
            let state = &m.states[lsn as usize];
            common::check_snapshot(&client, id, *v, lsn, &all, |p| state.get(&p).cloned()).await?;
        }
        let commits = client.all_commits(*v).await?;
        let lsns: Vec<u64> = commits.iter().map(|c| c.lsn).collect();
        ensure!(
            lsns == (1..=m.head()).collect::<Vec<_>>(),
            "ListCommits gave {lsns:?}"
        );
        for c in &commits {
            ensure!(
                c.idempotency_key == m.keys[c.lsn as usize - 1].as_bytes(),
                "key of LSN {}",
                c.lsn
            );
        }
        let (head, set) = client.pull_changes(*v, Lsn(0)).await?;
        ensure!(head == Lsn(m.head()));
        let want: BTreeSet<u32> = m.states[m.head() as usize].keys().copied().collect();
        ensure!(
            set.iter().collect::<BTreeSet<u32>>() == want,
            "PullChanges from 0"
        );
    }
    Ok(())
}

/// Waits until the leader has written at least `n` checkpoints.
async fn wait_checkpoints(c: &Cluster, n: f64) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let done: f64 = c
            .nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|node| counter(c, node.id, "folio_checkpoints_total", &[]))
            .sum();
        if done >= n {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "only {done} checkpoints within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn options() -> Options {
    Options {
        flush: "interval_ms = 100\n".into(),
        // Tiny runs and frequent checkpoints, so history moves to the bucket in many runs that
        // get merged.
        sections: "[checkpoint]\ninterval_ms = 200\nentries_max = 40\n".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_lives_in_the_bucket_and_a_wiped_group_is_rebuilt_from_it() -> anyhow::Result<()> {
    let mut c = Cluster::start_opts(folio_bin(), 3, options())?;
    let res = run(&mut c).await;
    if res.is_err() {
        c.dump_logs();
    }
    res
}

async fn run(c: &mut Cluster) -> anyhow::Result<()> {
    c.wait_leader(Duration::from_secs(30)).await?;
    let client = c.client();
    let mut vols = Vec::new();
    for _ in 0..VOLUMES {
        let v = client.create_volume(None).await?;
        vols.push((
            v,
            Model {
                states: vec![BTreeMap::new()],
                keys: Vec::new(),
                writes: Vec::new(),
            },
        ));
    }
    // A volume's own retention reaches the bucket in a checkpoint's head entry.
    let own = |days: u64| folio_proto::volume::v1::Retention {
        retention_ms: days * 86_400_000,
        retain_commits: 1_000,
    };
    client.set_retention(vols[0].0, Some(own(30))).await?;
    for _ in 0..COMMITS {
        for (n, (v, m)) in vols.iter_mut().enumerate() {
            commit_next(&client, n, *v, m).await?;
        }
        // Spread the commits over many segments and checkpoints.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_drained(c, Duration::from_secs(30)).await?;
    wait_checkpoints(c, 3.0).await?;
    // Old LSNs now resolve through the runs in the bucket, on every node.
    for id in 1..=3 {
        check_history(c, id, &vols).await?;
    }

    // A node whose disk is wiped does not rejoin under its old id.
    let leader = c.wait_leader(Duration::from_secs(10)).await?;
    let victim = (1..=3).find(|n| *n != leader).expect("a follower");
    c.wipe(victim)?;
    c.restart(victim)?;
    let status = c
        .wait_exit(victim, Duration::from_secs(30))?
        .context("a wiped node must refuse to start")?;
    ensure!(!status.success());
    ensure!(
        c.log_of(victim).contains("already claimed in the bucket"),
        "the refusal says why"
    );

    // A second group with the same id on the same bucket refuses to start. (Its node 1 would
    // first trip over the node claim of ours; remove that so the group's own claim is tested.)
    std::fs::remove_file(c.objects_dir().join("groups/7/nodes/1")).context("node 1's claim")?;
    let mut other = Cluster::start_opts(
        folio_bin(),
        1,
        Options {
            object_store: Some(format!(
                "kind = \"local\"\npath = \"{}\"\n",
                c.objects_dir().display()
            )),
            ..options()
        },
    )?;
    let status = other
        .wait_exit(1, Duration::from_secs(30))?
        .context("a second group with the same id must refuse to start")?;
    ensure!(!status.success());
    ensure!(
        other.log_of(1).contains("group id 7 is already claimed"),
        "{}",
        other.log_of(1)
    );
    drop(other);

    // The last commits stay in the nodes' index (no checkpoint yet) but are flushed.
    for (n, (v, m)) in vols.iter_mut().enumerate() {
        commit_next(&client, n, *v, m).await?;
    }
    // ... and in a segment's record when no checkpoint covers it yet.
    client.set_retention(vols[1].0, Some(own(7))).await?;
    wait_drained(c, Duration::from_secs(30)).await?;

    // Lose every disk, then rebuild from the bucket.
    for id in 1..=3 {
        c.wipe(id)?;
    }
    for id in 1..=3 {
        c.restart_with(id, &["--restore"])?;
    }
    c.wait_leader(Duration::from_secs(30)).await?;
    let client = c.client();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for (v, m) in &vols {
        loop {
            match client.snapshot(*v).await {
                Ok(lsn) if lsn == Lsn(m.head()) => break,
                Ok(lsn) => ensure!(lsn <= Lsn(m.head()), "head {lsn} past the model"),
                Err(_) => {}
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "volume {v} not restored within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for id in 1..=3 {
        check_history(c, id, &vols).await?;
    }
    let listed = client.list_volumes(None, 0).await?;
    let retention_of = |v: VolumeId| {
        listed
            .iter()
            .find(|x| x.volume_id.as_ref() == v.as_bytes())
            .and_then(|x| x.retention)
    };
    ensure!(retention_of(vols[0].0) == Some(own(30)), "{listed:?}");
    ensure!(retention_of(vols[1].0) == Some(own(7)), "{listed:?}");

    // Writes go on: LSNs continue, CAS holds, and a retry of the last commit before the loss is
    // recognised by its idempotency key.
    let (v, m) = &mut vols[0];
    let last = m.head();
    let retry = client
        .commit(
            *v,
            Lsn(last - 1),
            m.writes[last as usize - 1].clone(),
            m.keys[last as usize - 1].clone(),
        )
        .await?;
    ensure!(
        retry.lsn == Lsn(last) && retry.deduplicated,
        "the retry got LSN {} (deduplicated: {})",
        retry.lsn,
        retry.deduplicated
    );
    match client
        .commit(*v, Lsn(last - 1), vec![(0, page(0, 999, 0))], "stale")
        .await
    {
        Err(Error::Conflict { current, .. }) => ensure!(current == Lsn(last)),
        other => anyhow::bail!("a stale commit must conflict, got {other:?}"),
    }
    commit_next(&client, 0, *v, m).await?;
    wait_drained(c, Duration::from_secs(30)).await?;
    check_history(c, 1, &vols).await?;
    Ok(())
}
