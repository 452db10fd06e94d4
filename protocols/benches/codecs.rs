//! Hot paths of the wire codecs: what every produce request costs the gateway (record batch
//! validation with its CRC-32C), what compaction costs per batch (decode, re-encode), and an
//! MQTT PUBLISH each way.
//!
//! `cargo bench -p sluice-protocols --bench codecs`

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice_protocols::kafka::batch;
use sluice_protocols::kafka::partitioner::partition_for_key;
use sluice_protocols::kafka::records::{BatchHeader, Record, decode_batch, encode_batch};
use sluice_protocols::mqtt::{MAX_PACKET_SIZE, Packet, Properties, Publish, QoS, Version};

/// A produce batch as a client sends it: `n` records of `size` bytes with 16-byte keys.
fn kafka_batch(n: usize, size: usize) -> (BatchHeader, Vec<Record>, Bytes) {
    let header = BatchHeader {
        base_offset: 0,
        partition_leader_epoch: -1,
        attributes: 0,
        base_timestamp: 1_795_000_000_000,
        max_timestamp: 1_795_000_000_000 + n as i64,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            attributes: 0,
            timestamp_delta: i as i64,
            offset_delta: i as i32,
            key: Some(Bytes::from(format!("key-{i:012}"))),
            value: Some(Bytes::from(vec![(i % 251) as u8; size])),
            headers: Vec::new(),
        })
        .collect();
    let mut out = BytesMut::new();
    encode_batch(&header, &records, &mut out).expect("encodes");
    (header, records, out.freeze())
}

fn kafka(c: &mut Criterion) {
    let (header, records, bytes) = kafka_batch(1000, 1024);
    let mut g = c.benchmark_group("kafka_batch_1000x1KiB");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("validate_and_crc", |b| {
        b.iter(|| {
            let info = batch::validate_produce(black_box(&bytes)).expect("valid");
            batch::verify_crc(&bytes, &info).expect("crc");
        })
    });
    g.bench_function("decode", |b| {
        b.iter(|| decode_batch(black_box(&bytes)).expect("decodes"))
    });
    g.bench_function("encode", |b| {
        b.iter(|| {
            let mut out = BytesMut::with_capacity(bytes.len());
            encode_batch(black_box(&header), black_box(&records), &mut out).expect("encodes");
            out
        })
    });
    g.finish();
    c.bench_function("partition_for_key", |b| {
        b.iter(|| partition_for_key(black_box(b"sensors/plant-7/temperature"), 8))
    });
}

fn mqtt(c: &mut Criterion) {
    let publish = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "sensors/plant-7/temperature".into(),
        packet_id: Some(7),
        properties: Properties::default(),
        payload: Bytes::from(vec![7u8; 128]),
    });
    let mut wire = BytesMut::new();
    sluice_protocols::mqtt::encode(&publish, Version::V5, &mut wire);
    let wire = wire.freeze();
    let mut g = c.benchmark_group("mqtt_publish_128B");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&wire[..]);
            sluice_protocols::mqtt::decode(&mut buf, Some(Version::V5), MAX_PACKET_SIZE)
                .expect("decodes")
        })
    });
    g.bench_function("encode", |b| {
        let mut out = BytesMut::with_capacity(256);
        b.iter(|| {
            out.clear();
            sluice_protocols::mqtt::encode(black_box(&publish), Version::V5, &mut out);
        })
    });
    g.finish();
}

/// Broker-side recompression (a topic's `compression.type`): a 1,000-record batch of JSON
/// readings about 1 KiB each, from the producer's codec to the topic's at Kafka's default
/// levels. Throughput counts the uncompressed batch, so bytes/s is what one core turns over.
fn recompression(c: &mut Criterion) {
    use sluice_protocols::kafka::recompress::{Codec, recompress};
    let records: Vec<Record> = (0..1000)
        .map(|i| {
            let mut v = format!(
                "{{\"device\":\"plant-{}/line-{}\",\"seq\":{i},\"readings\":[",
                i % 17,
                i % 5
            );
            for j in 0..40 {
                v.push_str(&format!(
                    "{{\"t\":{},\"v\":{:.3}}},",
                    1_795_000_000 + i * 40 + j,
                    ((i * 31 + j * 7) % 1000) as f64 / 7.0
                ));
            }
            v.push_str("]}");
            Record {
                attributes: 0,
                timestamp_delta: i as i64,
                offset_delta: i,
                key: Some(Bytes::from(format!("plant-{}", i % 17))),
                value: Some(Bytes::from(v)),
                headers: Vec::new(),
            }
        })
        .collect();
    let header = |codec: i16| BatchHeader {
        base_offset: 0,
        partition_leader_epoch: -1,
        attributes: codec,
        base_timestamp: 1_795_000_000_000,
        max_timestamp: 1_795_000_000_999,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
    let batch = |codec: i16| {
        let mut out = BytesMut::new();
        encode_batch(&header(codec), &records, &mut out).expect("encodes");
        out.freeze()
    };
    let plain = batch(0);
    let mut g = c.benchmark_group("recompress_1000x1KiB_json");
    g.throughput(Throughput::Bytes(plain.len() as u64));
    g.sample_size(20);
    let cases: [(&str, i16, Codec); 7] = [
        ("none_to_zstd3", 0, Codec::Zstd(3)),
        ("none_to_lz4_9", 0, Codec::Lz4(9)),
        ("none_to_gzip", 0, Codec::Gzip(None)),
        ("none_to_snappy", 0, Codec::Snappy),
        ("lz4_to_zstd3", 3, Codec::Zstd(3)),
        ("snappy_to_zstd3", 2, Codec::Zstd(3)),
        ("zstd_to_none", 4, Codec::None),
    ];
    for (name, from, to) in cases {
        let input = batch(from);
        g.bench_function(name, |b| {
            b.iter(|| recompress(black_box(&input), to).expect("recompresses"))
        });
    }
    g.finish();
}

criterion_group!(benches, kafka, mqtt, recompression);
criterion_main!(benches);
