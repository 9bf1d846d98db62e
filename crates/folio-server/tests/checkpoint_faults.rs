//! Nothing is lost when the object store fails at any step of the flush and checkpoint paths: a
//! single-node group in this process writes through a `FaultyStore` that fails one request in
//! three before it reaches the store and loses the reply of one change in three after it was
//! made (a write that happened but was reported failed: the crash points between an upload and
//! the next step). Once the faults stop, every flushed segment is checkpointed, the node's index
//! holds nothing older, and every page at every LSN, every commit and every idempotency key reads
//! back as written, also after a restart.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{wait_leader, TempDir};
use folio_client::{Client, RetryPolicy};
use folio_core::{Lsn, VolumeId, PAGE_SIZE};
use folio_objstore::{FaultyStore, MemoryStore, ObjectStore};
use folio_server::config::Config;
use folio_server::node::Node;

const COMMITS: u64 = 60;
const PAGES: u32 = 6;

fn config(dir: &std::path::Path, port: u16) -> Config {
    common::single_node(
        dir,
        port,
        9,
        "[flush]\ninterval_ms = 50\nretry_backoff_max_ms = 200\n\
         [checkpoint]\ninterval_ms = 100\nentries_max = 16\n",
    )
}

fn page(lsn: u64, idx: u32) -> Bytes {
    let mut d = vec![(lsn * 31 + idx as u64) as u8; PAGE_SIZE];
    d[..8].copy_from_slice(&lsn.to_le_bytes());
    Bytes::from(d)
}

/// states[lsn] of one volume: page → (LSN that wrote it, bytes).
type States = Vec<BTreeMap<u32, (u64, Bytes)>>;

async fn check(client: &Client, vols: &[(VolumeId, States)]) {
    let all: Vec<u32> = (0..PAGES + 1).collect();
    for (v, states) in vols {
        for (lsn, state) in states.iter().enumerate() {
            let got = client.read_pages(*v, Lsn(lsn as u64), &all).await.unwrap();
            for p in got {
                let (want_lsn, want) = state
                    .get(&p.page_idx)
                    .cloned()
                    .unwrap_or((0, Bytes::from(vec![0u8; PAGE_SIZE])));
                assert!(
                    p.written_lsn == want_lsn && p.data == want,
                    "volume {v} LSN {lsn} page {}: written {} want {want_lsn}",
                    p.page_idx,
                    p.written_lsn
                );
            }
        }
        let lsns: Vec<u64> = client
            .all_commits(*v)
            .await
            .unwrap()
            .iter()
            .map(|c| c.lsn)
            .collect();
        assert_eq!(lsns, (1..states.len() as u64).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_history_is_lost_when_the_store_fails_at_every_step() {
    let dir = TempDir::new("checkpoint-faults");
    let port = common::port();
    let (faulty, faults) = FaultyStore::new(MemoryStore::new());
    let store: Arc<dyn ObjectStore> = Arc::new(faulty);
    let cfg = config(dir.path(), port);
    let node = Node::start_with_store(cfg.clone(), store.clone())
        .await
        .unwrap();
    wait_leader(&node).await;
    let client = Client::new([node.advertise.clone()], RetryPolicy::default()).unwrap();
    let mut vols: Vec<(VolumeId, States)> = Vec::new();
    for _ in 0..2 {
        vols.push((
            client.create_volume(None).await.unwrap(),
            vec![BTreeMap::new()],
        ));
    }

    faults.fail_one_in.store(3, Ordering::Relaxed);
    faults.lose_reply_one_in.store(3, Ordering::Relaxed);
    // At least COMMITS rounds, and on until enough faults were injected (how many object-store
    // calls a round makes depends on timing), within a bound.
    let mut rounds = 0;
    while rounds < COMMITS
        || (faults.injected_failures.load(Ordering::Relaxed) <= 10 && rounds < 20 * COMMITS)
    {
        rounds += 1;
        for (v, states) in vols.iter_mut() {
            let lsn = states.len() as u64;
            let idxs = [lsn as u32 % PAGES, (lsn as u32 * 5 + 1) % PAGES];
            let pages: Vec<(u32, Bytes)> = idxs.iter().map(|i| (*i, page(lsn, *i))).collect();
            let c = client
                .commit(*v, Lsn(lsn - 1), pages.clone(), format!("k{lsn}"))
                .await
                .unwrap();
            assert_eq!(c.lsn, Lsn(lsn));
            let mut next = states.last().unwrap().clone();
            for (i, d) in pages {
                next.insert(i, (lsn, d));
            }
            states.push(next);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        faults.injected_failures.load(Ordering::Relaxed) > 10,
        "faults were injected"
    );
    faults.fail_one_in.store(0, Ordering::Relaxed);
    faults.lose_reply_one_in.store(0, Ordering::Relaxed);

    // Everything gets flushed and checkpointed once the store behaves.
    let reader = node.reader.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let g = reader.group_state();
        let drained = g.buffered_bytes == 0 && g.sealed.is_empty() && g.open.is_none();
        if drained && reader.checkpoint_plan(u64::MAX).unwrap().is_none() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not drained and checkpointed within 60 s: {g:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reader.manifest().unwrap().is_some());
    for (v, _) in &vols {
        assert!(
            reader.commits(*v, Lsn(1), 10).unwrap().is_empty(),
            "the node's index keeps nothing a checkpoint covers"
        );
    }
    check(&client, &vols).await;
    // A retry of an early commit is still recognised, with its pages read back from the runs.
    let v = vols[0].0;
    let again = client
        .commit(v, Lsn(0), vec![(1, page(1, 1)), (0, page(1, 0))], "k1")
        .await
        .unwrap();
    assert!(again.deduplicated && again.lsn == Lsn(1) && again.pages.len() == 2);

    // And after a restart on the same directory, once every handle on the old node's store is
    // gone (aborted tasks drop theirs as they wind down).
    drop(reader);
    node.shutdown().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let node = loop {
        match Node::start_with_store(cfg.clone(), store.clone()).await {
            Ok(n) => break n,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("restart: {e:#}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("restart: {e:#}"),
        }
    };
    wait_leader(&node).await;
    check(&client, &vols).await;
    node.shutdown().await.unwrap();
}
