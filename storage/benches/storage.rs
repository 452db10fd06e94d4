//! Hot paths of storage: encoding a WAL object from a flush's chunks and reading its footer
//! back, and writing record batches into a Parquet segment (what compaction does per batch).
//!
//! `cargo bench -p sluice-storage --bench storage`

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice_protocols::kafka::records::{BatchHeader, Record, encode_batch};
use sluice_storage::segment::{SegmentOptions, SegmentWriter};
use sluice_storage::wal::{self, ChunkInput};
use uuid::Uuid;

fn batch(base_offset: i64, n: usize, size: usize) -> (BatchHeader, Vec<Record>, Bytes) {
    let header = BatchHeader {
        base_offset,
        partition_leader_epoch: -1,
        attributes: 0,
        base_timestamp: 1_795_000_000_000,
        max_timestamp: 1_795_000_000_000,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            attributes: 0,
            timestamp_delta: 0,
            offset_delta: i as i32,
            key: None,
            value: Some(Bytes::from(
                (0..size)
                    .map(|j| ((i * 31 + j) % 251) as u8)
                    .collect::<Vec<u8>>(),
            )),
            headers: Vec::new(),
        })
        .collect();
    let mut out = BytesMut::new();
    encode_batch(&header, &records, &mut out).expect("encodes");
    (header, records, out.freeze())
}

fn wal_objects(c: &mut Criterion) {
    // A flush: 8 partitions, 16 batches of 64 KiB each.
    let (_, _, b) = batch(0, 64, 1024);
    let chunks: Vec<ChunkInput> = (0..8)
        .map(|p| ChunkInput {
            topic_id: Uuid::from_u128(1),
            partition: p,
            batches: vec![b.clone(); 16],
            records: 16 * 64,
            max_timestamp: 1_795_000_000_000,
        })
        .collect();
    let (object, _) = wal::encode(&chunks);
    let mut g = c.benchmark_group("wal_object_8MiB");
    g.throughput(Throughput::Bytes(object.len() as u64));
    g.bench_function("encode", |bench| {
        bench.iter(|| wal::encode(black_box(&chunks)))
    });
    g.bench_function("decode_footer", |bench| {
        bench.iter(|| wal::decode_footer(black_box(&object)).expect("decodes"))
    });
    g.finish();
}

fn segments(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    // 100 batches of 100 records of 1 KiB: about 10 MiB of records.
    let batches: Vec<(BatchHeader, Vec<Record>)> = (0..100)
        .map(|i| {
            let (h, r, _) = batch(i * 100, 100, 1024);
            (h, r)
        })
        .collect();
    let bytes: usize = batches
        .iter()
        .flat_map(|(_, r)| r)
        .map(|r| r.value.as_ref().map_or(0, Bytes::len))
        .sum();
    let mut g = c.benchmark_group("segment_10MiB");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("write_parquet", |bench| {
        bench.iter(|| {
            runtime.block_on(async {
                let mut w = SegmentWriter::new(Vec::new(), SegmentOptions::default(), Vec::new())
                    .expect("writer");
                for (h, r) in &batches {
                    w.append(h, r).await.expect("append");
                }
                w.finish().await.expect("finish")
            })
        })
    });
    g.finish();
}

criterion_group!(benches, wal_objects, segments);
criterion_main!(benches);
