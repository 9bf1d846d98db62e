//! Garbage collection never deletes what a reader can still reach and leaves nothing unreferenced
//! behind. Three nodes in this process share one bucket through a `FaultyStore` that fails some
//! requests (deletes too) and loses the replies of some changes. While a writer overwrites a few
//! hot pages (so segments keep dying), with a short retention:
//!
//! - a reader holds a fork made at an early LSN and reads it again and again: the fork pins the
//!   source's pages there, so every read must return them exactly;
//! - a reader takes the latest snapshot, waits, and reads it: it gets exactly that snapshot's
//!   pages, or OUT_OF_RANGE once retention has moved past it, never anything else;
//! - a second volume is deleted;
//! - the leader is shut down mid-way (a leader change during GC rounds) and restarted later.
//!
//! Then, with the store healthy and no new manifest for longer than the grace period plus two
//! rounds, the bucket holds exactly what the current manifest and the nodes' own indexes
//! reference (and what no checkpoint covers yet), and every retained snapshot reads back as
//! written.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::TempDir;
use folio_client::{Client, Error, RetryPolicy};
use folio_core::{GroupId, Lsn, SegmentId, PAGE_SIZE};
use folio_objstore::{FaultyStore, MemoryStore, ObjectKey, ObjectStore};
use folio_segment::manifest::Manifest;
use folio_segment::table::Table;
use folio_server::config::Config;
use folio_server::node::Node;
use tonic::Code;

const GROUP: u64 = 9;
const PAGES: u32 = 6;
const GRACE_MS: u64 = 1_500;
const ROUND_MS: u64 = 300;

fn config(dir: &std::path::Path, id: u64, ports: &[u16]) -> Config {
    let members: String = ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            format!(
                "[[initial_members]]\nid = {}\naddr = \"127.0.0.1:{p}\"\n",
                i + 1
            )
        })
        .collect();
    let text = format!(
        "node_id = {id}\ngroup_id = {GROUP}\nlisten_addr = \"127.0.0.1:{}\"\n\
         data_dir = \"{}\"\n{members}\
         [object_store]\nkind = \"local\"\npath = \"{}\"\n\
         [flush]\ninterval_ms = 50\nretry_backoff_max_ms = 200\n\
         [checkpoint]\ninterval_ms = 100\nentries_max = 32\n\
         [lifecycle]\ninterval_ms = {ROUND_MS}\nretention_ms = 400\nretain_commits = 3\n\
         gc_grace_ms = {GRACE_MS}\n",
        ports[id as usize - 1],
        dir.join(format!("node{id}")).display(),
        dir.join("unused").display()
    );
    toml::from_str(&text).expect("valid config")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn page(lsn: u64, idx: u32) -> Bytes {
    let mut d = vec![(lsn * 13 + idx as u64) as u8; PAGE_SIZE];
    d[..8].copy_from_slice(&lsn.to_le_bytes());
    d[8..12].copy_from_slice(&idx.to_le_bytes());
    Bytes::from(d)
}

/// `states[lsn]`: page → bytes.
type States = Vec<BTreeMap<u32, Bytes>>;

fn zeros() -> Bytes {
    Bytes::from(vec![0u8; PAGE_SIZE])
}

/// Whether `got` (pages 0..PAGES) is exactly `state`.
fn same(got: &[folio_proto::volume::v1::PageData], state: &BTreeMap<u32, Bytes>) -> bool {
    got.len() == PAGES as usize
        && got
            .iter()
            .all(|p| state.get(&p.page_idx).cloned().unwrap_or_else(zeros) == p.data)
}

async fn start(cfg: &Config, store: &Arc<dyn ObjectStore>) -> Node {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match Node::start_with_store(cfg.clone(), store.clone()).await {
            Ok(n) => return n,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("start node {}: {e:#}; retrying", cfg.node_id);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("start node {}: {e:#}", cfg.node_id),
        }
    }
}

async fn leader(nodes: &[Option<Node>]) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        for (i, n) in nodes.iter().enumerate() {
            if let Some(n) = n {
                if n.raft.metrics().borrow().current_leader == Some(i as u64 + 1) {
                    return i;
                }
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every key under `prefix`.
async fn list(store: &Arc<dyn ObjectStore>, prefix: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    loop {
        let page = store
            .list(prefix, out.last().map(String::as_str), 1000)
            .await
            .unwrap();
        let done = page.len() < 1000;
        out.extend(page);
        if done {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_keeps_what_readers_reach_and_leaves_nothing_unreferenced() {
    let dir = TempDir::new("gc");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let (faulty, faults) = FaultyStore::new(MemoryStore::new());
    let store: Arc<dyn ObjectStore> = Arc::new(faulty);
    let cfgs: Vec<Config> = (1..=3).map(|i| config(dir.path(), i, &ports)).collect();
    let mut nodes: Vec<Option<Node>> = Vec::new();
    for c in &cfgs {
        nodes.push(Some(start(c, &store).await));
    }
    leader(&nodes).await;
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let client = Arc::new(Client::new(addrs.clone(), RetryPolicy::default()).unwrap());

    // A volume to overwrite, and one to delete.
    let v = client.create_volume(None).await.unwrap();
    let w = client.create_volume(None).await.unwrap();
    for lsn in 1..=5u64 {
        let pages: Vec<(u32, Bytes)> = (0..PAGES).map(|i| (i, page(lsn + 100, i))).collect();
        client
            .commit(w, Lsn(lsn - 1), pages, format!("w{lsn}"))
            .await
            .unwrap();
    }
    let states: Arc<Mutex<States>> = Arc::new(Mutex::new(vec![BTreeMap::new()]));
    let commit_next = |n: u64| {
        let (client, states) = (client.clone(), states.clone());
        async move {
            let lsn = states.lock().unwrap().len() as u64;
            let idxs: BTreeSet<u32> = [lsn as u32 % PAGES, (lsn as u32 * 5 + 1) % PAGES].into();
            let pages: Vec<(u32, Bytes)> = idxs.iter().map(|i| (*i, page(lsn, *i))).collect();
            let c = client
                .commit(v, Lsn(lsn - 1), pages.clone(), format!("v{n}"))
                .await
                .unwrap();
            assert_eq!(c.lsn, Lsn(lsn));
            let mut s = states.lock().unwrap();
            let mut next = s.last().unwrap().clone();
            next.extend(pages);
            s.push(next);
        }
    };
    // A cold volume written once, page by page, beside the first hot commits: the segments it
    // shares with them go sparse as the hot pages die, and get compacted.
    let cold = client.create_volume(None).await.unwrap();
    let mut forked = None;
    for n in 1..=10 {
        commit_next(n).await;
        if n == 6 {
            // Forked while LSN 6 is the head: retention (400 ms, the last 3 commits) may hide
            // it within a few slow commits on a loaded machine, and a fork of a hidden LSN is
            // refused.
            forked = Some(client.fork_volume(v, Some(Lsn(6)), None).await.unwrap());
        }
        client
            .commit(
                cold,
                Lsn(n - 1),
                vec![(n as u32, page(1_000 + n, n as u32))],
                format!("c{n}"),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let (fork, at) = forked.expect("forked at LSN 6");
    assert_eq!(at, Lsn(6));
    let pinned = states.lock().unwrap()[6].clone();

    // Readers, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let all: Vec<u32> = (0..PAGES).collect();
    let fork_reader = {
        let (client, stop, reads, all, pinned) = (
            client.clone(),
            stop.clone(),
            reads.clone(),
            all.clone(),
            pinned.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match client.read_pages(fork, Lsn(0), &all).await {
                    Ok(got) => {
                        assert!(same(&got, &pinned), "the fork reads its source at LSN 6");
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(Error::Unavailable { .. }) => {}
                    Err(e) => panic!("fork read: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let holder = {
        let (client, stop, reads, refused, all, states) = (
            client.clone(),
            stop.clone(),
            reads.clone(),
            refused.clone(),
            all.clone(),
            states.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok(lsn) = client.snapshot(v).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                tokio::time::sleep(Duration::from_millis(250)).await;
                match client.read_pages(v, lsn, &all).await {
                    Ok(got) => {
                        let want = states.lock().unwrap()[lsn.0 as usize].clone();
                        assert!(same(&got, &want), "LSN {lsn} reads as written");
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(Error::Invalid {
                        code: Code::OutOfRange,
                        message,
                    }) => {
                        assert!(message.contains("oldest retained LSN"), "{message}");
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(Error::Unavailable { .. }) => {}
                    Err(e) => panic!("snapshot read at {lsn}: {e}"),
                }
            }
        })
    };

    // Writes under faults, a deletion, and a leader change in the middle.
    faults.fail_one_in.store(6, Ordering::Relaxed);
    faults.lose_reply_one_in.store(6, Ordering::Relaxed);
    faults.fail_delete_one_in.store(2, Ordering::Relaxed);
    assert!(!client.delete_volume(w).await.unwrap());
    let mut stopped: Option<usize> = None;
    for n in 11..=150 {
        commit_next(n).await;
        if n == 60 {
            let l = leader(&nodes).await;
            nodes[l].take().unwrap().shutdown().await.unwrap();
            stopped = Some(l);
        }
        if n == 110 {
            let l = stopped.take().unwrap();
            nodes[l] = Some(start(&cfgs[l], &store).await);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(faults.injected_failures.load(Ordering::Relaxed) > 20);
    faults.fail_one_in.store(0, Ordering::Relaxed);
    faults.lose_reply_one_in.store(0, Ordering::Relaxed);
    // Then half of all deletes fail for a while, the rest of the store healthy: rounds get
    // through to their deletes, and retry the failed ones later.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while folio_server::metrics::GC_DELETE_ERRORS.get() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "no delete failed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    faults.fail_delete_one_in.store(0, Ordering::Relaxed);

    // Quiet: wait until no manifest has appeared for the grace period plus three rounds.
    let l = leader(&nodes).await;
    let reader = nodes[l].as_ref().unwrap().reader.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut last = reader.manifest().unwrap();
    loop {
        tokio::time::sleep(Duration::from_millis(GRACE_MS + 3 * ROUND_MS)).await;
        let g = reader.group_state();
        let drained = g.buffered_bytes == 0 && g.sealed.is_empty() && g.open.is_none();
        let now = reader.manifest().unwrap();
        if drained && reader.checkpoint_plan(u64::MAX).unwrap().is_none() && now == last {
            break;
        }
        last = now;
        assert!(tokio::time::Instant::now() < deadline, "never quiet: {g:?}");
    }
    stop.store(true, Ordering::Relaxed);
    fork_reader.await.unwrap();
    holder.await.unwrap();
    eprintln!(
        "reads checked: {}, refused below the horizon: {}",
        reads.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed)
    );
    assert!(reads.load(Ordering::Relaxed) > 10);

    // The bucket holds exactly what is referenced.
    let pointer = reader.manifest().unwrap().expect("checkpointed");
    let g = GroupId(GROUP);
    let m = Manifest::decode(
        &store
            .get(&ObjectKey::Manifest {
                group: g,
                seq: pointer.seq,
            })
            .await
            .unwrap(),
    )
    .unwrap();
    // Two GC rounds that start after the current manifest has aged past the grace period: by
    // the second, nothing unreferenced may remain. Counted in rounds, not waited for in time.
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    while now_ms() <= m.created_ms + GRACE_MS {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rounds = || {
        folio_server::metrics::LIFECYCLE_ROUNDS
            .with_label_values(&["ok"])
            .get()
    };
    let (r0, deadline) = (
        rounds(),
        tokio::time::Instant::now() + Duration::from_secs(30),
    );
    while rounds() < r0 + 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no lifecycle rounds"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(reader.manifest().unwrap(), Some(pointer), "still quiet");
    let want_manifests = vec![ObjectKey::Manifest {
        group: g,
        seq: pointer.seq,
    }
    .to_string()];
    assert_eq!(
        list(&store, &ObjectKey::manifests_prefix(g)).await,
        want_manifests,
        "only the current manifest is left"
    );
    let mut want_runs: Vec<String> = m
        .runs
        .iter()
        .map(|r| {
            ObjectKey::Run {
                group: g,
                seq: r.seq,
                nonce: r.nonce,
            }
            .to_string()
        })
        .collect();
    want_runs.sort();
    assert_eq!(
        list(&store, &ObjectKey::runs_prefix(g)).await,
        want_runs,
        "only the current runs are left"
    );
    let mut referenced: BTreeSet<SegmentId> = BTreeSet::new();
    for r in &m.runs {
        let t = Table::decode(
            store
                .get(&ObjectKey::Run {
                    group: g,
                    seq: r.seq,
                    nonce: r.nonce,
                })
                .await
                .unwrap(),
        )
        .unwrap();
        referenced.extend(folio_state::lifecycle::referenced_segments(&t).unwrap());
        // The deleted volume kept nothing but its head.
        for (k, _) in t.iter() {
            if k[0] != folio_state::runs::HEAD {
                assert_ne!(&k[1..17], w.as_bytes(), "an entry of the deleted volume");
            }
        }
    }
    for n in nodes.iter().flatten() {
        referenced.extend(n.reader.gc_view().unwrap().1);
    }
    let segments: BTreeSet<SegmentId> = list(&store, ObjectKey::SEGMENTS_PREFIX)
        .await
        .iter()
        .map(|k| k[ObjectKey::SEGMENTS_PREFIX.len()..].parse().unwrap())
        .collect();
    let unreferenced: Vec<&SegmentId> = segments
        .iter()
        .filter(|s| **s <= pointer.through && !referenced.contains(s))
        .collect();
    assert!(
        unreferenced.is_empty(),
        "unreferenced segments survived: {unreferenced:?}"
    );
    let compacted: Vec<&SegmentId> = referenced.iter().filter(|s| s.is_compacted()).collect();
    assert!(!compacted.is_empty(), "sparse segments were compacted");
    let missing: Vec<&SegmentId> = referenced
        .iter()
        .filter(|s| !segments.contains(s))
        .collect();
    assert!(
        missing.is_empty(),
        "referenced segments deleted: {missing:?}"
    );

    // Every retained snapshot reads as written; older ones name the oldest retained LSN.
    let states = states.lock().unwrap().clone();
    let head = reader.volume(v).unwrap().unwrap();
    assert!(head.horizon > Lsn(6), "retention moved: {head:?}");
    for lsn in head.horizon.0..=head.lsn.0 {
        let got = client.read_pages(v, Lsn(lsn), &all).await.unwrap();
        assert!(same(&got, &states[lsn as usize]), "LSN {lsn}");
    }
    match client.read_pages(v, Lsn(head.horizon.0 - 1), &all).await {
        Err(Error::Invalid { code, message }) => {
            assert_eq!(code, Code::OutOfRange);
            assert!(
                message.contains(&format!("oldest retained LSN is {}", head.horizon.0)),
                "{message}"
            );
        }
        other => panic!("read below the horizon: {other:?}"),
    }
    let got = client.read_pages(fork, Lsn(0), &all).await.unwrap();
    assert!(same(&got, &pinned));
    let idxs: Vec<u32> = (1..=10).collect();
    for p in client.read_pages(cold, Lsn(10), &idxs).await.unwrap() {
        assert_eq!(
            p.data,
            page(1_000 + p.page_idx as u64, p.page_idx),
            "cold page"
        );
        assert_eq!(p.written_lsn, p.page_idx as u64);
    }
    // Garbage of every kind was deleted, some deletes failed and were retried.
    let deleted = |kind: &str| {
        folio_server::metrics::GC_DELETES
            .with_label_values(&[kind])
            .get()
    };
    eprintln!(
        "deleted: {} segments, {} runs, {} manifests; {} deletes failed; {} segments compacted",
        deleted("segment"),
        deleted("run"),
        deleted("manifest"),
        folio_server::metrics::GC_DELETE_ERRORS.get(),
        folio_server::metrics::COMPACTED_SEGMENTS.get()
    );
    assert!(deleted("segment") > 0 && deleted("run") > 0 && deleted("manifest") > 0);
    assert!(matches!(
        client.snapshot(w).await,
        Err(Error::NotFound(m)) if m.contains("deleted")
    ));
    for n in nodes.into_iter().flatten() {
        n.shutdown().await.unwrap();
    }
}
