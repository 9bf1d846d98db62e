//! A replica whose checkpoint pointer names a manifest that garbage collection already deleted
//! (its applied state lags the group's checkpoints by more than `gc_grace_ms`, or a reader
//! stalled that long) answers reads that need the object store with UNAVAILABLE, so clients
//! go to another member, and not with INTERNAL as if history were lost. Set up directly: a
//! node whose history of LSN 1 lives only in the runs is stopped; its pointer's manifest is
//! deleted and a version two later written, as a leader's GC rounds would leave the bucket.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{wait_leader, TempDir};
use folio_client::{Client, Error, RetryPolicy};
use folio_core::{GroupId, Lsn, PageIdx, PAGE_SIZE};
use folio_objstore::{MemoryStore, ObjectKey, ObjectStore, PutOutcome};
use folio_segment::manifest::Manifest;
use folio_server::config::Config;
use folio_server::node::Node;

const GROUP: u64 = 9;

fn config(dir: &std::path::Path, port: u16, checkpoints: bool) -> Config {
    // Once stopped, the node must not move its pointer itself: no checkpoints, no lifecycle.
    let checkpoint = if checkpoints {
        "[checkpoint]\ninterval_ms = 50\nentries_max = 8\n"
    } else {
        "[checkpoint]\ninterval_ms = 3600000\nentries_max = 100000\n\
         [lifecycle]\ninterval_ms = 3600000\n"
    };
    common::single_node(
        dir,
        port,
        GROUP,
        &format!("[flush]\ninterval_ms = 20\n{checkpoint}"),
    )
}

fn page(lsn: u64) -> Bytes {
    Bytes::from(vec![lsn as u8; PAGE_SIZE])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_the_groups_gc_answers_unavailable_not_internal() {
    let dir = TempDir::new("superseded-manifest");
    let port = common::port();
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let node = Node::start_with_store(config(dir.path(), port, true), store.clone())
        .await
        .unwrap();
    wait_leader(&node).await;
    let client = Client::new([node.advertise.clone()], RetryPolicy::default()).unwrap();
    let v = client.create_volume(None).await.unwrap();
    // Commit until page 0 at LSN 1 is no longer in the node's own index: only the runs the
    // manifest names hold it.
    let mut lsn = 0u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let c = client
            .commit(v, Lsn(lsn), vec![(0, page(lsn + 1))], format!("k{lsn}"))
            .await
            .unwrap();
        lsn = c.lsn.0;
        let local = node.reader.page_at(v, PageIdx(0), Lsn(1)).unwrap();
        if lsn >= 2 && local.is_none() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "LSN 1 was never checkpointed out of the local index"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pointer = node.reader.manifest().unwrap().expect("a manifest");
    node.shutdown().await.unwrap();

    // What a GC round leaves once the pointer's manifest and the version after it have been
    // superseded for longer than the grace period (the replica lags by two versions): a later
    // version, and neither of these.
    let group = GroupId(GROUP);
    let old = ObjectKey::Manifest {
        group,
        seq: pointer.seq,
    };
    let mut next = Manifest::decode(&store.get(&old).await.unwrap()).unwrap();
    next.seq += 2;
    let next_key = ObjectKey::Manifest {
        group,
        seq: next.seq,
    };
    assert_eq!(
        store.put_if_absent(&next_key, next.encode()).await.unwrap(),
        PutOutcome::Created
    );
    store.delete(&old).await.unwrap();

    let node = Node::start_with_store(config(dir.path(), port, false), store.clone())
        .await
        .unwrap();
    wait_leader(&node).await;
    let once = RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    };
    let client = Client::new([node.advertise.clone()], once).unwrap();
    match client.read_pages(v, Lsn(1), &[0]).await {
        Err(Error::Unavailable { last, .. }) => {
            assert!(last.contains("garbage collection"), "{last}")
        }
        other => panic!("expected UNAVAILABLE for a replica behind GC, got {other:?}"),
    }
    // The replica still commits, and reads what its own index holds.
    let head = client.snapshot(v).await.unwrap();
    let c = client
        .commit(v, head, vec![(0, page(head.0 + 1))], "after")
        .await
        .unwrap();
    let got = client.read_pages(v, c.lsn, &[0]).await.unwrap();
    assert_eq!(got[0].data, page(c.lsn.0));
    node.shutdown().await.unwrap();
}
