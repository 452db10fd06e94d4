//! Hot paths of the commit log: applying a commit (every gateway does it for every flush of
//! every gateway) and finding where an offset lives (every fetch does it per partition).
//!
//! `cargo bench -p sluice-metadata --bench log`

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use sluice_metadata::keys;
use sluice_metadata::log::LogState;
use sluice_metadata::records::{
    BatchMeta, Chunk, CommitChunk, CommitRecord, TOPIC_VERSION, TopicRecord,
};
use sluice_metadata::{EventKind, KeyValue, Revision, WatchEvent};
use uuid::Uuid;

const TOPIC: Uuid = Uuid::from_u128(7);
const PARTITIONS: u32 = 8;
/// Records per chunk: 64 KiB of 1 KiB records per partition per flush.
const RECORDS: u32 = 64;

fn event(key: String, value: Bytes, rev: Revision) -> WatchEvent {
    WatchEvent {
        kind: EventKind::Put,
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

/// A flush's commit: one chunk of `batches` batches for each of the topic's partitions.
fn commit(object: &str, batches: u32) -> Bytes {
    let batch = BatchMeta {
        size: RECORDS * 1100 / batches,
        records: RECORDS / batches,
        max_timestamp: 1_795_000_000_000,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
    CommitRecord {
        object: object.to_string(),
        object_size: u64::from(PARTITIONS * batch.size * batches),
        digest: None,
        chunks: (0..PARTITIONS)
            .map(|p| CommitChunk {
                chunk: Chunk {
                    topic_id: TOPIC,
                    partition: p,
                    position: u64::from(p * batch.size * batches),
                    size: batch.size * batches,
                    records: RECORDS,
                    max_timestamp: batch.max_timestamp,
                },
                batches: vec![batch; batches as usize],
            })
            .collect(),
    }
    .encode()
}

/// A log with one topic of [`PARTITIONS`] partitions and `commits` commits applied.
fn log_with(commits: i64) -> LogState {
    let mut s = LogState::default();
    let topic = TopicRecord {
        v: TOPIC_VERSION,
        id: TOPIC,
        name: "bench".into(),
        partitions: PARTITIONS,
        configs: Default::default(),
    };
    s.apply(&event(keys::topic("bench"), topic.encode(), 1))
        .expect("topic applies");
    for rev in 2..commits + 2 {
        let id = format!("wal-{rev:020}");
        s.apply(&event(keys::commit(&id), commit(&id, 4), rev))
            .expect("commit applies");
    }
    s
}

fn apply(c: &mut Criterion) {
    let mut g = c.benchmark_group("log_apply_commit_8_partitions");
    g.throughput(Throughput::Elements(1));
    let value = commit("wal-bench", 4);
    g.bench_function("decode", |b| {
        b.iter(|| CommitRecord::decode(black_box(&value)).expect("decodes"))
    });
    // Applying onto a log that already holds 100,000 commits per partition; each iteration
    // appends one more (the log grows as it does in a running gateway).
    let mut log = log_with(100_000);
    let mut rev = 1_000_000;
    g.bench_function("decode_and_apply", |b| {
        b.iter_batched(
            || {
                rev += 1;
                event(keys::commit("wal-bench"), value.clone(), rev)
            },
            |e| log.apply(&e).expect("applies"),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn lookup(c: &mut Criterion) {
    let log = log_with(100_000);
    let p = log.partition(&TOPIC, 3).expect("partition");
    let hw = p.high_watermark;
    let mut g = c.benchmark_group("index_lookup_100k_entries");
    g.throughput(Throughput::Elements(1));
    // The tail (what a caught-up consumer asks for) and offsets spread over the log.
    g.bench_function("tail", |b| {
        b.iter(|| black_box(p.entries_from(black_box(hw - 1)).len()))
    });
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    g.bench_function("random_offset", |b| {
        b.iter(|| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let offset = (x % hw as u64) as i64;
            black_box(p.entries_from(offset).first().map(|e| e.position))
        })
    });
    g.finish();
}

criterion_group!(benches, apply, lookup);
criterion_main!(benches);
