//! A narrow cache of object byte ranges over foyer's hybrid (memory + SSD) cache.
//!
//! Objects are cut into fixed, aligned blocks. A read takes the blocks its range covers:
//! each block comes from memory, else from the local disk, else from one object store
//! GET; concurrent misses on the same block share that one GET (foyer's `get_or_fetch`).
//! Objects a gateway has just written are inserted whole, so tail reads never go back to
//! the object store.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};

use bytes::{Bytes, BytesMut};
use foyer::{
    BlockEngineConfig, Cache, CacheBuilder, DeviceBuilder, FsDeviceBuilder, HybridCache,
    HybridCacheBuilder, PsyncIoEngineConfig,
};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use prometheus::{IntCounter, IntCounterVec, register_int_counter_vec};

/// Block size: a catch-up read costs at most one GET per block.
pub const BLOCK_SIZE: u64 = 4 << 20;
/// The disk engine's unit of allocation; must hold the largest block (1.25 blocks).
const DISK_BLOCK_SIZE: usize = 16 << 20;

static LOOKUPS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_cache_lookups_total",
        "Cache block lookups by result: hit (memory or disk) or miss (object store GET)",
        &["result"]
    )
    .expect("invariant: metric registered once")
});
// Resolved once: the hit path should not hash a label per lookup.
static LOOKUP: LazyLock<IntCounter> = LazyLock::new(|| LOOKUPS.with_label_values(&["lookup"]));
static MISS: LazyLock<IntCounter> = LazyLock::new(|| LOOKUPS.with_label_values(&["miss"]));

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("object store read of {path} failed: {source}")]
    Fetch {
        path: String,
        #[source]
        source: anyhow::Error,
    },
    #[error("range {start}..{end} is outside object {path} of {size} bytes")]
    OutOfRange {
        path: String,
        start: u64,
        end: u64,
        size: u64,
    },
    #[error("cannot open the disk cache: {0}")]
    Open(String),
}

/// Where the cache keeps its bytes.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub memory_bytes: usize,
    /// `None`: memory only.
    pub disk: Option<(PathBuf, usize)>,
}

enum Blocks {
    Memory(Cache<String, Bytes>),
    Hybrid(HybridCache<String, Bytes>),
}

/// Object byte ranges through memory, local disk, then the object store.
pub struct RangeCache {
    blocks: Blocks,
    store: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for RangeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RangeCache").finish_non_exhaustive()
    }
}

/// Shards of the memory tier. Each shard evicts on its own, so a shard of a few blocks
/// drops recent blocks while others hold old ones: with foyer's default of 8 shards, a
/// 256 MiB tier kept well under the last 256 MiB written. A shard per GiB keeps each one
/// hundreds of blocks deep; lookups are per partition fetch, so the lock is never hot.
fn memory_shards(memory_bytes: usize) -> usize {
    (memory_bytes >> 30).clamp(1, 16)
}

/// The disk tier outlives the process, so a key names the block layout it was cut with:
/// `2` since a short remainder joins the last block ([`block_count`]); blocks of the
/// earlier layout are never looked up again and age out.
fn block_key(path: &Path, block: u64) -> String {
    format!("{path}#2:{block}")
}

impl RangeCache {
    pub async fn open(
        config: &CacheConfig,
        store: Arc<dyn ObjectStore>,
    ) -> Result<Self, CacheError> {
        let weigh = |_: &String, v: &Bytes| v.len();
        let shards = memory_shards(config.memory_bytes);
        let blocks = match &config.disk {
            None => Blocks::Memory(
                CacheBuilder::new(config.memory_bytes)
                    .with_shards(shards)
                    .with_weighter(weigh)
                    .build(),
            ),
            Some((dir, capacity)) => {
                std::fs::create_dir_all(dir).map_err(|e| CacheError::Open(e.to_string()))?;
                let device = FsDeviceBuilder::new(dir)
                    .with_capacity(*capacity)
                    .build()
                    .map_err(|e| CacheError::Open(e.to_string()))?;
                let cache = HybridCacheBuilder::new()
                    .with_name("sluice-blocks")
                    .memory(config.memory_bytes)
                    .with_shards(shards)
                    .with_weighter(weigh)
                    .storage()
                    .with_io_engine_config(PsyncIoEngineConfig::new())
                    .with_engine_config(
                        BlockEngineConfig::new(device).with_block_size(DISK_BLOCK_SIZE),
                    )
                    .build()
                    .await
                    .map_err(|e| CacheError::Open(e.to_string()))?;
                Blocks::Hybrid(cache)
            }
        };
        Ok(Self { blocks, store })
    }

    /// Caches a whole object that was just written.
    /// Writes out what the disk tier still buffers and stops its writers: called once a
    /// process has finished with the cache, so its tasks do not end with the runtime.
    pub async fn close(&self) {
        if let Blocks::Hybrid(cache) = &self.blocks
            && let Err(e) = cache.close().await
        {
            tracing::warn!(error = %e, "closing the disk cache failed");
        }
    }

    pub fn insert_object(&self, path: &Path, object: &Bytes) {
        let size = object.len() as u64;
        for b in 0..block_count(size) {
            let span = block_span(size, b);
            let key = block_key(path, b);
            let block = object.slice(span.start as usize..span.end as usize);
            match &self.blocks {
                Blocks::Memory(c) => {
                    c.insert(key, block);
                }
                Blocks::Hybrid(c) => {
                    c.insert(key, block);
                }
            }
        }
    }

    /// Bytes `range` of the object at `path`, whose total size is `object_size`.
    pub async fn get_range(
        &self,
        path: &Path,
        object_size: u64,
        range: Range<u64>,
    ) -> Result<Bytes, CacheError> {
        let Some(blocks) = check_range(path, object_size, &range)? else {
            return Ok(Bytes::new());
        };
        let first = *blocks.start();
        let fetches = blocks.map(|b| self.block(path, object_size, b));
        let blocks = futures::future::try_join_all(fetches).await?;
        Ok(assemble(first, &blocks, &range))
    }

    /// Bytes `range` of the object at `path` from the cache if it holds them, else from one
    /// object store GET of just that range, which does not fill the cache: for reads of
    /// older data (compaction) that would otherwise push out what tail readers need.
    pub async fn get_range_no_fill(
        &self,
        path: &Path,
        object_size: u64,
        range: Range<u64>,
    ) -> Result<Bytes, CacheError> {
        let Some(block_ids) = check_range(path, object_size, &range)? else {
            return Ok(Bytes::new());
        };
        let first = *block_ids.start();
        let mut blocks = Vec::new();
        for b in block_ids {
            let key = block_key(path, b);
            let cached = match &self.blocks {
                Blocks::Memory(c) => c.get(&key).map(|e| e.value().clone()),
                // A failed disk read is a miss: the object store still has the bytes.
                Blocks::Hybrid(c) => c.get(&key).await.ok().flatten().map(|e| e.value().clone()),
            };
            LOOKUP.inc();
            match cached {
                Some(block) => blocks.push(block),
                None => {
                    MISS.inc();
                    return self.store.get_range(path, range).await.map_err(|e| {
                        CacheError::Fetch {
                            path: path.to_string(),
                            source: e.into(),
                        }
                    });
                }
            }
        }
        Ok(assemble(first, &blocks, &range))
    }

    async fn block(&self, path: &Path, object_size: u64, block: u64) -> Result<Bytes, CacheError> {
        let key = block_key(path, block);
        let Range { start, end } = block_span(object_size, block);
        let store = self.store.clone();
        let owned_path = path.clone();
        let fetch = move || async move {
            MISS.inc();
            store.get_range(&owned_path, start..end).await
        };
        let entry = match &self.blocks {
            Blocks::Memory(c) => c.get_or_fetch(&key, fetch).await.map(|e| e.value().clone()),
            Blocks::Hybrid(c) => c.get_or_fetch(&key, fetch).await.map(|e| e.value().clone()),
        };
        LOOKUP.inc();
        entry.map_err(|e| CacheError::Fetch {
            path: path.to_string(),
            source: anyhow::anyhow!(e.to_string()),
        })
    }
}

/// The blocks `range` covers, `None` when it is empty; an error when it is outside the
/// object.
fn check_range(
    path: &Path,
    object_size: u64,
    range: &Range<u64>,
) -> Result<Option<std::ops::RangeInclusive<u64>>, CacheError> {
    if range.start > range.end || range.end > object_size {
        return Err(CacheError::OutOfRange {
            path: path.to_string(),
            start: range.start,
            end: range.end,
            size: object_size,
        });
    }
    if range.is_empty() {
        return Ok(None);
    }
    let last = block_count(object_size) - 1;
    Ok(Some(
        (range.start / BLOCK_SIZE).min(last)..=((range.end - 1) / BLOCK_SIZE).min(last),
    ))
}

/// Blocks of an object of `size` bytes: [`BLOCK_SIZE`] each, except that a remainder under a
/// quarter block joins the last full block. A flush aims at 4 MiB and overshoots a little,
/// so without this most WAL objects would cost a catch-up reader two GETs.
fn block_count(size: u64) -> u64 {
    let (full, rem) = (size / BLOCK_SIZE, size % BLOCK_SIZE);
    if rem == 0 || (full > 0 && rem < BLOCK_SIZE / 4) {
        full
    } else {
        full + 1
    }
}

/// The bytes block `b` of an object of `size` bytes covers: it starts at `b * BLOCK_SIZE`.
fn block_span(size: u64, b: u64) -> Range<u64> {
    let start = b * BLOCK_SIZE;
    let end = if b + 1 == block_count(size) {
        size
    } else {
        start + BLOCK_SIZE
    };
    start..end
}

/// `range` out of the consecutive blocks that cover it: a slice of one block, or a copy.
fn assemble(first: u64, blocks: &[Bytes], range: &Range<u64>) -> Bytes {
    let offset_in_first = (range.start - first * BLOCK_SIZE) as usize;
    let len = (range.end - range.start) as usize;
    if blocks.len() == 1 {
        return blocks[0].slice(offset_in_first..offset_in_first + len);
    }
    let mut out = BytesMut::with_capacity(len);
    for (i, b) in blocks.iter().enumerate() {
        let from = if i == 0 { offset_in_first } else { 0 };
        let to = (len - out.len() + from).min(b.len());
        out.extend_from_slice(&b[from..to]);
    }
    out.freeze()
}

#[cfg(test)]
mod tests;
