//! ListOffsets: earliest, latest, max timestamp, and the first offset at or after a time.

use bytes::BytesMut;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::records::RecordBatchDecoder;
use sluice_metadata::log::{IndexEntry, Span};
use sluice_metadata::records::SegmentRecord;
use sluice_protocols::kafka::batch;

use super::fetch::{ReadError, read_chunk};
use crate::server::Ctx;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
/// v8+: the earliest offset kept locally (KIP-405). Everything is in the object store
/// here, so it is the log start offset.
const EARLIEST_LOCAL: i64 = -4;
/// v9+: the highest offset copied to remote storage (KIP-1005). Topics here have no
/// separate remote tier, so Kafka's answer for a topic without one: offset -1.
const LATEST_TIERED: i64 = -5;

#[derive(Debug, thiserror::Error)]
enum LookupError {
    #[error("{0}")]
    Read(#[from] ReadError),
    #[error("{0}")]
    Cache(#[from] sluice_cache::CacheError),
    #[error("stored batch is unreadable: {0}")]
    Batch(#[from] batch::BatchError),
    #[error("stored records cannot be decoded: {0}")]
    Decode(String),
}

/// Where a lookup by time looks.
enum Place {
    Segment(SegmentRecord),
    Wal(IndexEntry),
}

impl From<Span<'_>> for Place {
    fn from(s: Span<'_>) -> Self {
        match s {
            Span::Segment(s) => Place::Segment(s.clone()),
            Span::Wal(e) => Place::Wal(e.clone()),
        }
    }
}

/// The first record in `place` at or after `target` (or, with `max`, the first record
/// holding its largest timestamp): `(timestamp, offset)`.
async fn search(
    ctx: &Ctx,
    place: &Place,
    target: i64,
    max: bool,
) -> Result<Option<(i64, i64)>, LookupError> {
    match place {
        Place::Wal(entry) => {
            let chunk = read_chunk(&ctx.cache, entry).await?;
            let wanted = if max { entry.max_timestamp } else { target };
            search_chunk(entry.base_offset, &chunk, wanted, max)
        }
        Place::Segment(seg) => {
            let (path, index) = ctx.segments.index(seg).await.map_err(ReadError::from)?;
            let wanted = if max { seg.max_timestamp } else { target };
            for (i, rg) in index.row_groups.iter().enumerate() {
                if rg.max_timestamp < wanted {
                    continue;
                }
                let c = ctx
                    .segments
                    .row_group(&path, seg.size, index.clone(), i)
                    .await
                    .map_err(ReadError::from)?;
                if let Some(hit) = search_chunk(c.first_offset, &c.bytes, wanted, max)? {
                    return Ok(Some(hit));
                }
            }
            Ok(None)
        }
    }
}

/// The first record at or after `wanted` (exactly `wanted` with `max`) in consecutive
/// batches starting at offset `base`.
fn search_chunk(
    mut base: i64,
    chunk: &[u8],
    wanted: i64,
    max: bool,
) -> Result<Option<(i64, i64)>, LookupError> {
    for info in batch::iter_headers(chunk) {
        let info = info?;
        let batch_base = base;
        base += i64::from(info.record_count);
        if info.max_timestamp < wanted {
            continue;
        }
        if info.uses_log_append_time() {
            return Ok(Some((info.max_timestamp, batch_base)));
        }
        let mut copy = BytesMut::from(&chunk[info.position..info.position + info.size]);
        batch::set_base_offset(&mut copy, batch_base);
        let mut bytes = copy.freeze();
        let set = RecordBatchDecoder::decode(&mut bytes)
            .map_err(|e| LookupError::Decode(e.to_string()))?;
        let hit = set.records.iter().find(|r| {
            if max {
                r.timestamp == wanted
            } else {
                r.timestamp >= wanted
            }
        });
        if let Some(r) = hit {
            return Ok(Some((r.timestamp, r.offset)));
        }
    }
    Ok(None)
}

pub async fn handle(ctx: &Ctx, req: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let mut topics = Vec::new();
    for t in req.topics {
        let mut partitions = Vec::new();
        for p in t.partitions {
            let out = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1)
                .with_offset(-1);
            let out = if version >= 4 {
                out.with_leader_epoch(0)
            } else {
                out
            };
            let view = ctx.log.read(|s| {
                let topic = s.topic(t.name.0.as_str())?;
                let log = topic
                    .partitions
                    .get(usize::try_from(p.partition_index).ok()?)?;
                let entry: Option<Place> = match p.timestamp {
                    MAX_TIMESTAMP => log.span_with_max_timestamp().map(Place::from),
                    ts if ts >= 0 => log.first_span_at_or_after(ts).map(Place::from),
                    _ => None,
                };
                Some((log.log_start_offset, log.high_watermark, entry))
            });
            let Some((start, hwm, entry)) = view else {
                partitions.push(out.with_error_code(ResponseError::UnknownTopicOrPartition.code()));
                continue;
            };
            let answer = match p.timestamp {
                LATEST => Ok(Some((-1, hwm))),
                EARLIEST => Ok(Some((-1, start))),
                EARLIEST_LOCAL if version >= 8 => Ok(Some((-1, start))),
                LATEST_TIERED if version >= 9 => Ok(None),
                MAX_TIMESTAMP | 0.. => match &entry {
                    Some(e) => search(ctx, e, p.timestamp, p.timestamp == MAX_TIMESTAMP).await,
                    None => Ok(None),
                },
                _ => {
                    partitions.push(out.with_error_code(ResponseError::InvalidRequest.code()));
                    continue;
                }
            };
            partitions.push(match answer {
                Ok(Some((ts, offset))) => out.with_timestamp(ts).with_offset(offset),
                Ok(None) => out,
                Err(e) => {
                    tracing::warn!(topic = %t.name.0.as_str(), partition = p.partition_index, error = %e, "offset lookup failed");
                    out.with_error_code(ResponseError::KafkaStorageError.code())
                }
            });
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}
