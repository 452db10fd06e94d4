use super::*;
use std::sync::Arc;

use sluice_metadata::records::{SEGMENT_RECORD_VERSION, SegmentRecord};
use uuid::Uuid;

const DAY: i64 = 86_400_000;
/// Noon on some day.
const NOON: i64 = 20_000 * DAY + DAY / 2;

/// An entry of `size` bytes and 10 records, written `age_ms` before NOON.
fn entry(base: i64, size: u32, age_ms: i64, max_ts: i64) -> IndexEntry {
    let ts = uuid::Timestamp::from_unix(
        uuid::NoContext,
        ((NOON - age_ms) / 1000) as u64,
        (((NOON - age_ms) % 1000) * 1_000_000) as u32,
    );
    IndexEntry {
        base_offset: base,
        records: 10,
        object: Arc::from(format!("wal/{}.wal", Uuid::new_v7(ts)).as_str()),
        object_size: 1 << 20,
        position: 0,
        size,
        max_timestamp: max_ts,
    }
}

fn entries(n: usize, size: u32, age_ms: i64) -> Vec<IndexEntry> {
    (0..n)
        .map(|i| entry(i as i64 * 10, size, age_ms, NOON))
        .collect()
}

const TRIGGER: Trigger = Trigger {
    target_bytes: 1000,
    max_age_ms: 60_000,
    max_entries: 50,
};

#[test]
fn nothing_is_due_until_a_trigger_fires() {
    assert_eq!(next_segment(&[], &TRIGGER, NOON, None), None);
    assert_eq!(
        next_segment(&entries(5, 100, 1000), &TRIGGER, NOON, None),
        None
    );
    // Size: ten entries of 100 bytes reach the target; a segment takes exactly those.
    assert_eq!(
        next_segment(&entries(12, 100, 1000), &TRIGGER, NOON, None),
        Some(10)
    );
    // Age: everything waiting, up to the target.
    assert_eq!(
        next_segment(&entries(5, 100, 61_000), &TRIGGER, NOON, None),
        Some(5)
    );
    // Entry count.
    assert_eq!(
        next_segment(&entries(60, 1, 1000), &TRIGGER, NOON, None),
        Some(50)
    );
    // An oversized entry still makes a segment on its own.
    assert_eq!(
        next_segment(&entries(3, 5000, 1000), &TRIGGER, NOON, None),
        Some(1)
    );
}

#[test]
fn forcing_takes_what_lies_below_the_forced_offset() {
    let e = entries(5, 100, 1000);
    assert_eq!(next_segment(&e, &TRIGGER, NOON, Some(30)), Some(3));
    assert_eq!(next_segment(&e, &TRIGGER, NOON, Some(1_000)), Some(5));
    assert_eq!(next_segment(&e, &TRIGGER, NOON, Some(0)), None);
    // Forced segments still respect the target size.
    assert_eq!(
        next_segment(&entries(30, 100, 1000), &TRIGGER, NOON, Some(1_000)),
        Some(10)
    );
}

#[test]
fn segments_end_at_a_day_boundary() {
    let mut e = entries(4, 100, 61_000);
    e[2].max_timestamp = NOON + DAY;
    e[3].max_timestamp = NOON + DAY;
    assert_eq!(next_segment(&e, &TRIGGER, NOON, None), Some(2));
    assert_eq!(next_segment(&e[2..], &TRIGGER, NOON, None), Some(2));
}

fn segment(base: i64, end: i64, size: u64, max_ts: i64) -> SegmentRecord {
    SegmentRecord {
        v: SEGMENT_RECORD_VERSION,
        topic_id: Uuid::nil(),
        partition: 0,
        base_offset: base,
        end_offset: end,
        path: String::new(),
        staging: None,
        size,
        min_timestamp: max_ts,
        max_timestamp: max_ts,
        wal_bytes: size,
    }
}

#[test]
fn retention_removes_whole_old_or_excess_segments_only() {
    let log = PartitionLog {
        log_start_offset: 0,
        high_watermark: 40,
        segments: vec![
            segment(0, 10, 100, NOON - 3 * DAY),
            segment(10, 20, 100, NOON - 2 * DAY),
            segment(20, 30, 100, NOON - DAY / 2),
        ],
        entries: vec![entry(30, 100, 1000, NOON - 5 * DAY)],
        ..Default::default()
    };
    // By time: the two older than a day go; WAL data never does, however old.
    assert_eq!(retention_start(&log, DAY, -1, NOON), Some(20));
    assert_eq!(retention_start(&log, 10 * DAY, -1, NOON), None);
    assert_eq!(retention_start(&log, -1, -1, NOON), None);
    // By size: 400 bytes held; keeping at least 250 drops one segment, 100 drops three.
    assert_eq!(retention_start(&log, -1, 250, NOON), Some(10));
    assert_eq!(retention_start(&log, -1, 100, NOON), Some(30));
    assert_eq!(retention_start(&log, -1, 0, NOON), Some(30));
    // Nothing moves backwards.
    let later = PartitionLog {
        log_start_offset: 25,
        ..log.clone()
    };
    assert_eq!(retention_start(&later, DAY, -1, NOON), None);
}

fn small(base: i64, end: i64, bytes: u64, max_ts: i64) -> SegmentRecord {
    SegmentRecord {
        wal_bytes: bytes,
        ..segment(base, end, bytes, max_ts)
    }
}

/// Consecutive segments of ten records each, of today, holding `bytes` WAL bytes each.
fn run_of(bytes: &[u64]) -> Vec<SegmentRecord> {
    (0..bytes.len() as i64)
        .map(|i| small(i * 10, i * 10 + 10, bytes[i as usize], NOON))
        .collect()
}

#[test]
fn small_segments_merge_once_they_fill_one_or_cannot_grow() {
    // Three small segments of today, at the end: not yet (they may still grow).
    let mut s = run_of(&[100, 100, 100]);
    assert_eq!(next_merge(&s, 1000, NOON), None);
    // Their day is over: merged as they are.
    assert_eq!(next_merge(&s, 1000, NOON + DAY), Some(0..3));
    // Enough bytes: the run up to the segment that fills it.
    s.extend((3..12).map(|i| small(i * 10, i * 10 + 10, 100, NOON)));
    assert_eq!(next_merge(&s, 1000, NOON), Some(0..10));
    // A segment that is not small ends a run, which cannot grow any more.
    let s = run_of(&[100, 100, 5000, 100]);
    assert_eq!(next_merge(&s, 1000, NOON), Some(0..2));
    // A lone small segment is left alone; the next run is looked at.
    let s = run_of(&[100, 5000, 100, 100, 5000]);
    assert_eq!(next_merge(&s, 1000, NOON), Some(2..4));
}

#[test]
fn merges_keep_to_one_day_and_to_published_segments() {
    let s = vec![
        small(0, 10, 100, NOON - DAY),
        small(10, 20, 100, NOON),
        small(20, 30, 100, NOON),
    ];
    // Yesterday's lone segment is not merged with today's, which may still grow.
    assert_eq!(next_merge(&s, 1000, NOON), None);
    let mut s = run_of(&[100, 100, 100]);
    s[1].staging = Some("staging/x.parquet".into());
    assert_eq!(next_merge(&s, 1000, NOON + DAY), None);
    // A run followed by a small segment of its day that is not yet published may still
    // grow; one followed by a published segment may not.
    let mut s = run_of(&[100, 100, 100]);
    s[2].staging = Some("staging/y.parquet".into());
    assert_eq!(next_merge(&s, 1000, NOON), None);
    s[2].staging = None;
    s[2].wal_bytes = 5000;
    assert_eq!(next_merge(&s, 1000, NOON), Some(0..2));
}

#[test]
fn a_merge_reads_a_bounded_number_of_segments() {
    let s: Vec<_> = (0..MERGE_MAX_SEGMENTS as i64 + 5)
        .map(|i| small(i, i + 1, 1, NOON))
        .collect();
    assert_eq!(next_merge(&s, 1 << 30, NOON), Some(0..MERGE_MAX_SEGMENTS));
}

#[test]
fn everything_waiting_is_compacted_oldest_first_when_over_budget() {
    assert!(relieve(vec![("a", 1, 100), ("b", 2, 200)], 300).is_empty());
    assert_eq!(
        relieve(vec![("a", 3, 100), ("b", 2, 300), ("c", 1, 200)], 400),
        vec!["c", "b", "a"]
    );
    assert!(relieve(Vec::<(&str, i64, u64)>::new(), 0).is_empty());
    // Partitions with nothing waiting are never picked.
    assert_eq!(relieve(vec![("b", 0, 0), ("a", 1, 10)], 0), vec!["a"]);
}
