//! Server metrics, registered in the process-wide default registry and served on `/metrics` by
//! `folio_raft::node::serve_metrics`.

use std::sync::LazyLock;

use prometheus::{
    register_gauge, register_histogram, register_histogram_vec, register_int_counter,
    register_int_counter_vec, register_int_gauge, Gauge, Histogram, HistogramVec, IntCounter,
    IntCounterVec, IntGauge,
};

pub static REQUEST_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "folio_request_latency_seconds",
        "Client request latency at this node, by method",
        &["method"],
        folio_raft::metrics::latency_buckets()
    )
    .expect("metric registers once")
});

pub static COMMIT_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "folio_commit_latency_seconds",
        "Time from receiving a commit to acknowledging it (successful commits only)",
        folio_raft::metrics::latency_buckets()
    )
    .expect("metric registers once")
});

pub static REQUEST_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "folio_request_errors_total",
        "Client requests answered with an error, by method and gRPC code",
        &["method", "code"]
    )
    .expect("metric registers once")
});

pub static BATCH_REQUESTS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "folio_batch_requests",
        "Client commands per Raft entry (group commit)",
        prometheus::exponential_buckets(1.0, 2.0, 11).expect("valid buckets")
    )
    .expect("metric registers once")
});

pub static BATCH_BYTES: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "folio_batch_bytes",
        "Bytes of commands per Raft entry (group commit)",
        prometheus::exponential_buckets(64.0, 4.0, 10).expect("valid buckets")
    )
    .expect("metric registers once")
});

pub static OBJECT_STORE_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "folio_object_store_requests_total",
        "Object-store requests by operation, kind of object (segment, run, manifest, claim) and \
         outcome",
        &["op", "kind", "outcome"]
    )
    .expect("metric registers once")
});

pub static OBJECT_STORE_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "folio_object_store_request_seconds",
        "Object-store request latency by operation",
        &["op"],
        folio_raft::metrics::latency_buckets()
    )
    .expect("metric registers once")
});

pub static FLUSH_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "folio_flush_latency_seconds",
        "From a segment's seal being seen by the leader to its Flushed entry applying (build, \
         upload, confirm)",
        folio_raft::metrics::latency_buckets()
    )
    .expect("metric registers once")
});

pub static SEGMENT_BYTES: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "folio_segment_bytes",
        "Size of each uploaded segment object",
        prometheus::exponential_buckets(4096.0, 2.0, 14).expect("valid buckets")
    )
    .expect("metric registers once")
});

pub static SEGMENT_PAGES: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "folio_segment_pages",
        "Pages in each uploaded segment",
        prometheus::exponential_buckets(1.0, 2.0, 14).expect("valid buckets")
    )
    .expect("metric registers once")
});

pub static SEGMENTS_FLUSHED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "folio_segments_flushed_total",
        "Segments this node uploaded and confirmed as leader"
    )
    .expect("metric registers once")
});

pub static UPLOAD_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "folio_segment_upload_errors_total",
        "Failed segment uploads, by reason (retried until they succeed)",
        &["reason"]
    )
    .expect("metric registers once")
});

pub static WRITES_REFUSED_BUFFER_FULL: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "folio_writes_refused_buffer_full_total",
        "Writes refused because the local buffer was at its byte limit"
    )
    .expect("metric registers once")
});

pub static PAGE_READS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "folio_page_reads_total",
        "Page versions read, by where the bytes came from (cache, buffer, object_store)",
        &["source"]
    )
    .expect("metric registers once")
});

pub static HEDGED_READS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "folio_hedged_reads_total",
        "Object-store reads hedged with a second request (sent), and those the second won (won)",
        &["event"]
    )
    .expect("metric registers once")
});

pub static PAGES_READ: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!("folio_pages_read_total", "Pages returned by ReadPages")
        .expect("metric registers once")
});

pub static WATCHERS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("folio_watch_streams", "Open WatchVolume streams")
        .expect("metric registers once")
});

pub static CHECKPOINTS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "folio_checkpoints_total",
        "Checkpoints this node wrote to the object store and got applied, as leader"
    )
    .expect("metric registers once")
});

pub static CHECKPOINT_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "folio_checkpoint_seconds",
        "Time to build, upload, merge and apply one checkpoint",
        prometheus::exponential_buckets(0.01, 2.0, 14).expect("valid buckets")
    )
    .expect("metric registers once")
});

pub static CHECKPOINT_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "folio_checkpoint_errors_total",
        "Checkpoint attempts that failed (and are retried), by reason",
        &["reason"]
    )
    .expect("metric registers once")
});

pub static CHECKPOINT_MERGES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "folio_checkpoint_run_merges_total",
        "Index runs merged into one by checkpoints"
    )
    .expect("metric registers once")
});

pub static CHECKPOINT_RUNS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "folio_checkpoint_runs",
        "Index runs the latest manifest this node wrote lists"
    )
    .expect("metric registers once")
});

pub static CHECKPOINT_RUN_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "folio_checkpoint_run_bytes",
        "Bytes of the index runs the latest manifest this node wrote lists"
    )
    .expect("metric registers once")
});

pub static CHECKPOINT_PENDING_ENTRIES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "folio_checkpoint_pending_entries",
        "Index entries of flushed segments no checkpoint covers yet (on the leader)"
    )
    .expect("metric registers once")
});

pub static CHECKPOINT_AGE_SECONDS: LazyLock<Gauge> = LazyLock::new(|| {
    register_gauge!(
        "folio_checkpoint_pending_age_seconds",
        "How long the oldest flushed segment no checkpoint covers has waited (on the leader)"
    )
    .expect("metric registers once")
});

/// Registers every metric of a write-tier node, so each appears on `/metrics` before its first
/// observation.
pub fn register() {
    LazyLock::force(&REQUEST_SECONDS);
    LazyLock::force(&COMMIT_SECONDS);
    LazyLock::force(&REQUEST_ERRORS);
    LazyLock::force(&BATCH_REQUESTS);
    LazyLock::force(&BATCH_BYTES);
    LazyLock::force(&folio_raft::metrics::APPEND_SECONDS);
    LazyLock::force(&folio_state::metrics::APPLY_SECONDS);
    LazyLock::force(&folio_state::metrics::BUFFERED_BYTES);
    LazyLock::force(&folio_state::metrics::SNAPSHOTS_BUILT);
    LazyLock::force(&folio_state::metrics::SNAPSHOTS_INSTALLED);
    LazyLock::force(&folio_state::metrics::SEALED_SEGMENTS);
    LazyLock::force(&folio_state::metrics::CHECKPOINT_PAGES_DROPPED);
    LazyLock::force(&OBJECT_STORE_REQUESTS);
    LazyLock::force(&OBJECT_STORE_SECONDS);
    LazyLock::force(&FLUSH_SECONDS);
    LazyLock::force(&SEGMENT_BYTES);
    LazyLock::force(&SEGMENT_PAGES);
    LazyLock::force(&SEGMENTS_FLUSHED);
    LazyLock::force(&UPLOAD_ERRORS);
    LazyLock::force(&WRITES_REFUSED_BUFFER_FULL);
    LazyLock::force(&PAGE_READS);
    LazyLock::force(&HEDGED_READS);
    LazyLock::force(&PAGES_READ);
    LazyLock::force(&WATCHERS);
    LazyLock::force(&CHECKPOINTS);
    LazyLock::force(&CHECKPOINT_SECONDS);
    LazyLock::force(&CHECKPOINT_ERRORS);
    LazyLock::force(&CHECKPOINT_MERGES);
    LazyLock::force(&CHECKPOINT_RUNS);
    LazyLock::force(&CHECKPOINT_RUN_BYTES);
    LazyLock::force(&CHECKPOINT_PENDING_ENTRIES);
    LazyLock::force(&CHECKPOINT_AGE_SECONDS);
}
