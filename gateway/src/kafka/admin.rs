//! Admin APIs: topics, partitions, configs, cluster.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_metadata::records::TopicRecord;

use crate::server::Ctx;
use crate::topics::{self, AlterOp, TOPIC_CONFIGS, TopicError};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

fn msg(e: &TopicError) -> Option<StrBytes> {
    Some(s(e.to_string()))
}

/// Every topic config with its effective value, where it comes from, type and doc.
fn effective_configs(record: &TopicRecord) -> Vec<(&'static str, String, i8, i8, &'static str)> {
    TOPIC_CONFIGS
        .iter()
        .map(|d| match record.configs.get(d.name) {
            Some(v) => (d.name, v.clone(), SOURCE_DYNAMIC_TOPIC, d.kind, d.doc),
            None => (d.name, d.default.to_string(), SOURCE_DEFAULT, d.kind, d.doc),
        })
        .collect()
}

pub async fn create_topics(
    ctx: &Ctx,
    req: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut results = Vec::new();
    for t in req.topics {
        let name = t.name.0.to_string();
        let mut configs = BTreeMap::new();
        for c in &t.configs {
            if let Some(v) = &c.value {
                configs.insert(c.name.to_string(), v.to_string());
            }
        }
        let out = CreatableTopicResult::default().with_name(t.name.clone());
        // With a manual assignment its length is the partition count; replicas only have
        // to name live gateways (storage is shared).
        let mut replication_factor = t.replication_factor;
        let created = match manual_partitions(ctx, &t) {
            Err(e) => Err(e),
            Ok(manual) => {
                let partitions = match manual {
                    Some((count, rf)) => {
                        replication_factor = rf;
                        count
                    }
                    None => t.num_partitions,
                };
                topics::create(
                    ctx,
                    &name,
                    partitions,
                    replication_factor,
                    configs,
                    req.validate_only,
                )
                .await
            }
        };
        results.push(match created {
            Ok(_) if version < 5 => out,
            Ok(record) => out
                .with_topic_id(if version >= 7 {
                    record.id
                } else {
                    uuid::Uuid::nil()
                })
                .with_num_partitions(record.partitions as i32)
                .with_replication_factor(if replication_factor > 0 {
                    replication_factor
                } else {
                    1
                })
                .with_configs(Some(
                    effective_configs(&record)
                        .into_iter()
                        .map(|(k, v, source, _, _)| {
                            CreatableTopicConfigs::default()
                                .with_name(s(k))
                                .with_value(Some(s(v)))
                                .with_config_source(source)
                        })
                        .collect(),
                )),
            Err(e) if version < 5 => out.with_error_code(e.code()).with_error_message(msg(&e)),
            Err(e) => out
                .with_error_code(e.code())
                .with_error_message(msg(&e))
                .with_num_partitions(-1)
                .with_replication_factor(-1),
        });
    }
    CreateTopicsResponse::default().with_topics(results)
}

/// A CreateTopics entry's manual assignment, checked as Kafka checks it: `(partition
/// count, replication factor)`, or `None` when it has none.
fn manual_partitions(
    ctx: &Ctx,
    t: &create_topics_request::CreatableTopic,
) -> Result<Option<(i32, i16)>, TopicError> {
    if t.assignments.is_empty() {
        return Ok(None);
    }
    if t.num_partitions != -1 || t.replication_factor != -1 {
        return Err(TopicError::InvalidRequest(
            "both numPartitions or replicationFactor and replicasAssignments were set; only one may be".into(),
        ));
    }
    let mut assignments: Vec<_> = t.assignments.iter().collect();
    assignments.sort_by_key(|a| a.partition_index);
    for (i, a) in assignments.iter().enumerate() {
        if a.partition_index != i as i32 {
            return Err(TopicError::InvalidReplicaAssignment(
                "partitions should be a consecutive 0-based integer sequence".into(),
            ));
        }
    }
    let rf = check_replicas(ctx, assignments.iter().map(|a| &a.broker_ids[..]), true)?;
    Ok(Some((assignments.len() as i32, rf)))
}

/// Replica lists checked against the live gateways ([`topics::check_assignment`]).
fn check_replicas<'a>(
    ctx: &Ctx,
    lists: impl Iterator<Item = &'a [BrokerId]>,
    uniform: bool,
) -> Result<i16, TopicError> {
    let replicas: Vec<Vec<i32>> = lists.map(|l| l.iter().map(|b| b.0).collect()).collect();
    let live: Vec<i32> = ctx.cluster.nodes().iter().map(|n| n.id).collect();
    topics::check_assignment(&live, &replicas, uniform)
}

pub async fn delete_topics(
    ctx: &Ctx,
    req: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let targets: Vec<(Option<String>, uuid::Uuid)> = if version >= 6 {
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::new();
    for (name, id) in targets {
        let name = name.or_else(|| {
            ctx.log
                .read(|s| s.topic_by_id(&id).map(|t| t.record.name.clone()))
        });
        let out = DeletableTopicResult::default()
            .with_name(name.clone().map(|n| TopicName(s(n))))
            .with_topic_id(id);
        let Some(name) = name else {
            responses.push(out.with_error_code(ResponseError::UnknownTopicId.code()));
            continue;
        };
        responses.push(match topics::delete(ctx, &name).await {
            Ok(id) if version >= 6 => out.with_topic_id(id),
            Ok(_) => out,
            Err(e) if version >= 5 => out.with_error_code(e.code()).with_error_message(msg(&e)),
            Err(e) => out.with_error_code(e.code()),
        });
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

pub async fn create_partitions(
    ctx: &Ctx,
    req: CreatePartitionsRequest,
    _version: i16,
) -> CreatePartitionsResponse {
    let mut results = Vec::new();
    for t in req.topics {
        let out = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        let r = match new_partitions_assignment(ctx, &t) {
            Ok(()) => {
                topics::create_partitions(ctx, t.name.0.as_str(), t.count, req.validate_only).await
            }
            Err(e) => Err(e),
        };
        results.push(match r {
            Ok(()) => out,
            Err(e) => out.with_error_code(e.code()).with_error_message(msg(&e)),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}

/// A CreatePartitions entry's assignment of the new partitions, checked as Kafka checks
/// it: one replica list per new partition, each naming live gateways.
fn new_partitions_assignment(
    ctx: &Ctx,
    t: &create_partitions_request::CreatePartitionsTopic,
) -> Result<(), TopicError> {
    let Some(assignments) = &t.assignments else {
        return Ok(());
    };
    let current = ctx
        .log
        .read(|s| {
            s.topic(t.name.0.as_str())
                .map(|t| t.partitions.len() as i32)
        })
        .ok_or_else(|| TopicError::Unknown(t.name.0.to_string()))?;
    let added = t.count - current;
    if added <= 0 {
        // The count check reports this case.
        return Ok(());
    }
    if assignments.len() as i32 != added {
        return Err(TopicError::InvalidReplicaAssignment(format!(
            "increasing the number of partitions by {added} but {} assignments provided",
            assignments.len()
        )));
    }
    check_replicas(ctx, assignments.iter().map(|a| &a.broker_ids[..]), false).map(|_| ())
}

/// A broker config as DescribeConfigs shows it.
struct BrokerConfig {
    name: &'static str,
    value: String,
    /// Set from the gateway's own configuration, or a fixed default.
    source: i8,
    kind: i8,
    doc: &'static str,
}

/// The broker configs clients and tools read, with the gateway's values. Topic defaults
/// come from the topic config table, so the two never disagree.
fn broker_configs(ctx: &Ctx) -> Vec<BrokerConfig> {
    use sluice_metadata::topic_configs::{BOOLEAN, INT, LIST, LONG, STRING};
    let set = |name, value: String, kind, doc| BrokerConfig {
        name,
        value,
        source: SOURCE_STATIC_BROKER,
        kind,
        doc,
    };
    let fixed = |name, value: &str, kind, doc| BrokerConfig {
        name,
        value: value.to_string(),
        source: SOURCE_DEFAULT,
        kind,
        doc,
    };
    let topic_default = |name, topic_config: &str, kind| BrokerConfig {
        name,
        value: topics::config_def(topic_config)
            .map(|d| d.default.to_string())
            .unwrap_or_default(),
        source: SOURCE_DEFAULT,
        kind,
        doc: "The default of the topic config of the same meaning.",
    };
    let c = &ctx.config;
    let retention_ms = topics::config_def(topics::RETENTION_MS)
        .and_then(|d| d.default.parse::<i64>().ok())
        .unwrap_or(-1);
    vec![
        set(
            "broker.id",
            ctx.node_id.to_string(),
            INT,
            "This gateway's node id.",
        ),
        set(
            "node.id",
            ctx.node_id.to_string(),
            INT,
            "This gateway's node id.",
        ),
        set(
            "advertised.listeners",
            ctx.cluster
                .me()
                .listeners
                .iter()
                .map(|e| format!("{}://{}:{}", e.name, e.host, e.port))
                .collect::<Vec<_>>()
                .join(","),
            LIST,
            "Where clients reach this gateway (--advertise).",
        ),
        set(
            "listeners",
            c.kafka_listeners
                .iter()
                .map(|l| format!("{}://{}", l.protocol.name(), l.addr))
                .collect::<Vec<_>>()
                .join(","),
            LIST,
            "The Kafka listeners (--kafka-listen).",
        ),
        set(
            "listener.security.protocol.map",
            c.kafka_listeners
                .iter()
                .map(|l| format!("{0}:{0}", l.protocol.name()))
                .collect::<Vec<_>>()
                .join(","),
            LIST,
            "Each listener's security protocol (its name).",
        ),
        set(
            "auto.create.topics.enable",
            c.auto_create_topics.to_string(),
            BOOLEAN,
            "Whether Metadata requests create unknown topics (--auto-create-topics).",
        ),
        set(
            "num.partitions",
            c.default_partitions.to_string(),
            INT,
            "Partitions of a topic created without a count (--default-partitions).",
        ),
        set(
            "socket.request.max.bytes",
            c.max_request_bytes.to_string(),
            INT,
            "The largest request accepted (--max-request-bytes).",
        ),
        set(
            "group.initial.rebalance.delay.ms",
            c.group_initial_rebalance_delay.as_millis().to_string(),
            INT,
            "How long a new group waits for more members (--group-initial-rebalance-delay).",
        ),
        set(
            "group.min.session.timeout.ms",
            c.group_min_session_timeout.as_millis().to_string(),
            INT,
            "The shortest session timeout a member may ask for.",
        ),
        set(
            "group.max.session.timeout.ms",
            c.group_max_session_timeout.as_millis().to_string(),
            INT,
            "The longest session timeout a member may ask for.",
        ),
        set(
            "connections.max.reauth.ms",
            c.sasl_session_lifetime
                .map_or(0, |l| l.as_millis())
                .to_string(),
            LONG,
            "How long a SASL session lasts before re-authentication; 0: as long as the \
             connection (--connections-max-reauth).",
        ),
        set(
            "sasl.enabled.mechanisms",
            super::sasl::mechanisms(ctx.oauth.is_some())
                .collect::<Vec<_>>()
                .join(","),
            LIST,
            "The SASL mechanisms of the SASL listeners.",
        ),
        set(
            "max.connections.per.ip",
            if c.max_connections_per_ip == 0 {
                i32::MAX.to_string()
            } else {
                c.max_connections_per_ip.to_string()
            },
            INT,
            "Open connections allowed from one address (--max-connections-per-ip).",
        ),
        topic_default("message.max.bytes", topics::MAX_MESSAGE_BYTES, INT),
        topic_default("log.retention.ms", topics::RETENTION_MS, LONG),
        fixed(
            "log.retention.hours",
            &(retention_ms / 3_600_000).to_string(),
            INT,
            "log.retention.ms in hours.",
        ),
        topic_default("log.retention.bytes", topics::RETENTION_BYTES, LONG),
        topic_default("log.segment.bytes", topics::SEGMENT_BYTES, INT),
        topic_default("log.roll.ms", topics::SEGMENT_MS, LONG),
        topic_default("log.cleanup.policy", topics::CLEANUP_POLICY, LIST),
        topic_default("log.message.timestamp.type", topics::TIMESTAMP_TYPE, STRING),
        topic_default("compression.type", topics::COMPRESSION_TYPE, STRING),
        fixed(
            "default.replication.factor",
            "1",
            INT,
            "No effect: the object store keeps data durable; gateways hold no replicas.",
        ),
        fixed(
            "min.insync.replicas",
            "1",
            INT,
            "No effect: the object store keeps data durable; gateways hold no replicas.",
        ),
        fixed(
            "unclean.leader.election.enable",
            "false",
            BOOLEAN,
            "No effect: any gateway serves any partition from shared storage.",
        ),
        fixed(
            "delete.topic.enable",
            "true",
            BOOLEAN,
            "Topics can be deleted.",
        ),
    ]
}

pub async fn describe_configs(
    ctx: &Ctx,
    req: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let mut results = Vec::new();
    for r in req.resources {
        let out = DescribeConfigsResult::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone());
        let wanted = |k: &str| {
            // Null or empty: every config.
            r.configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.is_empty() || keys.iter().any(|w| w.as_str() == k))
        };
        let entries: Vec<(String, String, i8, i8, bool, &str)> = match r.resource_type {
            RESOURCE_TOPIC => {
                let Some(record) = ctx
                    .log
                    .read(|st| st.topic(r.resource_name.as_str()).map(|t| t.record.clone()))
                else {
                    results.push(
                        out.with_error_code(ResponseError::UnknownTopicOrPartition.code())
                            .with_error_message(Some(s(format!(
                                "topic '{}' does not exist",
                                r.resource_name.as_str()
                            )))),
                    );
                    continue;
                };
                effective_configs(&record)
                    .into_iter()
                    .map(|(k, v, source, kind, doc)| (k.to_string(), v, source, kind, false, doc))
                    .collect()
            }
            RESOURCE_BROKER => broker_configs(ctx)
                .into_iter()
                .map(|c| (c.name.to_string(), c.value, c.source, c.kind, true, c.doc))
                .collect(),
            other => {
                results.push(
                    out.with_error_code(ResponseError::InvalidRequest.code())
                        .with_error_message(Some(s(format!(
                            "resource type {other} is not supported"
                        )))),
                );
                continue;
            }
        };
        let configs = entries
            .into_iter()
            .filter(|(k, ..)| wanted(k))
            .map(|(k, v, source, kind, read_only, doc)| {
                DescribeConfigsResourceResult::default()
                    .with_documentation((version >= 3 && req.include_documentation).then(|| s(doc)))
                    .with_name(s(k))
                    .with_value(Some(s(v)))
                    .with_config_source(source)
                    .with_config_type(if version >= 3 { kind } else { 0 })
                    .with_read_only(read_only)
            })
            .collect();
        results.push(out.with_configs(configs));
    }
    DescribeConfigsResponse::default().with_results(results)
}

pub async fn alter_configs(
    ctx: &Ctx,
    req: IncrementalAlterConfigsRequest,
    _version: i16,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::new();
    for r in req.resources {
        let out = AlterConfigsResourceResponse::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone());
        if r.resource_type != RESOURCE_TOPIC {
            responses.push(
                out.with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(s("only topic configs can be altered"))),
            );
            continue;
        }
        let mut changes = Vec::new();
        let mut bad = None;
        for c in &r.configs {
            let op = match c.config_operation {
                0 => AlterOp::Set,
                1 => AlterOp::Delete,
                2 => AlterOp::Append,
                3 => AlterOp::Subtract,
                other => {
                    bad = Some(TopicError::InvalidRequest(format!(
                        "unknown config operation {other}"
                    )));
                    break;
                }
            };
            changes.push((
                c.name.to_string(),
                op,
                c.value.as_ref().map(|v| v.to_string()),
            ));
        }
        let result = match bad {
            Some(e) => Err(e),
            None => {
                topics::alter_configs(ctx, r.resource_name.as_str(), changes, req.validate_only)
                    .await
            }
        };
        responses.push(match result {
            Ok(()) => out,
            Err(e) => out.with_error_code(e.code()).with_error_message(msg(&e)),
        });
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// The legacy AlterConfigs (some tools still send it): replaces a topic's overrides with
/// the ones given. Entries without a value are left out, as Kafka leaves them out.
pub async fn alter_configs_legacy(
    ctx: &Ctx,
    req: AlterConfigsRequest,
    _version: i16,
) -> AlterConfigsResponse {
    let mut responses = Vec::new();
    for r in req.resources {
        let out = alter_configs_response::AlterConfigsResourceResponse::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone());
        if r.resource_type != RESOURCE_TOPIC {
            responses.push(
                out.with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(s(
                        "only topic configs can be altered; gateway settings come from its configuration",
                    ))),
            );
            continue;
        }
        let configs: BTreeMap<String, String> = r
            .configs
            .iter()
            .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
            .collect();
        let result =
            topics::replace_configs(ctx, r.resource_name.as_str(), configs, req.validate_only)
                .await;
        responses.push(match result {
            Ok(()) => out,
            Err(e) => out.with_error_code(e.code()).with_error_message(msg(&e)),
        });
    }
    AlterConfigsResponse::default().with_responses(responses)
}

pub async fn describe_cluster(
    ctx: &Ctx,
    req: DescribeClusterRequest,
    _version: i16,
    asker: &super::Asker<'_>,
) -> DescribeClusterResponse {
    let nodes = asker.nodes(ctx);
    DescribeClusterResponse::default()
        .with_cluster_authorized_operations(super::authorized::cluster(
            req.include_cluster_authorized_operations,
        ))
        .with_cluster_id(s(ctx.cluster_id.clone()))
        .with_controller_id(BrokerId(crate::cluster::Cluster::controller(&nodes)))
        .with_brokers(
            nodes
                .iter()
                .map(|n| {
                    DescribeClusterBroker::default()
                        .with_broker_id(BrokerId(n.id))
                        .with_host(s(n.host.clone()))
                        .with_port(i32::from(n.port))
                        .with_rack(n.zone.as_deref().map(s))
                })
                .collect(),
        )
}
