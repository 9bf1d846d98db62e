//! The conformance suite against each backend in this crate, and the fault wrapper's behaviour.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use folio_core::{GroupId, SegmentId};
use folio_objstore::{
    conformance, FaultyStore, LocalDirStore, MemoryStore, ObjectKey, ObjectStore, StoreError,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_conforms() {
    conformance::run_all(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_dir_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    conformance::run_all(Arc::new(LocalDirStore::open(dir.path()).unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_dir_store_keeps_objects_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let k = ObjectKey::Segment(SegmentId::new(1, GroupId(1), 0));
    LocalDirStore::open(dir.path())
        .unwrap()
        .put_if_absent(&k, Bytes::from_static(b"kept"))
        .await
        .unwrap();
    let again = LocalDirStore::open(dir.path()).unwrap();
    assert_eq!(again.get(&k).await.unwrap(), Bytes::from_static(b"kept"));
    assert_eq!(
        again.list("", None, 10).await.unwrap(),
        vec![k.to_string()],
        "no temporary files are listed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_wrapper_without_faults_conforms() {
    let (s, _) = FaultyStore::new(MemoryStore::new());
    conformance::run_all(Arc::new(s)).await;
}

#[tokio::test]
async fn injected_faults_are_retryable_and_switch_off() {
    let (s, faults) = FaultyStore::new(MemoryStore::new());
    let k = ObjectKey::Segment(SegmentId::new(1, GroupId(1), 0));
    faults.outage.store(true, Ordering::Relaxed);
    let err = s
        .put_if_absent(&k, Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(matches!(s.get(&k).await, Err(StoreError::Unavailable(_))));
    faults.outage.store(false, Ordering::Relaxed);
    faults.fail_next.store(2, Ordering::Relaxed);
    assert!(s.head(&k).await.is_err());
    assert!(s.head(&k).await.is_err());
    assert_eq!(
        s.head(&k).await.unwrap(),
        None,
        "after two failures the store answers again"
    );
    s.put_if_absent(&k, Bytes::from_static(b"x")).await.unwrap();
    assert_eq!(faults.injected_failures.load(Ordering::Relaxed), 4);
    assert_eq!(faults.requests.load(Ordering::Relaxed), 6);
    // Non-transient errors pass through unchanged and are not retryable.
    let missing = ObjectKey::Segment(SegmentId::new(2, GroupId(1), 0));
    let err = s.get(&missing).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)) && !err.is_retryable());
}
