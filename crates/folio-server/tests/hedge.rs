//! Object-store reads stay correct and quick when some requests are very slow: a hedged read
//! sends a second request after the hedge delay, and the first answer wins. Both show in
//! `folio_hedged_reads_total`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use folio_core::{GroupId, SegmentId};
use folio_objstore::{FaultyStore, MemoryStore, ObjectKey, ObjectStore};
use folio_server::metrics::HEDGED_READS;
use folio_server::pages::hedged_get_range;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reads_are_hedged_and_still_correct() {
    let (store, faults) = FaultyStore::new(MemoryStore::new());
    let key = ObjectKey::Segment(SegmentId::new(1, GroupId(1), 0));
    let data: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    store
        .put_if_absent(&key, Bytes::from(data.clone()))
        .await
        .unwrap();
    // Half of all requests stall for 500 ms; the hedge goes out after 20 ms.
    faults.slow_ms.store(500, Ordering::Relaxed);
    faults.slow_one_in.store(2, Ordering::Relaxed);
    let sent0 = HEDGED_READS.with_label_values(&["sent"]).get();
    let won0 = HEDGED_READS.with_label_values(&["won"]).get();
    for i in 0..40u64 {
        let r = i * 1000..i * 1000 + 4096;
        let got = hedged_get_range(&store, &key, r.clone(), Duration::from_millis(20))
            .await
            .unwrap();
        assert_eq!(&got[..], &data[r.start as usize..r.end as usize]);
    }
    let sent = HEDGED_READS.with_label_values(&["sent"]).get() - sent0;
    let won = HEDGED_READS.with_label_values(&["won"]).get() - won0;
    // With 40 reads each stalled with probability 1/2, all but vanishingly few runs hedge.
    assert!(sent > 0, "stalled reads were hedged");
    assert!(won > 0, "some hedges answered first");
    assert!(won <= sent);
}
