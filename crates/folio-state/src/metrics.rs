//! Write-tier state machine metrics, registered in the process-wide default registry.

use std::sync::LazyLock;

use folio_raft::metrics::latency_buckets;
use prometheus::{
    register_histogram, register_int_counter, register_int_gauge, Histogram, IntCounter, IntGauge,
};

pub static APPLY_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "folio_raft_apply_latency_seconds",
        "Time to apply a batch of committed entries to the state machine",
        latency_buckets()
    )
    .expect("metric registers once")
});

pub static BUFFERED_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "folio_buffer_bytes",
        "Page bytes held in this node's local buffer, not yet in the object store"
    )
    .expect("metric registers once")
});

pub static SEALED_SEGMENTS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "folio_sealed_segments",
        "Segments sealed but not yet confirmed in the object store"
    )
    .expect("metric registers once")
});

pub static SNAPSHOTS_BUILT: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "folio_raft_snapshots_built_total",
        "Snapshots this node built from its state machine"
    )
    .expect("metric registers once")
});

pub static SNAPSHOTS_INSTALLED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "folio_raft_snapshots_installed_total",
        "Snapshots received from a leader and installed, replacing the state machine"
    )
    .expect("metric registers once")
});

pub static CHECKPOINT_PAGES_DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "folio_checkpoint_index_entries_dropped_total",
        "Page-index entries this node dropped because a checkpoint in the object store covers them"
    )
    .expect("metric registers once")
});
