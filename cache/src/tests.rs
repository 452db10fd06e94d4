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

#[tokio::test]
async fn reads_without_fill_use_cached_blocks_and_leave_the_cache_as_it_was() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let dir = tempfile::tempdir().expect("tempdir");
    let size = (2 * BLOCK_SIZE + 1000) as usize;
    let data = object(size);
    let (stored, written) = (Path::from("stored"), Path::from("written"));
    store.put(&stored, data.clone().into()).await.expect("put");
    for cache in caches(store.clone(), dir.path()).await {
        // Not cached: the bytes come from the store, across a block boundary too.
        let r = BLOCK_SIZE - 3..BLOCK_SIZE + 999;
        let got = cache
            .get_range_no_fill(&stored, size as u64, r.clone())
            .await
            .expect("read from the store");
        assert_eq!(got, data.slice(r.start as usize..r.end as usize));
        // Cached: served without the store (which does not have this object).
        cache.insert_object(&written, &data);
        let got = cache
            .get_range_no_fill(&written, size as u64, r.clone())
            .await
            .expect("read from the cache");
        assert_eq!(got, data.slice(r.start as usize..r.end as usize));
    }
    // The reads of `stored` filled nothing: once the store loses it, no cache has it.
    let caches = caches(store.clone(), dir.path()).await;
    for cache in &caches {
        cache
            .get_range_no_fill(&stored, size as u64, 0..10)
            .await
            .expect("read from the store");
    }
    store.delete(&stored).await.expect("delete");
    for cache in &caches {
        assert!(
            cache
                .get_range_no_fill(&stored, size as u64, 0..10)
                .await
                .is_err(),
            "a read without fill left the block cached"
        );
    }
}

#[test]
fn a_short_remainder_joins_the_last_block() {
    let q = BLOCK_SIZE / 4;
    assert_eq!(block_count(0), 0);
    assert_eq!(block_count(10), 1);
    assert_eq!(block_count(BLOCK_SIZE), 1);
    assert_eq!(block_count(BLOCK_SIZE + q - 1), 1);
    assert_eq!(block_count(BLOCK_SIZE + q), 2);
    assert_eq!(block_count(3 * BLOCK_SIZE + 5), 3);
    assert_eq!(
        block_span(3 * BLOCK_SIZE + 5, 2),
        2 * BLOCK_SIZE..3 * BLOCK_SIZE + 5
    );
    assert_eq!(
        block_span(3 * BLOCK_SIZE + 5, 1),
        BLOCK_SIZE..2 * BLOCK_SIZE
    );
}

#[tokio::test]
async fn an_object_slightly_over_a_block_is_one_get() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let dir = tempfile::tempdir().expect("tempdir");
    let size = (BLOCK_SIZE + 1000) as usize;
    let data = object(size);
    let p = Path::from("o");
    store.put(&p, data.clone().into()).await.expect("put");
    let caches = caches(store.clone(), dir.path()).await;
    for cache in &caches {
        let got = cache
            .get_range(&p, size as u64, 10..20)
            .await
            .expect("read");
        assert_eq!(got, data.slice(10..20));
    }
    // That one read fetched the whole object: the rest is served with the store empty.
    store.delete(&p).await.expect("delete");
    for cache in &caches {
        for r in [BLOCK_SIZE + 10..BLOCK_SIZE + 20, 5..size as u64] {
            let got = cache
                .get_range(&p, size as u64, r.clone())
                .await
                .expect("served from the cache");
            assert_eq!(got, data.slice(r.start as usize..r.end as usize));
        }
    }
}
