//! Reading compacted data: a segment's footer tells which row group holds an offset; the
//! row group's bytes come through the block cache, are decoded, and rebuilt into record
//! batches with their original boundaries, codec and producer fields. Parsed footers and
//! rebuilt row groups are kept in memory, so a consumer catching up decodes each row
//! group once, not once per fetch.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use foyer::{Cache, CacheBuilder};
use object_store::path::Path;
use sluice_cache::{CacheError, RangeCache};
use sluice_metadata::records::SegmentRecord;
use sluice_protocols::kafka::records::{RecordsError, encode_batch};
use sluice_storage::segment::{
    FOOTER_TAIL, SegmentError, SegmentIndex, footer_length, parse_footer, read_row_group,
};

#[derive(Debug, thiserror::Error)]
pub enum SegmentReadError {
    #[error("{0}")]
    Cache(#[from] CacheError),
    #[error("{0}")]
    Segment(#[from] SegmentError),
    #[error("rebuilding a batch: {0}")]
    Records(#[from] RecordsError),
    #[error("segment {path} is too small to be Parquet")]
    TooSmall { path: String },
    #[error("decoding task failed: {0}")]
    Task(String),
}

/// Consecutive rebuilt batches of one row group: their first offset and their bytes, base
/// offsets already set.
#[derive(Debug, Clone)]
pub struct RowGroupChunk {
    pub first_offset: i64,
    pub bytes: Bytes,
}

pub struct Segments {
    blocks: Arc<RangeCache>,
    footers: Cache<String, Arc<SegmentIndex>>,
    row_groups: Cache<String, Bytes>,
}

impl std::fmt::Debug for Segments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segments").finish_non_exhaustive()
    }
}

/// Parsed footers kept: enough for every segment a busy gateway reads at once.
const FOOTERS_KEPT: usize = 4096;

impl Segments {
    /// `memory_bytes`: how much rebuilt row-group data to keep.
    pub fn new(blocks: Arc<RangeCache>, memory_bytes: usize) -> Self {
        Self {
            blocks,
            footers: CacheBuilder::new(FOOTERS_KEPT).build(),
            row_groups: CacheBuilder::new(memory_bytes)
                .with_weighter(|k: &String, v: &Bytes| k.len() + v.len())
                .build(),
        }
    }

    async fn index_at(&self, path: &str, size: u64) -> Result<Arc<SegmentIndex>, SegmentReadError> {
        let blocks = self.blocks.clone();
        let owned = path.to_string();
        let entry = self
            .footers
            .get_or_fetch(path, move || async move {
                let p = Path::from(owned.as_str());
                if size < (FOOTER_TAIL + 4) as u64 {
                    return Err(SegmentReadError::TooSmall { path: owned });
                }
                let tail = blocks
                    .get_range(&p, size, size - FOOTER_TAIL as u64..size)
                    .await?;
                let len = footer_length(&tail)? as u64;
                let end = size - FOOTER_TAIL as u64;
                let start = end
                    .checked_sub(len)
                    .ok_or_else(|| SegmentReadError::TooSmall {
                        path: owned.clone(),
                    })?;
                let meta = blocks.get_range(&p, size, start..end).await?;
                Ok::<_, SegmentReadError>(Arc::new(parse_footer(&meta)?))
            })
            .await
            .map_err(|e| SegmentReadError::Task(format!("{e:#}")))?;
        Ok(entry.value().clone())
    }

    /// The parsed footer of a segment, from wherever it can be read now (its staging
    /// object until it is published, and its published path once the staging object is
    /// gone).
    pub async fn index(
        &self,
        seg: &SegmentRecord,
    ) -> Result<(String, Arc<SegmentIndex>), SegmentReadError> {
        match self.index_at(seg.read_path(), seg.size).await {
            Ok(i) => Ok((seg.read_path().to_string(), i)),
            Err(e) if seg.staging.is_some() => {
                tracing::debug!(error = %e, "staging segment unreadable; trying its published path");
                Ok((seg.path.clone(), self.index_at(&seg.path, seg.size).await?))
            }
            Err(e) => Err(e),
        }
    }

    /// The rebuilt row group `i`.
    pub async fn row_group(
        &self,
        path: &str,
        size: u64,
        index: Arc<SegmentIndex>,
        i: usize,
    ) -> Result<RowGroupChunk, SegmentReadError> {
        let span = index.row_groups[i].clone();
        let first_offset = span.first_offset;
        let key = format!("{path}#{i}");
        let blocks = self.blocks.clone();
        let owned = path.to_string();
        let entry = self
            .row_groups
            .get_or_fetch(&key, move || async move {
                // One GET of just the row group, which does not fill the block cache: the
                // rebuilt row group is kept here, and a catch-up read must not push the
                // log's tail (WAL objects not yet compacted) out of the cache.
                let raw = blocks
                    .get_range_no_fill(&Path::from(owned.as_str()), size, span.range.clone())
                    .await?;
                // Decoding and re-compressing is CPU work; keep it off the reactor.
                tokio::task::spawn_blocking(move || -> Result<Bytes, SegmentReadError> {
                    let batches = read_row_group(&index, i, raw, size)?;
                    let mut out = BytesMut::new();
                    for (header, records) in &batches {
                        encode_batch(header, records, &mut out)?;
                    }
                    Ok(out.freeze())
                })
                .await
                .map_err(|e| SegmentReadError::Task(e.to_string()))?
            })
            .await
            .map_err(|e| SegmentReadError::Task(format!("{e:#}")))?;
        Ok(RowGroupChunk {
            first_offset,
            bytes: entry.value().clone(),
        })
    }
}
