//! Server metrics, registered in the process-wide default registry and served on `/metrics` by
//! `folio_raft::node::serve_metrics`.

use std::sync::LazyLock;

use prometheus::{
    register_gauge, register_histogram, register_histogram_vec, register_int_counter,
    register_int_counter_vec, register_int_gauge, register_int_gauge_vec, Gauge, Histogram,
    HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
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

pub static FORWARDS_REROUTED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "folio_forwards_rerouted_total",
        "Forwarded calls sent on (or run here) because leadership moved while they waited at the \
         old leader"
    )
    .expect("registers once")
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

pub static STORAGE_BYTES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "folio_storage_bytes",
        "The group's storage as of the leader's last lifecycle round, by kind: live (page bytes \
         a retained snapshot or a fork can read), garbage (segment bytes no manifest still \
         references), bucket_segments, bucket_runs, bucket_manifests",
        &["kind"]
    )
    .expect("metric registers once")
});

pub static STORAGE_OBJECTS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "folio_storage_objects",
        "The group's objects in the bucket as of the leader's last lifecycle round, by kind \
         (segments, runs, manifests)",
        &["kind"]
    )
    .expect("metric registers once")
});

pub static LIFECYCLE_ROUNDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "folio_lifecycle_rounds_total",
        "Lifecycle rounds on this node as leader, by outcome (ok, error)",
        &["outcome"]
    )
    .expect("metric registers once")
});

pub static INDEX_REWRITES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "folio_index_rewrites_total",
        "Index rewrites applied: the runs merged into one without what retention, deletions and \
         forks no longer need"
    )
    .expect("metric registers once")
});

pub static INDEX_ENTRIES_DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "folio_index_entries_dropped_total",
        "Index entries (page versions and commit records) rewrites left out"
    )
    .expect("metric registers once")
});

pub static INDEX_BYTES_REWRITTEN: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "folio_index_bytes_rewritten_total",
        "Bytes of index runs written by rewrites"
    )
    .expect("metric registers once")
});

pub static COMPACTED_SEGMENTS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "folio_compacted_segments_total",
        "Sparse segments whose live pages compaction copied into new segments"
    )
    .expect("metric registers once")
});

pub static COMPACTION_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "folio_compaction_bytes_rewritten_total",
        "Live page bytes compaction copied into new segments"
    )
    .expect("metric registers once")
});

pub static GC_DELETES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "folio_gc_deletes_total",
        "Objects garbage collection deleted, by kind (segment, run, manifest)",
        &["kind"]
    )
    .expect("metric registers once")
});

pub static GC_DELETED_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "folio_gc_deleted_bytes_total",
        "Bytes of the objects garbage collection deleted"
    )
    .expect("metric registers once")
});

pub static GC_DELETE_ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "folio_gc_delete_errors_total",
        "Deletes that failed (retried in a later round)"
    )
    .expect("metric registers once")
});

/// Registers every metric of a write-tier node, so each appears on `/metrics` before its first
/// observation.
pub fn register() {
    LazyLock::force(&REQUEST_SECONDS);
    LazyLock::force(&COMMIT_SECONDS);
    LazyLock::force(&FORWARDS_REROUTED);
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
    LazyLock::force(&STORAGE_BYTES);
    LazyLock::force(&STORAGE_OBJECTS);
    LazyLock::force(&LIFECYCLE_ROUNDS);
    LazyLock::force(&INDEX_REWRITES);
    LazyLock::force(&INDEX_ENTRIES_DROPPED);
    LazyLock::force(&INDEX_BYTES_REWRITTEN);
    LazyLock::force(&COMPACTED_SEGMENTS);
    LazyLock::force(&COMPACTION_BYTES);
    LazyLock::force(&GC_DELETES);
    LazyLock::force(&GC_DELETED_BYTES);
    LazyLock::force(&GC_DELETE_ERRORS);
}
