//! The contract of [`ObjectStore`](crate::ObjectStore), as checks any backend must pass: the
//! memory and local-directory stores in this crate's tests, and an S3-compatible server in the
//! S3 backend's tests. Each check panics with a message that names the broken rule.

use std::sync::Arc;

use bytes::Bytes;
use folio_core::{GroupId, SegmentId};

use crate::{ObjectKey, ObjectStore, PutOutcome, StoreError};

fn seg(n: u32) -> ObjectKey {
    // A random group per run, so a shared bucket sees fresh keys every time.
    ObjectKey::Segment(SegmentId::new(
        1_700_000_000_000 + n as u64,
        GroupId(run_group()),
        n,
    ))
}

fn run_group() -> u64 {
    use std::sync::OnceLock;
    static G: OnceLock<u64> = OnceLock::new();
    *G.get_or_init(|| rand::random::<u64>() & GroupId::MAX)
}

/// Runs every check against `store`.
pub async fn run_all<S: ObjectStore>(store: Arc<S>) {
    put_get_and_conditional_put(&*store).await;
    ranges(&*store).await;
    listing(&*store).await;
    delete_is_idempotent(&*store).await;
    large_objects(&*store).await;
    concurrent_conditional_puts(store.clone()).await;
}

pub async fn put_get_and_conditional_put<S: ObjectStore>(s: &S) {
    let k = seg(1);
    assert!(
        matches!(s.get(&k).await, Err(StoreError::NotFound(_))),
        "a missing object is NotFound"
    );
    assert_eq!(
        s.head(&k).await.unwrap(),
        None,
        "head of a missing object is None"
    );
    assert_eq!(
        s.put_if_absent(&k, Bytes::from_static(b"first"))
            .await
            .unwrap(),
        PutOutcome::Created
    );
    assert_eq!(s.get(&k).await.unwrap(), Bytes::from_static(b"first"));
    assert_eq!(s.head(&k).await.unwrap(), Some(5));
    assert_eq!(
        s.put_if_absent(&k, Bytes::from_static(b"second"))
            .await
            .unwrap(),
        PutOutcome::AlreadyExists,
        "a conditional put on an existing key reports it"
    );
    assert_eq!(
        s.get(&k).await.unwrap(),
        Bytes::from_static(b"first"),
        "and leaves the object unchanged"
    );
    let empty = seg(2);
    assert_eq!(
        s.put_if_absent(&empty, Bytes::new()).await.unwrap(),
        PutOutcome::Created
    );
    assert_eq!(
        s.get(&empty).await.unwrap(),
        Bytes::new(),
        "empty objects exist"
    );
}

pub async fn ranges<S: ObjectStore>(s: &S) {
    let k = seg(3);
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    s.put_if_absent(&k, Bytes::from(data.clone()))
        .await
        .unwrap();
    for r in [0..1, 0..10_000, 4096..8192, 9_999..10_000, 500..500] {
        let got = s.get_range(&k, r.clone()).await.unwrap();
        assert_eq!(
            &got[..],
            &data[r.start as usize..r.end as usize],
            "range {r:?}"
        );
    }
    for r in [9_999..10_001, 10_001..10_002] {
        assert!(
            matches!(
                s.get_range(&k, r.clone()).await,
                Err(StoreError::Range { .. })
            ),
            "range {r:?} is refused"
        );
    }
    assert!(matches!(
        s.get_range(&seg(99), 0..1).await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn listing<S: ObjectStore>(s: &S) {
    // A group of its own, so objects of other tests do not show up under its prefix.
    let g = GroupId(rand::random::<u64>() & GroupId::MAX);
    let key = |name: &'static str| ObjectKey::Group { group: g, name };
    for name in ["c", "a", "b", "b2", "z"] {
        s.put_if_absent(&key(name), Bytes::from(name))
            .await
            .unwrap();
    }
    let other = ObjectKey::Group {
        group: GroupId((g.0 + 1) & GroupId::MAX),
        name: "a",
    };
    s.put_if_absent(&other, Bytes::from_static(b"x"))
        .await
        .unwrap();
    let prefix = ObjectKey::group_prefix(g);
    let all = s.list(&prefix, None, 100).await.unwrap();
    let want: Vec<String> = ["a", "b", "b2", "c", "z"]
        .iter()
        .map(|n| key(n).to_string())
        .collect();
    assert_eq!(
        all, want,
        "listing is in key order and only under the prefix"
    );
    assert_eq!(s.list(&prefix, None, 2).await.unwrap(), want[..2], "limit");
    assert_eq!(
        s.list(&prefix, Some(&want[1]), 100).await.unwrap(),
        want[2..],
        "start_after"
    );
    let sized = s.list_sized(&prefix, None, 100).await.unwrap();
    let sizes: Vec<(String, u64)> = sized.into_iter().map(|l| (l.key, l.size)).collect();
    let want_sizes: Vec<(String, u64)> = ["a", "b", "b2", "c", "z"]
        .iter()
        .map(|n| (key(n).to_string(), n.len() as u64))
        .collect();
    assert_eq!(sizes, want_sizes, "listing reports each object's size");
    assert!(s
        .list("groups/none-such/", None, 10)
        .await
        .unwrap()
        .is_empty());
}

pub async fn delete_is_idempotent<S: ObjectStore>(s: &S) {
    let k = seg(4);
    s.put_if_absent(&k, Bytes::from_static(b"d")).await.unwrap();
    s.delete(&k).await.unwrap();
    assert_eq!(s.head(&k).await.unwrap(), None);
    s.delete(&k).await.unwrap();
    assert_eq!(
        s.put_if_absent(&k, Bytes::from_static(b"again"))
            .await
            .unwrap(),
        PutOutcome::Created
    );
}

pub async fn large_objects<S: ObjectStore>(s: &S) {
    let k = seg(5);
    let data: Vec<u8> = (0..9 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    s.put_if_absent(&k, Bytes::from(data.clone()))
        .await
        .unwrap();
    let got = s.get(&k).await.unwrap();
    assert!(got == data, "a 9 MiB object round-trips");
    let tail = s
        .get_range(&k, (data.len() - 4096) as u64..data.len() as u64)
        .await
        .unwrap();
    assert_eq!(&tail[..], &data[data.len() - 4096..]);
}

/// Sixteen racers create the same key with different bytes: exactly one wins, and every reader
/// afterwards sees the winner's bytes.
pub async fn concurrent_conditional_puts<S: ObjectStore>(s: Arc<S>) {
    let k = seg(6);
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let (s, k) = (s.clone(), k.clone());
        tasks.push(tokio::spawn(async move {
            let body = Bytes::from(vec![i; 64 * 1024]);
            (i, s.put_if_absent(&k, body).await.unwrap())
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (i, outcome) = t.await.unwrap();
        if outcome == PutOutcome::Created {
            winners.push(i);
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one conditional put wins: {winners:?}"
    );
    let got = s.get(&k).await.unwrap();
    assert!(
        got.iter().all(|b| *b == winners[0]) && got.len() == 64 * 1024,
        "the winner's bytes, whole"
    );
}
