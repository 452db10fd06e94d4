use super::*;
use crate::records::{Chunk, CommitChunk, TOPIC_VERSION};
use crate::store::KeyValue;
use bytes::Bytes;

fn event(kind: EventKind, key: String, value: Bytes, rev: Revision) -> WatchEvent {
    WatchEvent {
        kind,
        kv: KeyValue {
            key: Bytes::from(key),
            value,
            create_revision: rev,
            mod_revision: rev,
            version: 1,
            lease: None,
        },
    }
}

fn topic(id: u128, partitions: u32) -> TopicRecord {
    TopicRecord {
        v: TOPIC_VERSION,
        id: Uuid::from_u128(id),
        name: "t".into(),
        partitions,
        configs: Default::default(),
    }
}

/// A plain (non-idempotent) batch of `records` records.
fn plain(records: u32) -> BatchMeta {
    BatchMeta {
        size: 10,
        records,
        max_timestamp: i64::from(records),
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    }
}

fn idem(producer_id: i64, epoch: i16, base_sequence: i32, records: u32) -> BatchMeta {
    BatchMeta {
        producer_id,
        producer_epoch: epoch,
        base_sequence,
        ..plain(records)
    }
}

fn commit_batches(topic: u128, parts: &[(u32, Vec<BatchMeta>)]) -> Bytes {
    CommitRecord {
        object: "wal/x".into(),
        object_size: 1000,
        digest: None,
        chunks: parts
            .iter()
            .map(|(partition, batches)| CommitChunk {
                chunk: Chunk {
                    topic_id: Uuid::from_u128(topic),
                    partition: *partition,
                    position: 0,
                    size: batches.iter().map(|b| b.size).sum(),
                    records: batches.iter().map(|b| b.records).sum(),
                    max_timestamp: batches.iter().map(|b| b.max_timestamp).max().unwrap_or(-1),
                },
                batches: batches.clone(),
            })
            .collect(),
    }
    .encode()
}

fn commit(topic: u128, parts: &[(u32, u32)]) -> Bytes {
    let parts: Vec<(u32, Vec<BatchMeta>)> =
        parts.iter().map(|&(p, r)| (p, vec![plain(r)])).collect();
    commit_batches(topic, &parts)
}

fn outcomes(a: Applied) -> Vec<Vec<BatchOutcome>> {
    match a {
        Applied::Commit { outcomes, .. } => outcomes,
        other => panic!("not a commit: {other:?}"),
    }
}

#[test]
fn idempotent_batches_are_deduplicated_ordered_and_fenced() {
    use BatchOutcome::*;
    let mut s = LogState::default();
    s.apply(&event(
        EventKind::Put,
        keys::topic("t"),
        topic(1, 1).encode(),
        1,
    ))
    .expect("apply");
    let mut rev = 1;
    let mut apply = |batches: Vec<BatchMeta>| {
        rev += 1;
        outcomes(
            s.apply(&event(
                EventKind::Put,
                keys::commit(&rev.to_string()),
                commit_batches(1, &[(0, batches)]),
                rev,
            ))
            .expect("apply"),
        )
        .remove(0)
    };
    // Producer 7: seq 0..=2, then 3..=4; a retry of the first batch is a duplicate.
    assert_eq!(
        apply(vec![idem(7, 0, 0, 3), plain(1), idem(7, 0, 3, 2)]),
        vec![Appended(0), Appended(3), Appended(4)]
    );
    assert_eq!(apply(vec![idem(7, 0, 0, 3)]), vec![Duplicate(0)]);
    assert_eq!(
        apply(vec![idem(7, 0, 3, 2), idem(7, 0, 5, 1)]),
        vec![Duplicate(4), Appended(6)]
    );
    // A gap is out of order; nothing is appended.
    assert_eq!(apply(vec![idem(7, 0, 9, 1)]), vec![OutOfOrderSequence]);
    // A new epoch must start at 0; after it, the old epoch is fenced.
    assert_eq!(apply(vec![idem(7, 1, 4, 1)]), vec![OutOfOrderSequence]);
    assert_eq!(apply(vec![idem(7, 1, 0, 1)]), vec![Appended(7)]);
    assert_eq!(apply(vec![idem(7, 0, 6, 1)]), vec![InvalidProducerEpoch]);
    // Another producer is independent; an unknown producer may start anywhere.
    assert_eq!(apply(vec![idem(8, 0, 100, 2)]), vec![Appended(8)]);
    assert_eq!(
        apply(vec![idem(8, 0, 102, 1), idem(8, 0, 102, 1)]),
        vec![Appended(10), Duplicate(10)]
    );
    // Sequences wrap.
    assert_eq!(
        apply(vec![idem(9, 0, i32::MAX - 1, 2), idem(9, 0, 0, 1)]),
        vec![Appended(11), Appended(13)]
    );
    let p = s.partition(&Uuid::from_u128(1), 0).expect("partition");
    assert_eq!(p.high_watermark, 14);
    // Rejected batches left gaps in the chunk; index entries still cover every offset once.
    let mut next = 0;
    for e in &p.entries {
        assert_eq!(e.base_offset, next);
        next = e.end_offset();
    }
    assert_eq!(next, 14);
}

#[test]
fn commits_assign_dense_offsets_in_order() {
    let mut s = LogState::default();
    s.apply(&event(
        EventKind::Put,
        keys::topic("t"),
        topic(1, 2).encode(),
        1,
    ))
    .expect("apply");
    let a = s
        .apply(&event(
            EventKind::Put,
            keys::commit("a"),
            commit(1, &[(0, 3), (1, 2)]),
            2,
        ))
        .expect("apply");
    let b = s
        .apply(&event(
            EventKind::Put,
            keys::commit("b"),
            commit(1, &[(0, 4), (5, 1)]),
            3,
        ))
        .expect("apply");
    use BatchOutcome::*;
    assert_eq!(outcomes(a), vec![vec![Appended(0)], vec![Appended(0)]]);
    assert_eq!(outcomes(b), vec![vec![Appended(3)], vec![Gone]]);
    let p0 = s.partition(&Uuid::from_u128(1), 0).expect("partition");
    assert_eq!(p0.high_watermark, 7);
    assert_eq!(p0.entries_from(2).len(), 2);
    assert_eq!(p0.entries_from(3).len(), 1);
    assert_eq!(p0.entries_from(7).len(), 0);
    assert_eq!(
        p0.first_span_at_or_after(4).map(|e| e.base_offset()),
        Some(3)
    );
    assert_eq!(s.revision(), 3);
}

#[test]
fn recreated_topic_starts_empty_and_old_commits_are_ignored() {
    let mut s = LogState::default();
    s.apply(&event(
        EventKind::Put,
        keys::topic("t"),
        topic(1, 1).encode(),
        1,
    ))
    .expect("apply");
    s.apply(&event(
        EventKind::Put,
        keys::commit("a"),
        commit(1, &[(0, 3)]),
        2,
    ))
    .expect("apply");
    s.apply(&event(EventKind::Delete, keys::topic("t"), Bytes::new(), 3))
        .expect("apply");
    s.apply(&event(
        EventKind::Put,
        keys::topic("t"),
        topic(2, 1).encode(),
        4,
    ))
    .expect("apply");
    let late = s
        .apply(&event(
            EventKind::Put,
            keys::commit("b"),
            commit(1, &[(0, 3)]),
            5,
        ))
        .expect("apply");
    assert_eq!(outcomes(late), vec![vec![BatchOutcome::Gone]]);
    assert_eq!(
        s.partition(&Uuid::from_u128(2), 0)
            .map(|p| p.high_watermark),
        Some(0)
    );
    // Growing the partition count keeps existing partitions.
    s.apply(&event(
        EventKind::Put,
        keys::commit("c"),
        commit(2, &[(0, 2)]),
        6,
    ))
    .expect("apply");
    s.apply(&event(
        EventKind::Put,
        keys::topic("t"),
        topic(2, 3).encode(),
        7,
    ))
    .expect("apply");
    let t = s.topic("t").expect("topic");
    assert_eq!(t.partitions.len(), 3);
    assert_eq!(t.partitions[0].high_watermark, 2);
}

fn segment(base: i64, end: i64) -> crate::records::SegmentRecord {
    crate::records::SegmentRecord {
        v: crate::records::SEGMENT_RECORD_VERSION,
        topic_id: Uuid::from_u128(1),
        partition: 0,
        base_offset: base,
        end_offset: end,
        path: format!("topics/t/partition=0/{base}.parquet"),
        staging: Some(format!("staging/{base}.parquet")),
        size: 100,
        min_timestamp: 1,
        max_timestamp: end,
        wal_bytes: 200,
    }
}

/// A log with topic 1 ("t", one partition) and commits of 3, 4 and 5 records at
/// revisions 2 to 4: entries [0,3), [3,7), [7,12).
fn three_commits() -> LogState {
    let mut s = LogState::default();
    s.apply(&event(
        EventKind::Put,
        keys::topic("t"),
        topic(1, 1).encode(),
        1,
    ))
    .expect("apply");
    for (rev, (id, n)) in [("a", 3), ("b", 4), ("c", 5)].into_iter().enumerate() {
        s.apply(&event(
            EventKind::Put,
            keys::commit(id),
            commit(1, &[(0, n)]),
            rev as i64 + 2,
        ))
        .expect("apply");
    }
    s
}

#[test]
fn segments_replace_wal_entries_and_log_starts_drop_what_is_before_them() {
    let mut s = three_commits();
    let id = Uuid::from_u128(1);
    let seg = segment(0, 7);
    s.apply(&event(
        EventKind::Put,
        keys::segment(&id, 0, 0),
        seg.encode(),
        5,
    ))
    .expect("apply");
    let p = s.partition(&id, 0).expect("partition");
    assert_eq!(p.segments, vec![seg.clone()]);
    assert_eq!(p.entries.len(), 1);
    assert_eq!(p.entries[0].base_offset, 7);
    assert_eq!(p.compacted_offset(), 7);
    assert_eq!(p.segment_for(6).map(|s| s.base_offset), Some(0));
    assert_eq!(p.segment_for(7), None);
    let spans: Vec<(i64, i64)> = p
        .spans()
        .map(|s| (s.base_offset(), s.end_offset()))
        .collect();
    assert_eq!(spans, vec![(0, 7), (7, 12)]);
    // Publishing updates the same segment.
    let published = crate::records::SegmentRecord {
        staging: None,
        ..seg
    };
    s.apply(&event(
        EventKind::Put,
        keys::segment(&id, 0, 0),
        published.encode(),
        6,
    ))
    .expect("apply");
    let p = s.partition(&id, 0).expect("partition");
    assert_eq!(p.segments[0].read_path(), "topics/t/partition=0/0.parquet");
    // The log start moves forward only, never past the high watermark.
    let start = |o: i64| crate::records::LogStartRecord { v: 1, offset: o }.encode();
    s.apply(&event(EventKind::Put, keys::log_start(&id, 0), start(5), 7))
        .expect("apply");
    let p = s.partition(&id, 0).expect("partition");
    assert_eq!(
        (p.log_start_offset, p.segments.len(), p.entries.len()),
        (5, 1, 1)
    );
    s.apply(&event(EventKind::Put, keys::log_start(&id, 0), start(2), 8))
        .expect("apply");
    assert_eq!(s.partition(&id, 0).map(|p| p.log_start_offset), Some(5));
    s.apply(&event(EventKind::Put, keys::log_start(&id, 0), start(8), 9))
        .expect("apply");
    let p = s.partition(&id, 0).expect("partition");
    assert_eq!(
        (p.log_start_offset, p.segments.len(), p.entries.len()),
        (8, 0, 1)
    );
    s.apply(&event(
        EventKind::Put,
        keys::log_start(&id, 0),
        start(99),
        10,
    ))
    .expect("apply");
    let p = s.partition(&id, 0).expect("partition");
    assert_eq!((p.log_start_offset, p.entries.len()), (12, 0));
    // Removing records a checkpoint holds changes nothing.
    let before = s.clone();
    s.apply(&event(
        EventKind::Delete,
        keys::segment(&id, 0, 0),
        Bytes::new(),
        11,
    ))
    .expect("apply");
    s.apply(&event(
        EventKind::Delete,
        keys::commit("a"),
        Bytes::new(),
        12,
    ))
    .expect("apply");
    assert_eq!(s.partition(&id, 0), before.partition(&id, 0));
}

#[test]
fn a_merged_segment_replaces_its_members_in_any_order() {
    let id = Uuid::from_u128(1);
    let put = |s: &mut LogState, seg: &crate::records::SegmentRecord, rev: i64| {
        s.apply(&event(
            EventKind::Put,
            keys::segment(&id, 0, seg.base_offset),
            seg.encode(),
            rev,
        ))
        .expect("apply");
    };
    let members = [segment(0, 3), segment(3, 7), segment(7, 12)];
    let merged = crate::records::SegmentRecord {
        path: "topics/t/partition=0/merged.parquet".into(),
        ..segment(0, 7)
    };
    let ranges = |s: &LogState| -> Vec<(i64, i64, String)> {
        s.partition(&id, 0)
            .expect("partition")
            .segments
            .iter()
            .map(|k| (k.base_offset, k.end_offset, k.path.clone()))
            .collect()
    };
    let want = vec![
        (0, 7, merged.path.clone()),
        (7, 12, members[2].path.clone()),
    ];
    // In revision order: the members, then the merge of the first two.
    let mut s = three_commits();
    for (i, m) in members.iter().enumerate() {
        put(&mut s, m, 5 + i as i64);
    }
    put(&mut s, &merged, 8);
    assert_eq!(ranges(&s), want);
    assert!(s.partition(&id, 0).is_some_and(|p| p.entries.is_empty()));
    // A member's record seen again (or after the merge, as when loading by key) is ignored.
    put(&mut s, &members[1], 9);
    assert_eq!(ranges(&s), want);
    let mut s = three_commits();
    put(&mut s, &merged, 5);
    for (i, m) in members.iter().enumerate() {
        put(&mut s, m, 6 + i as i64);
    }
    assert_eq!(ranges(&s), want);
    // Publishing the merged segment updates it in place.
    let published = crate::records::SegmentRecord {
        staging: None,
        ..merged.clone()
    };
    put(&mut s, &published, 9);
    assert_eq!(ranges(&s), want);
    assert_eq!(
        s.partition(&id, 0).map(|p| p.segments[0].staging.clone()),
        Some(None)
    );
}

#[test]
fn checkpoint_golden_v1_round_trips() {
    let mut s = three_commits();
    let id = Uuid::from_u128(1);
    s.apply(&event(
        EventKind::Put,
        keys::segment(&id, 0, 0),
        segment(0, 3).encode(),
        5,
    ))
    .expect("apply");
    s.apply(&event(
        EventKind::Put,
        keys::commit("d"),
        commit_batches(1, &[(0, vec![idem(7, 0, 0, 2), idem(7, 0, 2, 1)])]),
        6,
    ))
    .expect("apply");
    let bytes = s.encode_checkpoint();
    let golden = crate::golden::check_golden("checkpoint-v1.bin", &bytes);
    let back = LogState::decode_checkpoint(&golden).expect("decode");
    assert_eq!(back, s);
    assert_eq!(back.revision(), 6);
    let mut corrupt = golden.clone();
    corrupt[20] ^= 1;
    assert!(LogState::decode_checkpoint(&corrupt).is_err());
    assert!(LogState::decode_checkpoint(&golden[..golden.len() - 1]).is_err());
}
