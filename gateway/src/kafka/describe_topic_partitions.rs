//! DescribeTopicPartitions (KIP-966, Kafka 3.7+): topics and their partitions, sorted by
//! name and paginated by a partition limit and a cursor, for clients describing topics
//! with many partitions.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::authorized;
use crate::cluster;
use crate::server::Ctx;

/// Apache Kafka's `max.request.partition.size.limit` default: the most partitions one
/// response holds, whatever the request asks.
const MAX_PARTITIONS: i32 = 2000;

pub async fn handle(
    ctx: &Ctx,
    req: DescribeTopicPartitionsRequest,
    _version: i16,
    asker: &super::Asker<'_>,
) -> DescribeTopicPartitionsResponse {
    let nodes = asker.nodes(ctx);
    let placement = cluster::Placement::new(&nodes, asker.zone);
    let mut budget = req.response_partition_limit.clamp(1, MAX_PARTITIONS) as usize;
    // Every topic when none is named; sorted by name either way.
    let mut names: Vec<String> = if req.topics.is_empty() {
        ctx.log
            .read(|s| s.topics().map(|t| t.record.name.clone()).collect())
    } else {
        req.topics.iter().map(|t| t.name.0.to_string()).collect()
    };
    names.sort_unstable();
    names.dedup();
    let (first_topic, first_partition) = match &req.cursor {
        Some(c) => (Some(c.topic_name.0.to_string()), c.partition_index.max(0)),
        None => (None, 0),
    };
    if let Some(t) = &first_topic
        && !names.contains(t)
    {
        // Kafka: a cursor must name one of the requested topics.
        return DescribeTopicPartitionsResponse::default().with_topics(vec![
            DescribeTopicPartitionsResponseTopic::default()
                .with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
                .with_error_code(ResponseError::InvalidRequest.code()),
        ]);
    }
    let mut topics = Vec::new();
    let mut next_cursor = None;
    for name in names
        .into_iter()
        .skip_while(|n| first_topic.as_ref().is_some_and(|f| n < f))
    {
        let start = if first_topic.as_deref() == Some(name.as_str()) {
            first_partition
        } else {
            0
        };
        let found = ctx.log.read(|s| {
            s.topic(&name)
                .map(|t| (t.record.id, t.partitions.len() as i32))
        });
        let out = DescribeTopicPartitionsResponseTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(name.clone()))))
            .with_topic_authorized_operations(authorized::topic(true));
        let Some((id, count)) = found else {
            topics.push(out.with_error_code(ResponseError::UnknownTopicOrPartition.code()));
            continue;
        };
        if budget == 0 {
            next_cursor = Some((name, start));
            break;
        }
        let end = count.min(start.saturating_add(budget as i32));
        let partitions = (start..end)
            .map(|i| {
                let (leader, replicas) = placement.place(id, i as u32);
                DescribeTopicPartitionsResponsePartition::default()
                    .with_partition_index(i)
                    .with_leader_id(leader)
                    .with_leader_epoch(0)
                    .with_replica_nodes(replicas.clone())
                    .with_isr_nodes(replicas)
                    .with_eligible_leader_replicas(Some(vec![]))
                    .with_last_known_elr(Some(vec![]))
            })
            .collect::<Vec<_>>();
        budget -= partitions.len();
        topics.push(out.with_topic_id(id).with_partitions(partitions));
        if end < count {
            next_cursor = Some((name, end));
            break;
        }
    }
    DescribeTopicPartitionsResponse::default()
        .with_topics(topics)
        .with_next_cursor(next_cursor.map(|(topic, partition)| {
            Cursor::default()
                .with_topic_name(TopicName(StrBytes::from_string(topic)))
                .with_partition_index(partition)
        }))
}
