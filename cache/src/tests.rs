use super::*;
use object_store::memory::InMemory;

fn object(len: usize) -> Bytes {
    Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
}

async fn caches(store: Arc<dyn ObjectStore>, dir: &std::path::Path) -> Vec<RangeCache> {
    vec![
        RangeCache::open(
            &CacheConfig {
                memory_bytes: 64 << 20,
                disk: None,
            },
            store.clone(),
        )
        .await
        .expect("memory cache"),
        RangeCache::open(
            &CacheConfig {
                memory_bytes: 64 << 20,
                disk: Some((dir.to_path_buf(), 64 << 20)),
            },
            store,
        )
        .await
        .expect("hybrid cache"),
    ]
}

#[tokio::test]
async fn reads_ranges_across_blocks_from_the_store() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let size = (2 * BLOCK_SIZE + 1000) as usize;
    let data = object(size);
    let p = Path::from("o");
    store.put(&p, data.clone().into()).await.expect("put");
    let dir = tempfile::tempdir().expect("tempdir");
    for cache in caches(store.clone(), dir.path()).await {
        for r in [
            0..10u64,
            5..BLOCK_SIZE + 7,
            BLOCK_SIZE - 3..2 * BLOCK_SIZE + 999,
            0..size as u64,
        ] {
            let got = cache
                .get_range(&p, size as u64, r.clone())
                .await
                .expect("read");
            assert_eq!(
                got,
                data.slice(r.start as usize..r.end as usize),
                "range {r:?}"
            );
        }
        assert!(
            cache
                .get_range(&p, size as u64, 0..size as u64 + 1)
                .await
                .is_err()
        );
    }
}

#[tokio::test]
async fn inserted_objects_are_served_without_the_store() {
    // The object is only in the cache: a read that went to the store would fail.
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let dir = tempfile::tempdir().expect("tempdir");
    let data = object(BLOCK_SIZE as usize + 10);
    let p = Path::from("written");
    for cache in caches(store.clone(), dir.path()).await {
        cache.insert_object(&p, &data);
        let got = cache
            .get_range(&p, data.len() as u64, 100..BLOCK_SIZE + 5)
            .await
            .expect("served from cache");
        assert_eq!(got, data.slice(100..BLOCK_SIZE as usize + 5));
    }
}
