//! Metadata: the live gateways as brokers, each partition led by one of them (see
//! [`crate::cluster`]). Any gateway can serve any partition; leadership only spreads
//! clients over the gateways, the same way whichever gateway they ask.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use sluice_metadata::log::TopicState;

use super::authorized;
use crate::cluster::{Cluster, Placement};
use crate::server::Ctx;
use crate::topics::{self, TopicError};

fn describe(
    placement: &Placement,
    t: &TopicState,
    version: i16,
    ops: bool,
) -> MetadataResponseTopic {
    let epoch = if version >= 7 { 0 } else { -1 };
    MetadataResponseTopic::default()
        .with_topic_authorized_operations(authorized::topic(ops))
        .with_name(Some(TopicName(StrBytes::from_string(
            t.record.name.clone(),
        ))))
        .with_topic_id(if version >= 10 {
            t.record.id
        } else {
            uuid::Uuid::nil()
        })
        .with_partitions(
            (0..t.partitions.len() as i32)
                .map(|i| {
                    let (leader, replicas) = placement.place(t.record.id, i as u32);
                    MetadataResponsePartition::default()
                        .with_partition_index(i)
                        .with_leader_id(leader)
                        .with_leader_epoch(epoch)
                        .with_replica_nodes(replicas.clone())
                        .with_isr_nodes(replicas)
                })
                .collect(),
        )
}

fn error_topic(name: Option<&str>, id: uuid::Uuid, code: ResponseError) -> MetadataResponseTopic {
    // The id is only set where the request named the topic by id (v10+).
    MetadataResponseTopic::default()
        .with_name(name.map(|n| TopicName(StrBytes::from_string(n.to_string()))))
        .with_topic_id(id)
        .with_error_code(code.code())
}

pub async fn handle(
    ctx: &Ctx,
    req: MetadataRequest,
    version: i16,
    asker: &super::Asker<'_>,
) -> MetadataResponse {
    let nodes = asker.nodes(ctx);
    let placement = Placement::new(&nodes, asker.zone);
    // v8-v10 can ask for the cluster's operations, v8+ for each topic's.
    let topic_ops = version >= 8 && req.include_topic_authorized_operations;
    let cluster_ops = (8..=10).contains(&version) && req.include_cluster_authorized_operations;
    // v0: an empty list means all topics; v1+: null means all, empty means none.
    let wanted = match req.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(t),
    };
    let topics = match wanted {
        None => ctx.log.read(|s| {
            s.topics()
                .map(|t| describe(&placement, t, version, topic_ops))
                .collect()
        }),
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for t in list {
                let name = t.name.as_ref().map(|n| n.0.to_string());
                let known = ctx.log.read(|s| {
                    let topic = match &name {
                        Some(n) => s.topic(n),
                        None => s.topic_by_id(&t.topic_id),
                    };
                    topic.map(|t| describe(&placement, t, version, topic_ops))
                });
                if let Some(d) = known {
                    out.push(d);
                    continue;
                }
                let Some(name) = name else {
                    out.push(error_topic(None, t.topic_id, ResponseError::UnknownTopicId));
                    continue;
                };
                if let Err(e) = topics::validate_name(&name) {
                    out.push(error_topic(Some(&name), t.topic_id, e.error()));
                    continue;
                }
                // v0-v3 have no flag: Kafka treats them as allowing auto-creation.
                let allow = version < 4 || req.allow_auto_topic_creation;
                if !(allow && ctx.config.auto_create_topics) {
                    out.push(error_topic(
                        Some(&name),
                        t.topic_id,
                        ResponseError::UnknownTopicOrPartition,
                    ));
                    continue;
                }
                match topics::create(ctx, &name, -1, -1, Default::default(), false).await {
                    Ok(_) | Err(TopicError::Exists(_)) => {
                        let d = ctx.log.read(|s| {
                            s.topic(&name)
                                .map(|t| describe(&placement, t, version, topic_ops))
                        });
                        out.push(d.unwrap_or_else(|| {
                            error_topic(Some(&name), t.topic_id, ResponseError::LeaderNotAvailable)
                        }));
                    }
                    Err(e) => {
                        tracing::warn!(topic = %name, error = %e, "auto-creating a topic failed");
                        out.push(error_topic(Some(&name), t.topic_id, e.error()));
                    }
                }
            }
            out
        }
    };
    let resp = MetadataResponse::default()
        .with_brokers(
            nodes
                .iter()
                .map(|n| {
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(n.id))
                        .with_host(StrBytes::from_string(n.host.clone()))
                        .with_port(i32::from(n.port))
                        .with_rack(n.zone.as_deref().map(|z| StrBytes::from_string(z.into())))
                })
                .collect(),
        )
        .with_topics(topics);
    let resp = if version >= 1 {
        resp.with_controller_id(BrokerId(Cluster::controller(&nodes)))
    } else {
        resp
    };
    let resp = resp.with_cluster_authorized_operations(authorized::cluster(cluster_ops));
    if version >= 2 {
        resp.with_cluster_id(Some(StrBytes::from_string(ctx.cluster_id.clone())))
    } else {
        resp
    }
}
