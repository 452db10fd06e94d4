//! DeleteRecords: moves a partition's log start offset forward, as retention does. The
//! records before it are no longer served; the compactor removes whole segments that lie
//! before it.

use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use sluice_metadata::records::{LOG_START_VERSION, LogStartRecord};
use sluice_metadata::{Txn, TxnOp, keys};

use crate::server::Ctx;

const APPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Kafka's "delete everything up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

async fn delete_one(
    ctx: &Ctx,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<i64, ResponseError> {
    let target = ctx.log.read(|s| {
        let t = s.topic(topic)?;
        let p = t.partitions.get(usize::try_from(partition).ok()?)?;
        Some((t.record.id, p.high_watermark, p.log_start_offset))
    });
    let Some((topic_id, hwm, start)) = target else {
        return Err(ResponseError::UnknownTopicOrPartition);
    };
    let offset = if offset == HIGH_WATERMARK {
        hwm
    } else {
        offset
    };
    if offset < 0 || offset > hwm {
        return Err(ResponseError::OffsetOutOfRange);
    }
    if offset <= start {
        return Ok(start);
    }
    let record = LogStartRecord {
        v: LOG_START_VERSION,
        offset,
    };
    let r = ctx
        .store
        .txn(Txn {
            success: vec![TxnOp::put(
                keys::log_start(&topic_id, partition as u32),
                record.encode(),
            )],
            ..Txn::default()
        })
        .await
        .map_err(|e| {
            tracing::warn!(topic, partition, error = %e, "delete records failed");
            ResponseError::KafkaStorageError
        })?;
    if !ctx.log.wait_for(r.revision, APPLY_TIMEOUT).await {
        return Err(ResponseError::RequestTimedOut);
    }
    Ok(ctx.log.read(|s| {
        s.topic_by_id(&topic_id)
            .and_then(|t| t.partitions.get(partition as usize))
            .map_or(offset, |p| p.log_start_offset)
    }))
}

pub async fn handle(ctx: &Ctx, req: DeleteRecordsRequest, _version: i16) -> DeleteRecordsResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let out =
                DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index);
            partitions.push(
                match delete_one(ctx, t.name.0.as_str(), p.partition_index, p.offset).await {
                    Ok(low) => out.with_low_watermark(low),
                    Err(e) => out.with_low_watermark(-1).with_error_code(e.code()),
                },
            );
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
