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
        let created = if !t.assignments.is_empty() {
            Err(TopicError::InvalidRequest(
                "manual replica assignment is not supported: storage is shared".into(),
            ))
        } else {
            topics::create(
                ctx,
                &name,
                t.num_partitions,
                t.replication_factor,
                configs,
                req.validate_only,
            )
            .await
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
                .with_replication_factor(if t.replication_factor > 0 {
                    t.replication_factor
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
        let r = if t.assignments.is_some() {
            Err(TopicError::InvalidRequest(
                "manual replica assignment is not supported: storage is shared".into(),
            ))
        } else {
            topics::create_partitions(ctx, t.name.0.as_str(), t.count, req.validate_only).await
        };
        results.push(match r {
            Ok(()) => out,
            Err(e) => out.with_error_code(e.code()).with_error_message(msg(&e)),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}

fn broker_configs(ctx: &Ctx) -> Vec<(&'static str, String)> {
    vec![
        (
            "auto.create.topics.enable",
            ctx.config.auto_create_topics.to_string(),
        ),
        ("num.partitions", ctx.config.default_partitions.to_string()),
        (
            "socket.request.max.bytes",
            ctx.config.max_request_bytes.to_string(),
        ),
        ("message.max.bytes", "1048588".to_string()),
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
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        v,
                        SOURCE_STATIC_BROKER,
                        2,
                        true,
                        "Gateway setting.",
                    )
                })
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
                2 | 3 => {
                    bad = Some(TopicError::InvalidConfig(format!(
                        "APPEND and SUBTRACT apply to list configs; '{}' takes one value",
                        c.name.as_str()
                    )));
                    break;
                }
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

pub async fn describe_cluster(
    ctx: &Ctx,
    _req: DescribeClusterRequest,
    _version: i16,
) -> DescribeClusterResponse {
    let nodes = ctx.cluster.nodes();
    DescribeClusterResponse::default()
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
                })
                .collect(),
        )
}
