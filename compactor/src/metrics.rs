//! Compactor metrics, declared in one place.

use std::sync::LazyLock;

use prometheus::{
    Histogram, IntCounter, IntCounterVec, IntGauge, register_histogram, register_int_counter,
    register_int_counter_vec, register_int_gauge,
};

pub static SEGMENTS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "sluice_compactor_segments_total",
        "Parquet segments committed"
    )
    .expect("invariant: metric registered once")
});

pub static MERGES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "sluice_compactor_merges_total",
        "Runs of small segments merged into one"
    )
    .expect("invariant: metric registered once")
});

pub static MERGED_SEGMENTS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "sluice_compactor_merged_segments_total",
        "Small segments merged into larger ones (and deleted)"
    )
    .expect("invariant: metric registered once")
});

pub static WAITING_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "sluice_compactor_waiting_wal_bytes",
        "WAL bytes waiting for compaction in this compactor's partitions (last looked at)"
    )
    .expect("invariant: metric registered once")
});

pub static COMPACTED_BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "sluice_compactor_wal_bytes_total",
        "WAL bytes rewritten into segments"
    )
    .expect("invariant: metric registered once")
});

pub static COMPACTED_RECORDS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "sluice_compactor_records_total",
        "Records rewritten into segments"
    )
    .expect("invariant: metric registered once")
});

pub static SEGMENT_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "sluice_compactor_segment_seconds",
        "Time to write and commit one segment",
        vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]
    )
    .expect("invariant: metric registered once")
});

pub static DELETED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_compactor_deleted_objects_total",
        "Objects deleted by kind: wal (compacted or orphaned), staging (orphaned), segment (retention or deleted topic)",
        &["kind"]
    )
    .expect("invariant: metric registered once")
});

pub static RETENTION_MOVES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "sluice_compactor_log_start_moves_total",
        "Times retention moved a partition's log start"
    )
    .expect("invariant: metric registered once")
});

pub static CHECKPOINT_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "sluice_compactor_checkpoint_bytes",
        "Size of the latest checkpoint of the log state"
    )
    .expect("invariant: metric registered once")
});

pub static PASS_ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "sluice_compactor_pass_errors_total",
        "Compaction passes that failed (retried on the next pass)"
    )
    .expect("invariant: metric registered once")
});
