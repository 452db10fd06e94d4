//! The cache hit path: what a tail fetch costs once the bytes are cached, from the memory
//! tier alone and from a hybrid cache (memory in front of the disk tier, as `sluice serve`
//! runs by default).
//!
//! `cargo bench -p sluice-cache --bench cache`

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use object_store::memory::InMemory;
use object_store::path::Path;
use sluice_cache::{CacheConfig, RangeCache};

/// A WAL object of 8 partitions' chunks of 1 MiB each, as the produce path inserts it.
const OBJECT: usize = 8 << 20;
/// One partition's chunk, which one fetch of that partition reads.
const CHUNK: u64 = 1 << 20;

fn hits(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let configs = [
        (
            "memory",
            CacheConfig {
                memory_bytes: 64 << 20,
                disk: None,
            },
        ),
        (
            "hybrid",
            CacheConfig {
                memory_bytes: 64 << 20,
                disk: Some((dir.path().join("cache"), 256 << 20)),
            },
        ),
    ];
    let object = Bytes::from((0..OBJECT).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let path = Path::from("wal/bench");
    let mut g = c.benchmark_group("cache_hit");
    for (name, config) in configs {
        let cache = rt
            .block_on(RangeCache::open(&config, Arc::new(InMemory::new())))
            .expect("cache opens");
        cache.insert_object(&path, &object);
        // A chunk within one block: one lookup, no copy.
        g.throughput(Throughput::Bytes(CHUNK));
        g.bench_function(format!("{name}/chunk_1MiB"), |b| {
            b.iter(|| {
                let range = 2 * CHUNK..3 * CHUNK;
                let bytes = rt
                    .block_on(cache.get_range(&path, OBJECT as u64, black_box(range)))
                    .expect("hit");
                black_box(bytes.len())
            })
        });
        // A small read (one MQTT message's chunk), where the per-lookup cost shows.
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("{name}/chunk_200B"), |b| {
            b.iter(|| {
                let range = 5_000..5_200;
                let bytes = rt
                    .block_on(cache.get_range(&path, OBJECT as u64, black_box(range)))
                    .expect("hit");
                black_box(bytes.len())
            })
        });
        // A range across two blocks: two lookups and a copy into one buffer.
        g.throughput(Throughput::Bytes(CHUNK));
        g.bench_function(format!("{name}/chunk_1MiB_across_blocks"), |b| {
            b.iter(|| {
                let start = (4 << 20) - CHUNK / 2;
                let bytes = rt
                    .block_on(cache.get_range(
                        &path,
                        OBJECT as u64,
                        black_box(start..start + CHUNK),
                    ))
                    .expect("hit");
                black_box(bytes.len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, hits);
criterion_main!(benches);
