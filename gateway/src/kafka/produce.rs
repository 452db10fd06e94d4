//! Produce: validate each partition's batch, hand it to the batcher, answer once durable
//! and committed.

use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use sluice_metadata::records::BatchMeta;
use sluice_protocols::kafka::batch::{self, BatchError};

use super::now_ms;
use crate::batcher::{Append, AppendError};
use crate::metrics;
use crate::server::Ctx;
use crate::topics;

fn batch_error_code(e: &BatchError) -> ResponseError {
    match e {
        BatchError::Truncated { .. } | BatchError::BadCrc { .. } => ResponseError::CorruptMessage,
        BatchError::BadMagic { .. } => ResponseError::UnsupportedForMessageFormat,
        BatchError::Invalid { .. } | BatchError::Empty => ResponseError::InvalidRecord,
    }
}

fn append_error_code(e: &AppendError) -> ResponseError {
    match e {
        AppendError::ObjectStore(_) | AppendError::Metadata(_) => ResponseError::KafkaStorageError,
        AppendError::Timeout => ResponseError::RequestTimedOut,
        AppendError::Gone => ResponseError::UnknownTopicOrPartition,
        AppendError::OutOfOrderSequence => ResponseError::OutOfOrderSequenceNumber,
        AppendError::InvalidProducerEpoch => ResponseError::InvalidProducerEpoch,
        AppendError::ShuttingDown => ResponseError::NotLeaderOrFollower,
    }
}

/// Error messages exist from Produce v8.
fn with_message(
    r: PartitionProduceResponse,
    msg: String,
    version: i16,
) -> PartitionProduceResponse {
    if version >= 8 {
        r.with_error_message(Some(StrBytes::from_string(msg)))
    } else {
        r
    }
}

/// A partition's answer before any append: an error, or what to append.
enum Prepared {
    Error(ResponseError, String),
    Append(Append, Option<i64>),
}

fn prepare(ctx: &Ctx, topic: &str, partition: i32, records: Option<Bytes>) -> Prepared {
    let found = ctx.log.read(|s| {
        let t = s.topic(topic)?;
        let p = u32::try_from(partition)
            .ok()
            .filter(|p| (*p as usize) < t.partitions.len())?;
        let max = topics::config_value(&t.record, topics::MAX_MESSAGE_BYTES)
            .and_then(|v| v.parse::<usize>().ok());
        let append_time =
            topics::config_value(&t.record, topics::TIMESTAMP_TYPE) == Some("LogAppendTime");
        Some((t.record.id, p, max.unwrap_or(usize::MAX), append_time))
    });
    let Some((topic_id, partition, max_bytes, append_time)) = found else {
        return Prepared::Error(
            ResponseError::UnknownTopicOrPartition,
            format!("{topic}-{partition} does not exist"),
        );
    };
    let Some(records) = records.filter(|r| !r.is_empty()) else {
        return Prepared::Error(ResponseError::CorruptMessage, "no records".into());
    };
    if records.len() > max_bytes {
        return Prepared::Error(
            ResponseError::MessageTooLarge,
            format!(
                "batch of {} bytes exceeds max.message.bytes={max_bytes}",
                records.len()
            ),
        );
    }
    let info = match batch::validate_produce(&records) {
        Ok(info) => info,
        Err(e) => return Prepared::Error(batch_error_code(&e), e.to_string()),
    };
    if info.is_transactional() {
        return Prepared::Error(
            ResponseError::InvalidRecord,
            "transactional produce is not supported".into(),
        );
    }
    let (batch, max_timestamp, append_time) = if append_time {
        let t = now_ms();
        let mut b = BytesMut::from(&records[..]);
        batch::set_log_append_time(&mut b, t);
        (b.freeze(), t, Some(t))
    } else {
        (records, info.max_timestamp, None)
    };
    metrics::BYTES_IN.inc_by(batch.len() as u64);
    let meta = BatchMeta {
        size: batch.len() as u32,
        records: info.record_count,
        max_timestamp,
        producer_id: info.producer_id,
        producer_epoch: info.producer_epoch,
        base_sequence: info.base_sequence,
    };
    Prepared::Append(
        Append {
            topic_id,
            partition,
            batch,
            meta,
        },
        append_time,
    )
}

pub async fn handle(ctx: &Ctx, req: ProduceRequest, version: i16) -> ProduceResponse {
    let request_error = if req.transactional_id.is_some() {
        Some((
            ResponseError::TransactionalIdAuthorizationFailed,
            "transactions are not supported",
        ))
    } else if !matches!(req.acks, -1..=1) {
        Some((
            ResponseError::InvalidRequiredAcks,
            "acks must be -1, 0 or 1",
        ))
    } else {
        None
    };
    let mut answers = Vec::new();
    for topic in req.topic_data {
        let name = topic.name.0.to_string();
        let mut parts = Vec::new();
        for p in topic.partition_data {
            let prepared = match request_error {
                Some((code, msg)) => Prepared::Error(code, msg.into()),
                None => prepare(ctx, &name, p.index, p.records),
            };
            parts.push((p.index, prepared));
        }
        answers.push((topic.name, parts));
    }
    // Every partition of the request goes into the buffer before any is awaited, so they
    // share a flush.
    let mut submitted = Vec::new();
    for (name, parts) in answers {
        let mut pending = Vec::new();
        for (index, prepared) in parts {
            let r = PartitionProduceResponse::default()
                .with_index(index)
                .with_log_append_time_ms(-1);
            pending.push(match prepared {
                Prepared::Error(code, msg) => Err(with_message(
                    r.with_error_code(code.code()).with_base_offset(-1),
                    msg,
                    version,
                )),
                Prepared::Append(append, append_time) => {
                    let key = (append.topic_id, append.partition);
                    Ok((r, key, append_time, ctx.batcher.submit(append).await))
                }
            });
        }
        submitted.push((name, pending));
    }
    let mut topics = Vec::new();
    for (name, pending) in submitted {
        let mut partitions = Vec::new();
        for p in pending {
            partitions.push(match p {
                Err(r) => r,
                Ok((r, (topic_id, partition), append_time, done)) => match done.await {
                    Ok(base) => {
                        let start = ctx
                            .log
                            .read(|s| {
                                s.partition(&topic_id, partition)
                                    .map(|p| p.log_start_offset)
                            })
                            .unwrap_or(0);
                        let r = r
                            .with_base_offset(base)
                            .with_log_append_time_ms(append_time.unwrap_or(-1));
                        if version >= 5 {
                            r.with_log_start_offset(start)
                        } else {
                            r
                        }
                    }
                    Err(e) => with_message(
                        r.with_error_code(append_error_code(&e).code())
                            .with_base_offset(-1),
                        e.to_string(),
                        version,
                    ),
                },
            });
        }
        topics.push(
            TopicProduceResponse::default()
                .with_name(name)
                .with_partition_responses(partitions),
        );
    }
    ProduceResponse::default().with_responses(topics)
}
