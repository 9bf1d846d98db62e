//! Raft log metrics, registered in the process-wide default registry.

use std::sync::LazyLock;

use prometheus::{register_histogram, Histogram};

/// Buckets from 50 µs to ~3 s: spans a fast fsync to a stalled disk.
pub fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.00005, 2.0, 16).expect("valid buckets")
}

pub static APPEND_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "folio_raft_append_latency_seconds",
        "Time to write and fsync a batch of Raft log entries",
        latency_buckets()
    )
    .expect("metric registers once")
});
