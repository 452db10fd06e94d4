//! Fetch: offsets to index entries to chunk bytes (through the cache), batch base offsets
//! patched on the way out; offsets that are compacted come from Parquet segments, rebuilt
//! into batches. Long polling is woken by commits.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use object_store::path::Path;
use sluice_cache::RangeCache;
use sluice_metadata::log::{IndexEntry, PartitionLog};
use sluice_metadata::records::SegmentRecord;
use sluice_protocols::kafka::batch;
use tokio::time::Instant;

use crate::metrics;
use crate::server::Ctx;

/// Kafka's default `fetch.max.bytes`, used when a request gives none.
const DEFAULT_MAX_BYTES: usize = 50 << 20;

/// The record bytes a fetch response carries, as client quotas count them.
pub(crate) fn record_bytes(resp: &FetchResponse) -> usize {
    resp.responses
        .iter()
        .flat_map(|t| &t.partitions)
        .filter_map(|p| p.records.as_ref())
        .map(|r| r.len())
        .sum()
}

pub async fn handle(ctx: &Ctx, req: FetchRequest, version: i16) -> FetchResponse {
    if req.session_id != 0 || req.session_epoch > 0 {
        // We never hand out fetch sessions (KIP-227), so an incremental fetch names one
        // that does not exist; the client falls back to full fetches.
        return FetchResponse::default()
            .with_error_code(ResponseError::FetchSessionIdNotFound.code())
            .with_session_id(0);
    }
    let deadline = Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64);
    let min_bytes = req.min_bytes.max(0) as usize;
    let mut applied = ctx.log.subscribe();
    loop {
        applied.borrow_and_update();
        let (resp, bytes, errors) = read_once(ctx, &req, version).await;
        if bytes >= min_bytes.max(1) || errors || Instant::now() >= deadline {
            return resp;
        }
        match tokio::time::timeout_at(deadline, applied.changed()).await {
            Ok(Ok(())) => continue,
            _ => return resp,
        }
    }
}

/// Where a fetch reads from: one segment, or WAL chunks.
pub(crate) enum Source {
    Segment(SegmentRecord),
    Wal(Vec<IndexEntry>),
}

impl Source {
    /// What to read for `offset`, taking WAL entries worth `budget` bytes. A response
    /// holds data from one segment at most; the consumer's next fetch goes on from there.
    pub(crate) fn for_offset(log: &PartitionLog, offset: i64, budget: usize) -> Self {
        // Below the compacted offset there is a segment that holds (or follows) it.
        if let Some(seg) = log.segment_for(offset) {
            return Source::Segment(seg.clone());
        }
        Source::Wal(entries_within(log.entries_from(offset), budget))
    }
}

/// What one partition of the log looks like for this fetch.
struct View {
    high_watermark: i64,
    log_start_offset: i64,
    source: Source,
}

async fn read_once(ctx: &Ctx, req: &FetchRequest, version: i16) -> (FetchResponse, usize, bool) {
    let mut budget = if req.max_bytes > 0 {
        req.max_bytes as usize
    } else {
        DEFAULT_MAX_BYTES
    };
    let mut total = 0usize;
    let mut errors = false;
    let read_committed = req.isolation_level == 1;
    // KIP-392: the gateways of the client's zone (its `client.rack`, Fetch v11+) when this
    // one is in another; looked up once per pass, not per partition.
    let read_replicas = if version >= 11 {
        crate::cluster::read_replicas(&ctx.cluster.nodes(), ctx.cluster.me(), &req.rack_id)
    } else {
        Vec::new()
    };
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let resolved = ctx.log.read(|s| {
            let topic = if version >= 13 {
                s.topic_by_id(&t.topic_id)
            } else {
                s.topic(t.topic.0.as_str())
            };
            topic.map(|t| t.record.id)
        });
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let mut out = PartitionData::default()
                .with_partition_index(p.partition)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1)
                .with_preferred_read_replica(BrokerId(-1));
            let Some(topic_id) = &resolved else {
                errors = true;
                let code = if version >= 13 {
                    ResponseError::UnknownTopicId
                } else {
                    ResponseError::UnknownTopicOrPartition
                };
                partitions.push(out.with_error_code(code.code()));
                continue;
            };
            // KIP-392: a client of another zone (its `client.rack`) is sent to a gateway
            // of its zone; the answer for the partition carries no records.
            if let Ok(partition) = u32::try_from(p.partition)
                && let Some(replica) = crate::cluster::leader(&read_replicas, *topic_id, partition)
            {
                let known = ctx.log.read(|s| {
                    s.partition(topic_id, partition)
                        .map(|l| (l.high_watermark, l.log_start_offset))
                });
                if let Some((high_watermark, log_start_offset)) = known {
                    partitions.push(
                        out.with_high_watermark(high_watermark)
                            .with_last_stable_offset(high_watermark)
                            .with_log_start_offset(log_start_offset)
                            .with_preferred_read_replica(BrokerId(replica.id)),
                    );
                    continue;
                }
            }
            let view = ctx.log.read(|s| {
                let log = s.partition(topic_id, u32::try_from(p.partition).ok()?)?;
                Some(View {
                    high_watermark: log.high_watermark,
                    log_start_offset: log.log_start_offset,
                    source: Source::for_offset(log, p.fetch_offset, budget),
                })
            });
            let Some(view) = view else {
                errors = true;
                partitions.push(out.with_error_code(ResponseError::UnknownTopicOrPartition.code()));
                continue;
            };
            out = out
                .with_high_watermark(view.high_watermark)
                .with_last_stable_offset(view.high_watermark);
            if version >= 5 {
                out = out.with_log_start_offset(view.log_start_offset);
            }
            // As Apache Kafka: an (empty, without transactions) list for read_committed,
            // null for read_uncommitted.
            out = out.with_aborted_transactions(read_committed.then(Vec::new));
            if p.fetch_offset < view.log_start_offset || p.fetch_offset > view.high_watermark {
                errors = true;
                partitions.push(out.with_error_code(ResponseError::OffsetOutOfRange.code()));
                continue;
            }
            let limit = budget.min(p.partition_max_bytes.max(0) as usize);
            match read_records(ctx, &view.source, p.fetch_offset, limit, total == 0).await {
                Ok(records) => {
                    total += records.len();
                    budget = budget.saturating_sub(records.len());
                    metrics::BYTES_OUT.inc_by(records.len() as u64);
                    partitions.push(out.with_records(Some(records)));
                }
                Err(e) => {
                    errors = true;
                    tracing::warn!(topic = %t.topic.0.as_str(), partition = p.partition, error = %e, "fetch read failed");
                    partitions.push(out.with_error_code(ResponseError::KafkaStorageError.code()));
                }
            }
        }
        let topic = FetchableTopicResponse::default().with_partitions(partitions);
        let topic = if version >= 13 {
            topic.with_topic_id(resolved.unwrap_or(t.topic_id))
        } else {
            topic.with_topic(t.topic.clone())
        };
        topics.push(topic);
    }
    let resp = FetchResponse::default()
        .with_session_id(0)
        .with_responses(topics);
    (resp, total, errors)
}

/// The entries a read may touch: enough to fill `budget` bytes, at least one.
fn entries_within(entries: &[IndexEntry], budget: usize) -> Vec<IndexEntry> {
    let mut size = 0usize;
    let mut out = Vec::new();
    for e in entries {
        if !out.is_empty() && size >= budget {
            break;
        }
        size += e.size as usize;
        out.push(e.clone());
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("{0}")]
    Cache(#[from] sluice_cache::CacheError),
    #[error("stored batch is unreadable: {0}")]
    Batch(#[from] batch::BatchError),
    #[error("{0}")]
    Segment(#[from] crate::segments::SegmentReadError),
}

/// WAL chunks one partition's read fetches at once.
const CHUNKS_AT_ONCE: usize = 16;

/// The bytes of one index entry's chunk, through the cache.
pub(super) async fn read_chunk(
    cache: &RangeCache,
    e: &IndexEntry,
) -> Result<Bytes, sluice_cache::CacheError> {
    let path = Path::from(e.object.as_ref());
    cache
        .get_range(
            &path,
            e.object_size,
            e.position..e.position + u64::from(e.size),
        )
        .await
}

/// Batches holding `offset` and after, with their base offsets set, up to `limit` bytes.
/// The first batch is returned even when larger than `limit` if `may_exceed` (KIP-74), so
/// a consumer always makes progress.
pub(crate) async fn read_records(
    ctx: &Ctx,
    source: &Source,
    offset: i64,
    limit: usize,
    may_exceed: bool,
) -> Result<Bytes, ReadError> {
    let mut out = BytesMut::new();
    match source {
        Source::Wal(entries) => {
            // Room for what the chunks hold up front: growing a buffer of up to `limit`
            // bytes step by step copies it over and over.
            let size: usize = entries.iter().map(|e| e.size as usize).sum();
            out.reserve(size.min(limit.max(entries.first().map_or(0, |e| e.size as usize))));
            // Chunks are read a few at once, in order: beyond the cache each is a GET of
            // its own object, and one after another they would cost a round trip each.
            let cache = ctx.cache.clone();
            let reads = entries.iter().cloned().map(move |e| {
                let cache = cache.clone();
                async move { read_chunk(&cache, &e).await }
            });
            let mut chunks = futures::stream::iter(reads).buffered(CHUNKS_AT_ONCE);
            for e in entries {
                let Some(chunk) = chunks.next().await else {
                    break;
                };
                if !append_batches(&mut out, e.base_offset, &chunk?, offset, limit, may_exceed)? {
                    break;
                }
            }
        }
        Source::Segment(seg) => {
            let (path, index) = ctx.segments.index(seg).await?;
            let Some(first) = index.row_group_for(offset) else {
                return Ok(Bytes::new());
            };
            for i in first..index.row_groups.len() {
                let c = ctx
                    .segments
                    .row_group(&path, seg.size, index.clone(), i)
                    .await?;
                if !append_batches(
                    &mut out,
                    c.first_offset,
                    &c.bytes,
                    offset,
                    limit,
                    may_exceed,
                )? {
                    break;
                }
            }
        }
    }
    Ok(out.freeze())
}

/// Appends the batches of `chunk` (consecutive batches, the first at offset `base`) that
/// hold `offset` or later, while they fit in `limit`. False once the response is full.
fn append_batches(
    out: &mut BytesMut,
    mut base: i64,
    chunk: &[u8],
    offset: i64,
    limit: usize,
    may_exceed: bool,
) -> Result<bool, batch::BatchError> {
    for info in batch::iter_headers(chunk) {
        let info = info?;
        let next = base + i64::from(info.record_count);
        if next > offset {
            let fits = out.len() + info.size <= limit;
            let oversized_first = out.is_empty() && may_exceed;
            if !(fits || oversized_first) {
                return Ok(false);
            }
            let start = out.len();
            out.extend_from_slice(&chunk[info.position..info.position + info.size]);
            batch::set_base_offset(&mut out[start..], base);
            if !fits {
                return Ok(false);
            }
        }
        base = next;
    }
    Ok(true)
}
