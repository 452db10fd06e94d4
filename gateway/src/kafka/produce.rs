//! Produce: validate each partition's batch, hand it to the batcher (in the order a
//! connection's requests arrive), answer once durable and committed.

use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use sluice_metadata::records::BatchMeta;
use sluice_protocols::kafka::batch::{self, BatchError};
use sluice_protocols::kafka::recompress::{Codec, recompress};

use super::now_ms;
use crate::batcher::{Append, AppendError, Pending};
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

/// What a topic's configuration asks of a batch appended to it.
struct Rules {
    topic_id: uuid::Uuid,
    partition: u32,
    max_bytes: usize,
    append_time: bool,
    /// The codec batches are stored with, if not the producer's.
    codec: Option<Codec>,
}

fn rules(ctx: &Ctx, topic: &str, partition: i32) -> Option<Rules> {
    ctx.log.read(|s| {
        let t = s.topic(topic)?;
        let p = u32::try_from(partition)
            .ok()
            .filter(|p| (*p as usize) < t.partitions.len())?;
        let max = topics::config_value(&t.record, topics::MAX_MESSAGE_BYTES)
            .and_then(|v| v.parse::<usize>().ok());
        let append_time =
            topics::config_value(&t.record, topics::TIMESTAMP_TYPE) == Some("LogAppendTime");
        Some(Rules {
            topic_id: t.record.id,
            partition: p,
            max_bytes: max.unwrap_or(usize::MAX),
            append_time,
            codec: topics::codec(&t.record),
        })
    })
}

/// Batches at least this large are recompressed off the async workers.
const RECOMPRESS_INLINE_BYTES: usize = 16 << 10;

async fn prepare(ctx: &Ctx, topic: &str, partition: i32, records: Option<Bytes>) -> Prepared {
    let Some(r) = rules(ctx, topic, partition) else {
        return Prepared::Error(
            ResponseError::UnknownTopicOrPartition,
            format!("{topic}-{partition} does not exist"),
        );
    };
    let Some(records) = records.filter(|r| !r.is_empty()) else {
        return Prepared::Error(ResponseError::CorruptMessage, "no records".into());
    };
    let too_large = |len: usize| {
        Prepared::Error(
            ResponseError::MessageTooLarge,
            format!(
                "batch of {len} bytes exceeds max.message.bytes={}",
                r.max_bytes
            ),
        )
    };
    if records.len() > r.max_bytes {
        return too_large(records.len());
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
    let received = records.len();
    // Kafka stores a batch with the topic's codec when it names one.
    let records = match r.codec {
        Some(codec) if info.compression() != codec.id() => {
            let converted = if records.len() < RECOMPRESS_INLINE_BYTES {
                recompress(&records, codec)
            } else {
                let input = records.clone();
                tokio::task::spawn_blocking(move || recompress(&input, codec))
                    .await
                    .unwrap_or_else(|e| {
                        Err(sluice_protocols::kafka::records::RecordsError::Codec(
                            e.to_string(),
                        ))
                    })
            };
            match converted {
                Ok(Some(b)) => {
                    metrics::RECOMPRESSED_BATCHES.inc();
                    b
                }
                Ok(None) => records,
                Err(e) => {
                    return Prepared::Error(
                        ResponseError::CorruptMessage,
                        format!("the batch's records cannot be recompressed: {e}"),
                    );
                }
            }
        }
        _ => records,
    };
    if records.len() > r.max_bytes {
        return too_large(records.len());
    }
    metrics::BYTES_IN.inc_by(received as u64);
    let (batch, max_timestamp, append_time) = if r.append_time {
        let t = now_ms();
        let mut b = BytesMut::from(&records[..]);
        batch::set_log_append_time(&mut b, t);
        (b.freeze(), t, Some(t))
    } else {
        (records, info.max_timestamp, None)
    };
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
            topic_id: r.topic_id,
            partition: r.partition,
            batch,
            meta,
        },
        append_time,
    )
}

/// The record bytes a produce request carries, as client quotas count them.
pub(crate) fn record_bytes(req: &ProduceRequest) -> usize {
    req.topic_data
        .iter()
        .flat_map(|t| &t.partition_data)
        .filter_map(|p| p.records.as_ref())
        .map(|r| r.len())
        .sum()
}

/// Which request a produce is, for its log lines.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Trace {
    /// The connection's number (see `kafka connection accepted` lines).
    pub conn: u64,
    pub correlation_id: i32,
}

/// One partition of a produce request: answered already (an error found before any
/// append), or waiting for its batch to be committed.
enum Part {
    Answered(PartitionProduceResponse),
    Waiting {
        response: PartitionProduceResponse,
        topic_id: uuid::Uuid,
        partition: u32,
        append_time: Option<i64>,
        bytes: usize,
        done: Pending,
    },
}

/// A produce request whose batches are in the batcher, in request order.
pub(crate) struct Submitted {
    version: i16,
    acks: i16,
    trace: Trace,
    topics: Vec<(TopicName, Vec<Part>)>,
}

/// Validates a produce request and puts every partition's batch in the batcher, in the
/// order the request lists them, before any is awaited (so they share a flush). Callers
/// submit one connection's requests one after another: that is what keeps a connection's
/// batches for one partition in arrival order in the log.
pub(crate) async fn submit(
    ctx: &Ctx,
    req: ProduceRequest,
    version: i16,
    trace: Trace,
) -> Submitted {
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
    let mut topics = Vec::with_capacity(req.topic_data.len());
    for topic in req.topic_data {
        let name = topic.name.0.to_string();
        let mut parts = Vec::with_capacity(topic.partition_data.len());
        for p in topic.partition_data {
            let prepared = match request_error {
                Some((code, msg)) => Prepared::Error(code, msg.into()),
                None => prepare(ctx, &name, p.index, p.records).await,
            };
            let response = PartitionProduceResponse::default()
                .with_index(p.index)
                .with_log_append_time_ms(-1);
            parts.push(match prepared {
                Prepared::Error(code, msg) => Part::Answered(with_message(
                    response.with_error_code(code.code()).with_base_offset(-1),
                    msg,
                    version,
                )),
                Prepared::Append(append, append_time) => Part::Waiting {
                    response,
                    topic_id: append.topic_id,
                    partition: append.partition,
                    append_time,
                    bytes: append.batch.len(),
                    done: ctx.batcher.submit(append).await,
                },
            });
        }
        topics.push((topic.name, parts));
    }
    let submitted = Submitted {
        version,
        acks: req.acks,
        trace,
        topics,
    };
    if tracing::enabled!(tracing::Level::DEBUG) {
        tracing::debug!(
            conn = trace.conn,
            correlation_id = trace.correlation_id,
            acks = req.acks,
            partitions = %partition_list(&submitted.topics, |p| match p {
                Part::Answered(r) => (r.index, format!("error {}", r.error_code)),
                Part::Waiting {
                    response, bytes, ..
                } => (response.index, format!("{bytes} bytes")),
            }),
            "produce request submitted"
        );
    }
    submitted
}

impl Submitted {
    pub(crate) fn acks(&self) -> i16 {
        self.acks
    }

    /// Waits for every batch and builds the response.
    pub(crate) async fn answer(self, ctx: &Ctx) -> ProduceResponse {
        let (version, trace, acks) = (self.version, self.trace, self.acks);
        let start = std::time::Instant::now();
        let mut topics = Vec::with_capacity(self.topics.len());
        for (name, parts) in self.topics {
            let mut partitions = Vec::with_capacity(parts.len());
            for p in parts {
                partitions.push(match p {
                    Part::Answered(r) => r,
                    Part::Waiting {
                        response,
                        topic_id,
                        partition,
                        append_time,
                        done,
                        ..
                    } => {
                        answer_partition(
                            ctx,
                            response,
                            topic_id,
                            partition,
                            append_time,
                            done,
                            version,
                        )
                        .await
                    }
                });
            }
            topics.push((name, partitions));
        }
        if tracing::enabled!(tracing::Level::DEBUG) {
            let results = partition_list(&topics, |r: &PartitionProduceResponse| {
                let what = match ResponseError::try_from_code(r.error_code) {
                    None => format!("offset {}", r.base_offset),
                    Some(e) => format!("{e:?}"),
                };
                (r.index, what)
            });
            tracing::debug!(
                conn = trace.conn,
                correlation_id = trace.correlation_id,
                acks,
                waited_ms = start.elapsed().as_millis() as u64,
                results = %results,
                "produce request answered"
            );
        }
        ProduceResponse::default().with_responses(
            topics
                .into_iter()
                .map(|(name, partitions)| {
                    TopicProduceResponse::default()
                        .with_name(name)
                        .with_partition_responses(partitions)
                })
                .collect(),
        )
    }
}

/// `topic-partition: what` for every partition, in request order, for log lines.
fn partition_list<T>(topics: &[(TopicName, Vec<T>)], show: impl Fn(&T) -> (i32, String)) -> String {
    let show = &show;
    topics
        .iter()
        .flat_map(|(name, parts)| {
            parts.iter().map(move |p| {
                let (index, what) = show(p);
                format!("{}-{index}: {what}", name.0)
            })
        })
        .collect::<Vec<_>>()
        .join(", ")
}

async fn answer_partition(
    ctx: &Ctx,
    r: PartitionProduceResponse,
    topic_id: uuid::Uuid,
    partition: u32,
    append_time: Option<i64>,
    done: Pending,
    version: i16,
) -> PartitionProduceResponse {
    match done.await {
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
    }
}
