//! ACLs on every Kafka API, with Kafka's operations and error codes: each request is split
//! into what the principal may do, which the handler serves, and what it may not, which
//! is answered here (TOPIC_AUTHORIZATION_FAILED, GROUP_AUTHORIZATION_FAILED,
//! CLUSTER_AUTHORIZATION_FAILED, TRANSACTIONAL_ID_AUTHORIZATION_FAILED) and merged into the
//! handler's response. Handlers never see a refused part, so nothing refused is written or
//! read. Without `--authorizer acl` every request passes untouched.
//!
//! Operations as Kafka checks them: Produce Write (topic); Fetch Read (topic); ListOffsets,
//! Metadata, DescribeTopicPartitions and OffsetFetch Describe (topic; Metadata and listing
//! fetches leave out what may not be described); CreateTopics Create (cluster or topic,
//! also for auto-creation); DeleteTopics and DeleteRecords Delete (topic); CreatePartitions
//! Alter (topic); DescribeConfigs and AlterConfigs DescribeConfigs and AlterConfigs (topic
//! or cluster); FindCoordinator and DescribeGroups Describe (group); JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup and OffsetCommit Read (group, and Read on the committed topics);
//! DeleteGroups and OffsetDelete Delete (group); ListGroups Describe (cluster, or each
//! group); DescribeCluster and DescribeUserScramCredentials Describe (cluster);
//! AlterUserScramCredentials Alter (cluster); InitProducerId IdempotentWrite (cluster) or
//! Write on some topic, or Write on its transactional id.

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::acl::{CLUSTER, Operation, Principal, ResourceType};
use crate::server::Ctx;

const TOPIC_DENIED: i16 = 29;
const GROUP_DENIED: i16 = 30;
const CLUSTER_DENIED: i16 = 31;
const TXN_DENIED: i16 = 53;

/// What authorization leaves of a request: the part to serve (`None`: nothing), and what
/// adds the refused part to the handler's response.
pub(crate) struct Checked<Req, Resp> {
    pub req: Option<Req>,
    pub finish: Box<dyn FnOnce(Resp) -> Resp + Send>,
}

impl<Req, Resp: 'static> Checked<Req, Resp> {
    fn pass(req: Req) -> Self {
        Self {
            req: Some(req),
            finish: Box::new(|r| r),
        }
    }

    fn refuse(f: impl FnOnce(Resp) -> Resp + Send + 'static) -> Self {
        Self {
            req: None,
            finish: Box::new(f),
        }
    }

    fn partial(req: Req, f: impl FnOnce(Resp) -> Resp + Send + 'static) -> Self {
        Self {
            req: Some(req),
            finish: Box::new(f),
        }
    }
}

struct Check<'a> {
    ctx: &'a Ctx,
    p: &'a Principal,
}

impl Check<'_> {
    fn on(&self) -> bool {
        self.ctx.acl.enabled()
    }
    fn topic(&self, op: Operation, name: &str) -> bool {
        self.ctx.acl.allows(self.p, op, ResourceType::Topic, name)
    }
    fn group(&self, op: Operation, name: &str) -> bool {
        self.ctx.acl.allows(self.p, op, ResourceType::Group, name)
    }
    fn cluster(&self, op: Operation) -> bool {
        self.ctx
            .acl
            .allows(self.p, op, ResourceType::Cluster, CLUSTER)
    }
    /// A topic's name from its id, for requests that carry ids.
    fn topic_name(&self, id: &uuid::Uuid) -> String {
        self.ctx
            .log
            .read(|s| s.topic_by_id(id).map(|t| t.record.name.clone()))
            .unwrap_or_default()
    }
}

fn check<'a>(ctx: &'a Ctx, p: &'a Principal) -> Check<'a> {
    Check { ctx, p }
}

/// Splits `items` into the allowed and the refused.
fn split<T>(items: Vec<T>, allowed: impl Fn(&T) -> bool) -> (Vec<T>, Vec<T>) {
    items.into_iter().partition(|t| allowed(t))
}

fn msg(s: &'static str) -> Option<StrBytes> {
    Some(StrBytes::from_static_str(s))
}

pub(crate) fn produce(
    ctx: &Ctx,
    p: &Principal,
    mut req: ProduceRequest,
) -> Checked<ProduceRequest, ProduceResponse> {
    let c = check(ctx, p);
    if !c.on() {
        return Checked::pass(req);
    }
    let (ok, denied) = split(std::mem::take(&mut req.topic_data), |t| {
        let name = if t.name.0.is_empty() {
            c.topic_name(&t.topic_id)
        } else {
            t.name.to_string()
        };
        c.topic(Operation::Write, &name)
    });
    req.topic_data = ok;
    Checked::partial(req, move |mut resp: ProduceResponse| {
        for t in denied {
            resp.responses.push(
                produce_response::TopicProduceResponse::default()
                    .with_name(t.name)
                    .with_topic_id(t.topic_id)
                    .with_partition_responses(
                        t.partition_data
                            .iter()
                            .map(|pd| {
                                produce_response::PartitionProduceResponse::default()
                                    .with_index(pd.index)
                                    .with_error_code(TOPIC_DENIED)
                                    .with_base_offset(-1)
                                    .with_log_append_time_ms(-1)
                                    .with_log_start_offset(-1)
                            })
                            .collect(),
                    ),
            );
        }
        resp
    })
}

pub(crate) fn fetch(
    ctx: &Ctx,
    p: &Principal,
    mut req: FetchRequest,
) -> Checked<FetchRequest, FetchResponse> {
    let c = check(ctx, p);
    if !c.on() {
        return Checked::pass(req);
    }
    let (ok, denied) = split(std::mem::take(&mut req.topics), |t| {
        let name = if t.topic.0.is_empty() {
            c.topic_name(&t.topic_id)
        } else {
            t.topic.to_string()
        };
        c.topic(Operation::Read, &name)
    });
    req.topics = ok;
    Checked::partial(req, move |mut resp: FetchResponse| {
        for t in denied {
            resp.responses.push(
                fetch_response::FetchableTopicResponse::default()
                    .with_topic(t.topic)
                    .with_topic_id(t.topic_id)
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|fp| {
                                fetch_response::PartitionData::default()
                                    .with_partition_index(fp.partition)
                                    .with_error_code(TOPIC_DENIED)
                                    .with_high_watermark(-1)
                                    .with_last_stable_offset(-1)
                                    .with_log_start_offset(-1)
                            })
                            .collect(),
                    ),
            );
        }
        resp
    })
}

pub(crate) fn list_offsets(
    ctx: &Ctx,
    p: &Principal,
    mut req: ListOffsetsRequest,
) -> Checked<ListOffsetsRequest, ListOffsetsResponse> {
    let c = check(ctx, p);
    if !c.on() {
        return Checked::pass(req);
    }
    let (ok, denied) = split(std::mem::take(&mut req.topics), |t| {
        c.topic(Operation::Describe, &t.name)
    });
    req.topics = ok;
    Checked::partial(req, move |mut resp: ListOffsetsResponse| {
        for t in denied {
            resp.topics.push(
                list_offsets_response::ListOffsetsTopicResponse::default()
                    .with_name(t.name)
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|lp| {
                                list_offsets_response::ListOffsetsPartitionResponse::default()
                                    .with_partition_index(lp.partition_index)
                                    .with_error_code(TOPIC_DENIED)
                                    .with_timestamp(-1)
                                    .with_offset(-1)
                            })
                            .collect(),
                    ),
            );
        }
        resp
    })
}

/// Metadata: topics the principal may not describe are left out of a listing of all
/// topics and answered TOPIC_AUTHORIZATION_FAILED when named; an unknown topic is created
/// only with Create on the cluster or the topic.
pub(crate) fn metadata(
    ctx: &Ctx,
    p: &Principal,
    mut req: MetadataRequest,
    version: i16,
) -> Checked<MetadataRequest, MetadataResponse> {
    let c = check(ctx, p);
    if !c.on() {
        return Checked::pass(req);
    }
    let listed =
        req.topics.is_none() || (version == 0 && req.topics.as_ref().is_some_and(Vec::is_empty));
    if let Some(topics) = &req.topics {
        let may_create_any = c.cluster(Operation::Create);
        let all_creatable = topics.iter().all(|t| {
            let Some(name) = &t.name else { return true };
            may_create_any
                || c.topic(Operation::Create, name)
                || ctx.log.read(|s| s.topic(name).is_some())
        });
        // Kafka decides per topic; the request's single flag is the nearest: a client
        // asking for a topic it may not create gets UNKNOWN_TOPIC_OR_PARTITION for it.
        if !all_creatable {
            req.allow_auto_topic_creation = false;
        }
    }
    let ops = [
        Operation::Read,
        Operation::Write,
        Operation::Create,
        Operation::Delete,
        Operation::Alter,
        Operation::Describe,
        Operation::DescribeConfigs,
        Operation::AlterConfigs,
    ];
    let acl = ctx.acl.clone();
    let principal = p.clone();
    Checked::partial(req, move |mut resp: MetadataResponse| {
        let may = |name: &str, op| acl.allows(&principal, op, ResourceType::Topic, name);
        let mut topics = Vec::with_capacity(resp.topics.len());
        for t in std::mem::take(&mut resp.topics) {
            let name = t.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
            if may(&name, Operation::Describe) {
                let t = if t.topic_authorized_operations != i32::MIN {
                    let bits = acl.authorized_operations(
                        &principal.name,
                        principal.host,
                        ResourceType::Topic,
                        &name,
                        &ops,
                    );
                    t.with_topic_authorized_operations(bits)
                } else {
                    t
                };
                topics.push(t);
            } else if !listed {
                topics.push(
                    metadata_response::MetadataResponseTopic::default()
                        .with_name(t.name)
                        .with_topic_id(t.topic_id)
                        .with_error_code(TOPIC_DENIED),
                );
            }
        }
        resp.topics = topics;
        if resp.cluster_authorized_operations != i32::MIN {
            resp.cluster_authorized_operations = cluster_operations(&acl, &principal);
        }
        resp
    })
}

/// The cluster operations the ACLs allow `p`, as authorized-operations bits.
fn cluster_operations(acl: &crate::acl::Authorizer, p: &Principal) -> i32 {
    acl.authorized_operations(
        &p.name,
        p.host,
        ResourceType::Cluster,
        CLUSTER,
        &[
            Operation::Create,
            Operation::Alter,
            Operation::Describe,
            Operation::ClusterAction,
            Operation::DescribeConfigs,
            Operation::AlterConfigs,
            Operation::IdempotentWrite,
        ],
    )
}

/// DescribeCluster: Describe on the cluster, and the caller's own operations.
pub(crate) fn describe_cluster(
    ctx: &Ctx,
    p: &Principal,
    req: DescribeClusterRequest,
) -> Checked<DescribeClusterRequest, DescribeClusterResponse> {
    let c = check(ctx, p);
    if !c.on() {
        return Checked::pass(req);
    }
    if !c.cluster(Operation::Describe) {
        return Checked::refuse(|resp: DescribeClusterResponse| {
            resp.with_error_code(CLUSTER_DENIED)
                .with_error_message(msg("not authorized"))
        });
    }
    let acl = ctx.acl.clone();
    let principal = p.clone();
    Checked::partial(req, move |mut resp: DescribeClusterResponse| {
        if resp.cluster_authorized_operations != i32::MIN {
            resp.cluster_authorized_operations = cluster_operations(&acl, &principal);
        }
        resp
    })
}

pub(crate) fn describe_topic_partitions(
    ctx: &Ctx,
    p: &Principal,
    mut req: DescribeTopicPartitionsRequest,
) -> Checked<DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse> {
    let c = check(ctx, p);
    if !c.on() {
        return Checked::pass(req);
    }
    let listed = req.topics.is_empty();
    let (ok, denied) = split(std::mem::take(&mut req.topics), |t| {
        c.topic(Operation::Describe, &t.name)
    });
    if !listed && ok.is_empty() {
        return Checked::refuse(move |mut resp: DescribeTopicPartitionsResponse| {
            resp.topics = denied_topics(denied);
            resp
        });
    }
    req.topics = ok;
    let acl = ctx.acl.clone();
    let principal = p.clone();
    Checked::partial(req, move |mut resp: DescribeTopicPartitionsResponse| {
        resp.topics.retain(|t| {
            let name = t.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
            acl.allows(&principal, Operation::Describe, ResourceType::Topic, &name)
        });
        resp.topics.extend(denied_topics(denied));
        resp
    })
}

fn denied_topics(
    denied: Vec<describe_topic_partitions_request::TopicRequest>,
) -> Vec<describe_topic_partitions_response::DescribeTopicPartitionsResponseTopic> {
    denied
        .into_iter()
        .map(|t| {
            describe_topic_partitions_response::DescribeTopicPartitionsResponseTopic::default()
                .with_name(Some(t.name))
                .with_error_code(TOPIC_DENIED)
        })
        .collect()
}

pub(crate) fn create_topics(
    ctx: &Ctx,
    p: &Principal,
    mut req: CreateTopicsRequest,
) -> Checked<CreateTopicsRequest, CreateTopicsResponse> {
    let c = check(ctx, p);
    if !c.on() || c.cluster(Operation::Create) {
        return Checked::pass(req);
    }
    let (ok, denied) = split(std::mem::take(&mut req.topics), |t| {
        c.topic(Operation::Create, &t.name)
    });
    req.topics = ok;
    Checked::partial(req, move |mut resp: CreateTopicsResponse| {
        for t in denied {
            resp.topics.push(
                create_topics_response::CreatableTopicResult::default()
                    .with_name(t.name)
                    .with_error_code(TOPIC_DENIED)
                    .with_error_message(msg("Authorization failed."))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1),
            );
        }
        resp
    })
}

pub(crate) fn delete_topics(
    ctx: &Ctx,
    p: &Principal,
    mut req: DeleteTopicsRequest,
) -> Checked<DeleteTopicsRequest, DeleteTopicsResponse> {
    let c = check(ctx, p);
    if !c.on() {
        return Checked::pass(req);
    }
    let (names, denied_names) = split(std::mem::take(&mut req.topic_names), |n| {
        c.topic(Operation::Delete, n)
    });
    let (states, denied_states) = split(std::mem::take(&mut req.topics), |t| {
        let name = match &t.name {
            Some(n) => n.to_string(),
            None => c.topic_name(&t.topic_id),
        };
        c.topic(Operation::Delete, &name)
    });
    req.topic_names = names;
    req.topics = states;
    Checked::partial(req, move |mut resp: DeleteTopicsResponse| {
        let r =
            delete_topics_response::DeletableTopicResult::default().with_error_code(TOPIC_DENIED);
        for n in denied_names {
            resp.responses.push(r.clone().with_name(Some(n)));
        }
        for t in denied_states {
            resp.responses
                .push(r.clone().with_name(t.name).with_topic_id(t.topic_id));
        }
        resp
    })
}

pub(crate) fn create_partitions(
    ctx: &Ctx,
    p: &Principal,
    mut req: CreatePartitionsRequest,
) -> Checked<CreatePartitionsRequest, CreatePartitionsResponse> {
    let c = check(ctx, p);
    if !c.on() {
        return Checked::pass(req);
    }
    let (ok, denied) = split(std::mem::take(&mut req.topics), |t| {
        c.topic(Operation::Alter, &t.name)
    });
    req.topics = ok;
    Checked::partial(req, move |mut resp: CreatePartitionsResponse| {
        for t in denied {
            resp.results.push(
                create_partitions_response::CreatePartitionsTopicResult::default()
                    .with_name(t.name)
                    .with_error_code(TOPIC_DENIED),
            );
        }
        resp
    })
}

/// Whether `op` is allowed on a config resource (type 2 topic, 4 broker, 8 broker
/// logger), and the code refusing it.
fn config_resource(c: &Check<'_>, op: Operation, resource_type: i8, name: &str) -> Result<(), i16> {
    match resource_type {
        2 if c.topic(op, name) => Ok(()),
        2 => Err(TOPIC_DENIED),
        _ if c.cluster(op) => Ok(()),
        _ => Err(CLUSTER_DENIED),
    }
}

/// Takes the config resources `op` is not allowed on out of `resources`: their type,
/// name and refusing code.
fn refused_configs<R>(
    c: &Check<'_>,
    op: Operation,
    resources: &mut Vec<R>,
    key: impl Fn(&R) -> (i8, &StrBytes),
) -> Vec<(i8, StrBytes, i16)> {
    let mut denied = Vec::new();
    resources.retain(|r| {
        let (rt, name) = key(r);
        match config_resource(c, op, rt, name) {
            Ok(()) => true,
            Err(code) => {
                denied.push((rt, name.clone(), code));
                false
            }
        }
    });
    denied
}

pub(crate) fn describe_configs(
    ctx: &Ctx,
    p: &Principal,
    mut req: DescribeConfigsRequest,
) -> Checked<DescribeConfigsRequest, DescribeConfigsResponse> {
    let c = check(ctx, p);
    if !c.on() {
        return Checked::pass(req);
    }
    let denied = refused_configs(&c, Operation::DescribeConfigs, &mut req.resources, |r| {
        (r.resource_type, &r.resource_name)
    });
    Checked::partial(req, move |mut resp: DescribeConfigsResponse| {
        resp.results
            .extend(denied.into_iter().map(|(rt, name, code)| {
                describe_configs_response::DescribeConfigsResult::default()
                    .with_resource_type(rt)
                    .with_resource_name(name)
                    .with_error_code(code)
            }));
        resp
    })
}

pub(crate) fn incremental_alter_configs(
    ctx: &Ctx,
    p: &Principal,
    mut req: IncrementalAlterConfigsRequest,
) -> Checked<IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse> {
    let c = check(ctx, p);
    if !c.on() {
        return Checked::pass(req);
    }
    let denied = refused_configs(&c, Operation::AlterConfigs, &mut req.resources, |r| {
        (r.resource_type, &r.resource_name)
    });
    Checked::partial(req, move |mut resp: IncrementalAlterConfigsResponse| {
        resp.responses
            .extend(denied.into_iter().map(|(rt, name, code)| {
                incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(rt)
                    .with_resource_name(name)
                    .with_error_code(code)
            }));
        resp
    })
}

pub(crate) fn alter_configs(
    ctx: &Ctx,
    p: &Principal,
    mut req: AlterConfigsRequest,
) -> Checked<AlterConfigsRequest, AlterConfigsResponse> {
    let c = check(ctx, p);
    if !c.on() {
        return Checked::pass(req);
    }
    let denied = refused_configs(&c, Operation::AlterConfigs, &mut req.resources, |r| {
        (r.resource_type, &r.resource_name)
    });
    Checked::partial(req, move |mut resp: AlterConfigsResponse| {
        resp.responses
            .extend(denied.into_iter().map(|(rt, name, code)| {
                alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(rt)
                    .with_resource_name(name)
                    .with_error_code(code)
            }));
        resp
    })
}

pub(crate) fn delete_records(
    ctx: &Ctx,
    p: &Principal,
    mut req: DeleteRecordsRequest,
) -> Checked<DeleteRecordsRequest, DeleteRecordsResponse> {
    let c = check(ctx, p);
    if !c.on() {
        return Checked::pass(req);
    }
    let (ok, denied) = split(std::mem::take(&mut req.topics), |t| {
        c.topic(Operation::Delete, &t.name)
    });
    req.topics = ok;
    Checked::partial(req, move |mut resp: DeleteRecordsResponse| {
        for t in denied {
            resp.topics.push(
                delete_records_response::DeleteRecordsTopicResult::default()
                    .with_name(t.name)
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|dp| {
                                delete_records_response::DeleteRecordsPartitionResult::default()
                                    .with_partition_index(dp.partition_index)
                                    .with_low_watermark(-1)
                                    .with_error_code(TOPIC_DENIED)
                            })
                            .collect(),
                    ),
            );
        }
        resp
    })
}

pub(crate) fn find_coordinator(
    ctx: &Ctx,
    p: &Principal,
    mut req: FindCoordinatorRequest,
    version: i16,
) -> Checked<FindCoordinatorRequest, FindCoordinatorResponse> {
    let c = check(ctx, p);
    if !c.on() {
        return Checked::pass(req);
    }
    // Key type 1 is a transactional id (not served: its own error comes from the handler).
    let may = |key: &str| req.key_type != 0 || c.group(Operation::Describe, key);
    if version < 4 {
        if may(&req.key) {
            return Checked::pass(req);
        }
        return Checked::refuse(|resp: FindCoordinatorResponse| {
            resp.with_error_code(GROUP_DENIED)
                .with_error_message(msg("Authorization failed."))
                .with_node_id(BrokerId(-1))
                .with_port(-1)
        });
    }
    let (ok, denied) = split(std::mem::take(&mut req.coordinator_keys), |k| may(k));
    req.coordinator_keys = ok;
    let merge = move |mut resp: FindCoordinatorResponse| {
        for key in denied {
            resp.coordinators.push(
                find_coordinator_response::Coordinator::default()
                    .with_key(key)
                    .with_node_id(BrokerId(-1))
                    .with_port(-1)
                    .with_error_code(GROUP_DENIED)
                    .with_error_message(msg("Authorization failed.")),
            );
        }
        resp
    };
    if req.coordinator_keys.is_empty() {
        return Checked::refuse(merge);
    }
    Checked::partial(req, merge)
}

/// A group call that needs Read on its group as a whole: refused with `refuse` when not.
pub(crate) fn group_read<Req, Resp: 'static>(
    ctx: &Ctx,
    p: &Principal,
    req: Req,
    group: impl Fn(&Req) -> &str,
    refuse: fn(Resp) -> Resp,
) -> Checked<Req, Resp> {
    let c = check(ctx, p);
    if !c.on() || c.group(Operation::Read, group(&req)) {
        Checked::pass(req)
    } else {
        Checked::refuse(refuse)
    }
}

pub(crate) fn offset_commit(
    ctx: &Ctx,
    p: &Principal,
    mut req: OffsetCommitRequest,
) -> Checked<OffsetCommitRequest, OffsetCommitResponse> {
    let c = check(ctx, p);
    if !c.on() {
        return Checked::pass(req);
    }
    let whole = !c.group(Operation::Read, &req.group_id);
    let (ok, denied) = split(std::mem::take(&mut req.topics), |t| {
        !whole && c.topic(Operation::Read, &t.name)
    });
    req.topics = ok;
    let code = if whole { GROUP_DENIED } else { TOPIC_DENIED };
    let merge = move |mut resp: OffsetCommitResponse| {
        for t in denied {
            resp.topics.push(
                offset_commit_response::OffsetCommitResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|op| {
                                offset_commit_response::OffsetCommitResponsePartition::default()
                                    .with_partition_index(op.partition_index)
                                    .with_error_code(code)
                            })
                            .collect(),
                    ),
            );
        }
        resp
    };
    if whole || req.topics.is_empty() {
        return Checked::refuse(merge);
    }
    Checked::partial(req, merge)
}

/// OffsetFetch: a group the principal may not describe is refused; committed offsets of
/// topics it may not describe are left out (all topics asked) or refused (named).
pub(crate) fn offset_fetch(
    ctx: &Ctx,
    p: &Principal,
    req: OffsetFetchRequest,
    version: i16,
) -> Checked<OffsetFetchRequest, OffsetFetchResponse> {
    let c = check(ctx, p);
    if !c.on() {
        return Checked::pass(req);
    }
    let acl = ctx.acl.clone();
    let principal = p.clone();
    let may_topic =
        move |name: &str| acl.allows(&principal, Operation::Describe, ResourceType::Topic, name);
    if version < 8 {
        if !c.group(Operation::Describe, &req.group_id) {
            return Checked::refuse(|resp: OffsetFetchResponse| resp.with_error_code(GROUP_DENIED));
        }
        let named = req.topics.is_some();
        return Checked::partial(req, move |mut resp: OffsetFetchResponse| {
            for t in resp.topics.iter_mut() {
                if !may_topic(&t.name) {
                    for part in t.partitions.iter_mut() {
                        part.error_code = TOPIC_DENIED;
                        part.committed_offset = -1;
                        part.metadata = None;
                    }
                }
            }
            if !named {
                resp.topics
                    .retain(|t| t.partitions.iter().all(|p| p.error_code != TOPIC_DENIED));
            }
            resp
        });
    }
    let denied_groups: Vec<String> = req
        .groups
        .iter()
        .filter(|g| !c.group(Operation::Describe, &g.group_id))
        .map(|g| g.group_id.to_string())
        .collect();
    let named: std::collections::HashMap<String, bool> = req
        .groups
        .iter()
        .map(|g| (g.group_id.to_string(), g.topics.is_some()))
        .collect();
    let mut req = req;
    req.groups
        .retain(|g| !denied_groups.contains(&g.group_id.to_string()));
    let merge = move |mut resp: OffsetFetchResponse| {
        for g in resp.groups.iter_mut() {
            for t in g.topics.iter_mut() {
                if !may_topic(&t.name) {
                    for part in t.partitions.iter_mut() {
                        part.error_code = TOPIC_DENIED;
                        part.committed_offset = -1;
                        part.metadata = None;
                    }
                }
            }
            if !named.get(&g.group_id.to_string()).copied().unwrap_or(true) {
                g.topics
                    .retain(|t| t.partitions.iter().all(|p| p.error_code != TOPIC_DENIED));
            }
        }
        for group in denied_groups {
            resp.groups.push(
                offset_fetch_response::OffsetFetchResponseGroup::default()
                    .with_group_id(GroupId(StrBytes::from_string(group)))
                    .with_error_code(GROUP_DENIED),
            );
        }
        resp
    };
    if req.groups.is_empty() {
        return Checked::refuse(merge);
    }
    Checked::partial(req, merge)
}

pub(crate) fn list_groups(
    ctx: &Ctx,
    p: &Principal,
    req: ListGroupsRequest,
) -> Checked<ListGroupsRequest, ListGroupsResponse> {
    let c = check(ctx, p);
    if !c.on() || c.cluster(Operation::Describe) {
        return Checked::pass(req);
    }
    let acl = ctx.acl.clone();
    let principal = p.clone();
    Checked::partial(req, move |mut resp: ListGroupsResponse| {
        resp.groups.retain(|g| {
            acl.allows(
                &principal,
                Operation::Describe,
                ResourceType::Group,
                &g.group_id,
            )
        });
        resp
    })
}

pub(crate) fn describe_groups(
    ctx: &Ctx,
    p: &Principal,
    mut req: DescribeGroupsRequest,
) -> Checked<DescribeGroupsRequest, DescribeGroupsResponse> {
    let c = check(ctx, p);
    if !c.on() {
        return Checked::pass(req);
    }
    let (ok, denied) = split(std::mem::take(&mut req.groups), |g| {
        c.group(Operation::Describe, g)
    });
    req.groups = ok;
    let acl = ctx.acl.clone();
    let principal = p.clone();
    let merge = move |mut resp: DescribeGroupsResponse| {
        for g in resp.groups.iter_mut() {
            if g.authorized_operations != i32::MIN {
                g.authorized_operations = acl.authorized_operations(
                    &principal.name,
                    principal.host,
                    ResourceType::Group,
                    &g.group_id,
                    &[Operation::Read, Operation::Delete, Operation::Describe],
                );
            }
        }
        for g in denied {
            resp.groups.push(
                describe_groups_response::DescribedGroup::default()
                    .with_group_id(g)
                    .with_error_code(GROUP_DENIED)
                    .with_authorized_operations(i32::MIN),
            );
        }
        resp
    };
    if req.groups.is_empty() {
        return Checked::refuse(merge);
    }
    Checked::partial(req, merge)
}

pub(crate) fn delete_groups(
    ctx: &Ctx,
    p: &Principal,
    mut req: DeleteGroupsRequest,
) -> Checked<DeleteGroupsRequest, DeleteGroupsResponse> {
    let c = check(ctx, p);
    if !c.on() {
        return Checked::pass(req);
    }
    let (ok, denied) = split(std::mem::take(&mut req.groups_names), |g| {
        c.group(Operation::Delete, g)
    });
    req.groups_names = ok;
    let merge = move |mut resp: DeleteGroupsResponse| {
        for g in denied {
            resp.results.push(
                delete_groups_response::DeletableGroupResult::default()
                    .with_group_id(g)
                    .with_error_code(GROUP_DENIED),
            );
        }
        resp
    };
    if req.groups_names.is_empty() {
        return Checked::refuse(merge);
    }
    Checked::partial(req, merge)
}

pub(crate) fn offset_delete(
    ctx: &Ctx,
    p: &Principal,
    mut req: OffsetDeleteRequest,
) -> Checked<OffsetDeleteRequest, OffsetDeleteResponse> {
    let c = check(ctx, p);
    if !c.on() {
        return Checked::pass(req);
    }
    if !c.group(Operation::Delete, &req.group_id) {
        return Checked::refuse(|resp: OffsetDeleteResponse| resp.with_error_code(GROUP_DENIED));
    }
    let (ok, denied) = split(std::mem::take(&mut req.topics), |t| {
        c.topic(Operation::Read, &t.name)
    });
    req.topics = ok;
    Checked::partial(req, move |mut resp: OffsetDeleteResponse| {
        for t in denied {
            resp.topics.push(
                offset_delete_response::OffsetDeleteResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|op| {
                                offset_delete_response::OffsetDeleteResponsePartition::default()
                                    .with_partition_index(op.partition_index)
                                    .with_error_code(TOPIC_DENIED)
                            })
                            .collect(),
                    ),
            );
        }
        resp
    })
}

/// A call that needs `op` on the cluster as a whole.
pub(crate) fn cluster<Req, Resp: 'static>(
    ctx: &Ctx,
    p: &Principal,
    req: Req,
    op: Operation,
    refuse: fn(Resp) -> Resp,
) -> Checked<Req, Resp> {
    let c = check(ctx, p);
    if !c.on() || c.cluster(op) {
        Checked::pass(req)
    } else {
        Checked::refuse(refuse)
    }
}

pub(crate) fn alter_user_scram(
    ctx: &Ctx,
    p: &Principal,
    req: AlterUserScramCredentialsRequest,
) -> Checked<AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse> {
    let c = check(ctx, p);
    if !c.on() || c.cluster(Operation::Alter) {
        return Checked::pass(req);
    }
    let mut users: Vec<StrBytes> = req
        .deletions
        .iter()
        .map(|d| d.name.clone())
        .chain(req.upsertions.iter().map(|u| u.name.clone()))
        .collect();
    users.sort();
    users.dedup();
    Checked::refuse(move |resp: AlterUserScramCredentialsResponse| {
        resp.with_results(
            users
                .into_iter()
                .map(|u| {
                    alter_user_scram_credentials_response::AlterUserScramCredentialsResult::default(
                    )
                    .with_user(u)
                    .with_error_code(CLUSTER_DENIED)
                })
                .collect(),
        )
    })
}

pub(crate) fn init_producer_id(
    ctx: &Ctx,
    p: &Principal,
    req: InitProducerIdRequest,
) -> Checked<InitProducerIdRequest, InitProducerIdResponse> {
    let c = check(ctx, p);
    if !c.on() {
        return Checked::pass(req);
    }
    if let Some(id) = &req.transactional_id {
        if c.ctx
            .acl
            .allows(p, Operation::Write, ResourceType::TransactionalId, id)
        {
            return Checked::pass(req);
        }
        return Checked::refuse(|resp: InitProducerIdResponse| {
            resp.with_error_code(TXN_DENIED)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
        });
    }
    if c.cluster(Operation::IdempotentWrite) || ctx.acl.may_write_some_topic(p) {
        return Checked::pass(req);
    }
    Checked::refuse(|resp: InitProducerIdResponse| {
        resp.with_error_code(CLUSTER_DENIED)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    })
}
