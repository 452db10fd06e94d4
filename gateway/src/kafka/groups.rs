//! The consumer group APIs. Every request but FindCoordinator and ListGroups must reach the
//! group's coordinator; elsewhere it gets NOT_COORDINATOR and the client finds it again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Buf;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator as FoundCoordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_metadata::keys;
use sluice_metadata::records::{GroupRecord, OffsetRecord};
use tokio::time::Instant;

use super::now_ms;
use crate::groups::group::{JoinArgs, JoinResult, Reply, State, SyncResult};
use crate::groups::{GroupError, SharedGroup};
use crate::server::Ctx;

/// Kafka's `offset.metadata.max.bytes`.
const MAX_OFFSET_METADATA: usize = 4096;

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

fn group_error(e: &GroupError) -> ResponseError {
    match e {
        GroupError::NotCoordinator => ResponseError::NotCoordinator,
        GroupError::Metadata(_) => ResponseError::CoordinatorNotAvailable,
    }
}

async fn coordinated(ctx: &Ctx, group: &str) -> Result<SharedGroup, ResponseError> {
    if group.is_empty() {
        return Err(ResponseError::InvalidGroupId);
    }
    ctx.groups.group(group).await.map_err(|e| group_error(&e))
}

/// Who sent a request, for DescribeGroups.
pub struct Caller {
    pub client_id: String,
    pub host: String,
}

/// The gateway a new group of a client in `zone` is claimed for: one of that zone (the
/// same for every member, by rendezvous hashing on the group id), unless this gateway is
/// in it or none is live there.
fn zone_coordinator(
    ctx: &Ctx,
    zone: Option<&str>,
    group: &str,
) -> Option<(crate::groups::Node, sluice_metadata::LeaseId)> {
    let zone = zone?;
    if ctx.cluster.me().zone.as_deref() == Some(zone) {
        return None;
    }
    let local = crate::cluster::zone_members(&ctx.cluster.nodes(), zone);
    let id = crate::cluster::chosen_for(&local, group.as_bytes())?.id;
    ctx.cluster.with_lease(id)
}

pub async fn find_coordinator(
    ctx: &Ctx,
    req: FindCoordinatorRequest,
    version: i16,
    asker: &super::Asker<'_>,
) -> FindCoordinatorResponse {
    let keys: Vec<String> = if version >= 4 {
        req.coordinator_keys.iter().map(|k| k.to_string()).collect()
    } else {
        vec![req.key.to_string()]
    };
    let mut found = Vec::new();
    for key in keys {
        let out = FoundCoordinator::default().with_key(s(key.clone()));
        let r = if req.key_type == 1 {
            // Transactions are not supported.
            Err(ResponseError::TransactionalIdAuthorizationFailed)
        } else if req.key_type != 0 {
            Err(ResponseError::InvalidRequest)
        } else if key.is_empty() {
            Err(ResponseError::InvalidGroupId)
        } else {
            let prefer = zone_coordinator(ctx, asker.zone, &key);
            ctx.groups.find(&key, prefer).await.map_err(|e| {
                tracing::warn!(group = key, error = %e, "finding a coordinator failed");
                group_error(&e)
            })
        };
        // The coordinator at the address of the client's listener.
        let r = r.map(|n| {
            asker
                .nodes(ctx)
                .into_iter()
                .find(|m| m.id == n.id)
                .unwrap_or(n)
        });
        found.push(match r {
            Ok(n) => out
                .with_node_id(BrokerId(n.id))
                .with_host(s(n.host))
                .with_port(i32::from(n.port)),
            Err(e) => out
                .with_error_code(e.code())
                .with_node_id(BrokerId(-1))
                .with_port(-1),
        });
    }
    if version >= 4 {
        return FindCoordinatorResponse::default().with_coordinators(found);
    }
    let c = found.remove(0);
    let resp = FindCoordinatorResponse::default()
        .with_error_code(c.error_code)
        .with_node_id(c.node_id)
        .with_host(c.host)
        .with_port(c.port);
    if version >= 1 {
        resp.with_error_message(c.error_message)
    } else {
        resp
    }
}

fn join_response(r: JoinResult, version: i16) -> JoinGroupResponse {
    let members = r
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            let m = JoinGroupResponseMember::default()
                .with_member_id(s(id))
                .with_metadata(metadata);
            if version >= 5 {
                m.with_group_instance_id(instance.map(s))
            } else {
                m
            }
        })
        .collect();
    let resp = JoinGroupResponse::default()
        .with_error_code(r.error.map_or(0, |e| e.code()))
        .with_generation_id(r.generation)
        .with_leader(s(r.leader))
        .with_member_id(s(r.member_id))
        .with_members(members);
    if version >= 7 {
        resp.with_protocol_type(r.protocol_type.map(s))
            .with_protocol_name(r.protocol.map(s))
    } else {
        resp.with_protocol_name(Some(s(r.protocol.unwrap_or_default())))
    }
}

fn join_error(e: ResponseError, member_id: String, version: i16) -> JoinGroupResponse {
    join_response(
        JoinResult {
            error: Some(e),
            generation: -1,
            protocol_type: None,
            protocol: None,
            leader: String::new(),
            member_id,
            members: Vec::new(),
        },
        version,
    )
}

pub async fn join_group(
    ctx: &Ctx,
    req: JoinGroupRequest,
    version: i16,
    caller: &Caller,
) -> JoinGroupResponse {
    let g = match coordinated(ctx, &req.group_id.0).await {
        Ok(g) => g,
        Err(e) => return join_error(e, req.member_id.to_string(), version),
    };
    let session = Duration::from_millis(req.session_timeout_ms.max(0) as u64);
    let rebalance = if version >= 1 {
        Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64)
    } else {
        session
    };
    let args = JoinArgs {
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|i| i.to_string()),
        client_id: caller.client_id.clone(),
        client_host: caller.host.clone(),
        session_timeout: session,
        rebalance_timeout: rebalance,
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let reply = {
        let mut g = g.lock().await;
        let reply = g.join(args, &ctx.groups.limits, Instant::now());
        if let Err(e) = ctx.groups.persist(&mut g).await {
            return join_error(group_error(&e), req.member_id.to_string(), version);
        }
        reply
    };
    let result = match reply {
        Reply::Now(r) => r,
        // The group's ticker completes the join by the rebalance deadline at the latest.
        Reply::Later(rx) => {
            match tokio::time::timeout(rebalance + Duration::from_secs(10), rx).await {
                Ok(Ok(r)) => r,
                _ => {
                    return join_error(
                        ResponseError::RebalanceInProgress,
                        req.member_id.to_string(),
                        version,
                    );
                }
            }
        }
    };
    join_response(result, version)
}

fn sync_response(r: SyncResult, version: i16) -> SyncGroupResponse {
    let resp = SyncGroupResponse::default()
        .with_error_code(r.error.map_or(0, |e| e.code()))
        .with_assignment(r.assignment);
    if version >= 5 {
        resp.with_protocol_type(r.protocol_type.map(s))
            .with_protocol_name(r.protocol.map(s))
    } else {
        resp
    }
}

pub async fn sync_group(ctx: &Ctx, req: SyncGroupRequest, version: i16) -> SyncGroupResponse {
    let error = |e: ResponseError| SyncGroupResponse::default().with_error_code(e.code());
    let g = match coordinated(ctx, &req.group_id.0).await {
        Ok(g) => g,
        Err(e) => return error(e),
    };
    let assignments = req
        .assignments
        .iter()
        .map(|a| (a.member_id.to_string(), a.assignment.clone()))
        .collect();
    let reply = {
        let mut g = g.lock().await;
        if let (Some(t), Some(p)) = (&req.protocol_type, &g.protocol_type)
            && t.as_str() != p
        {
            return error(ResponseError::InconsistentGroupProtocol);
        }
        let reply = g.sync(
            &req.member_id,
            req.group_instance_id.as_deref(),
            req.generation_id,
            assignments,
            Instant::now(),
        );
        if let Err(e) = ctx.groups.persist(&mut g).await {
            return error(group_error(&e));
        }
        reply
    };
    match reply {
        Reply::Now(r) => sync_response(r, version),
        Reply::Later(rx) => match tokio::time::timeout(Duration::from_secs(300), rx).await {
            Ok(Ok(r)) => sync_response(r, version),
            _ => error(ResponseError::RebalanceInProgress),
        },
    }
}

pub async fn heartbeat(ctx: &Ctx, req: HeartbeatRequest, _version: i16) -> HeartbeatResponse {
    let code = match coordinated(ctx, &req.group_id.0).await {
        Err(e) => Some(e),
        Ok(g) => g.lock().await.heartbeat(
            &req.member_id,
            req.group_instance_id.as_deref(),
            req.generation_id,
            Instant::now(),
        ),
    };
    HeartbeatResponse::default().with_error_code(code.map_or(0, |e| e.code()))
}

pub async fn leave_group(ctx: &Ctx, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let leaving: Vec<(String, Option<String>)> = if version >= 3 {
        req.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|i| i.to_string()),
                )
            })
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let g = match coordinated(ctx, &req.group_id.0).await {
        Ok(g) => g,
        Err(e) => return LeaveGroupResponse::default().with_error_code(e.code()),
    };
    let mut g = g.lock().await;
    let now = Instant::now();
    let results: Vec<(String, Option<String>, Option<ResponseError>)> = leaving
        .into_iter()
        .map(|(id, instance)| {
            let e = g.leave(&id, instance.as_deref(), &ctx.groups.limits, now);
            (id, instance, e)
        })
        .collect();
    if let Err(e) = ctx.groups.persist(&mut g).await {
        return LeaveGroupResponse::default().with_error_code(group_error(&e).code());
    }
    if version >= 3 {
        LeaveGroupResponse::default().with_members(
            results
                .into_iter()
                .map(|(id, instance, e)| {
                    MemberResponse::default()
                        .with_member_id(s(id))
                        .with_group_instance_id(instance.map(s))
                        .with_error_code(e.map_or(0, |e| e.code()))
                })
                .collect(),
        )
    } else {
        LeaveGroupResponse::default().with_error_code(results[0].2.map_or(0, |e| e.code()))
    }
}

pub async fn offset_commit(
    ctx: &Ctx,
    req: OffsetCommitRequest,
    version: i16,
) -> OffsetCommitResponse {
    let group_check = coordinated(ctx, &req.group_id.0).await;
    let respond = |per_partition: &dyn Fn(&str, i32) -> Option<ResponseError>| {
        OffsetCommitResponse::default().with_topics(
            req.topics
                .iter()
                .map(|t| {
                    OffsetCommitResponseTopic::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    OffsetCommitResponsePartition::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(
                                            per_partition(&t.name.0, p.partition_index)
                                                .map_or(0, |e| e.code()),
                                        )
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
    };
    let g = match group_check {
        Ok(g) => g,
        Err(e) => return respond(&|_, _| Some(e)),
    };
    let mut g = g.lock().await;
    let instance = if version >= 7 {
        req.group_instance_id.as_deref()
    } else {
        None
    };
    if let Some(e) = g.check_commit(&req.member_id, instance, req.generation_id_or_member_epoch) {
        return respond(&|_, _| Some(e));
    }
    let mut errors: BTreeMap<(String, i32), ResponseError> = BTreeMap::new();
    let mut touched = BTreeSet::new();
    let now = now_ms();
    for t in &req.topics {
        let partitions = ctx
            .log
            .read(|st| st.topic(&t.name.0).map(|t| t.partitions.len()));
        for p in &t.partitions {
            let valid = partitions
                .is_some_and(|n| p.partition_index >= 0 && (p.partition_index as usize) < n);
            if !valid {
                errors.insert(
                    (t.name.0.to_string(), p.partition_index),
                    ResponseError::UnknownTopicOrPartition,
                );
                continue;
            }
            if p.committed_metadata
                .as_ref()
                .is_some_and(|m| m.len() > MAX_OFFSET_METADATA)
            {
                errors.insert(
                    (t.name.0.to_string(), p.partition_index),
                    ResponseError::OffsetMetadataTooLarge,
                );
                continue;
            }
            g.offsets.entry(t.name.0.to_string()).or_default().insert(
                p.partition_index,
                OffsetRecord {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                    commit_timestamp: now,
                },
            );
            touched.insert(t.name.0.to_string());
        }
    }
    if let Err(e) = ctx.groups.persist_offsets(&g, touched.iter()).await {
        let e = group_error(&e);
        return respond(&|_, _| Some(e));
    }
    respond(&|t, p| errors.get(&(t.to_string(), p)).copied())
}

/// `(topic, partitions)` a fetch asks for; `None`: everything the group committed.
type Wanted = Option<Vec<(String, Vec<i32>)>>;
/// Per topic, each partition's committed offset (offset -1 where there is none).
type Committed = Vec<(String, Vec<(i32, OffsetRecord)>)>;

/// What OffsetFetch answers for a partition without a committed offset.
fn no_offset() -> OffsetRecord {
    OffsetRecord {
        offset: -1,
        leader_epoch: -1,
        metadata: Some(String::new()),
        commit_timestamp: -1,
    }
}

fn committed(g: &crate::groups::group::Group, wanted: Wanted) -> Committed {
    match wanted {
        None => g
            .offsets
            .iter()
            .map(|(t, ps)| (t.clone(), ps.iter().map(|(p, o)| (*p, o.clone())).collect()))
            .collect(),
        Some(list) => list
            .into_iter()
            .map(|(t, ps)| {
                let have = g.offsets.get(&t);
                let parts = ps
                    .into_iter()
                    .map(|p| {
                        (
                            p,
                            have.and_then(|h| h.get(&p))
                                .cloned()
                                .unwrap_or_else(no_offset),
                        )
                    })
                    .collect();
                (t, parts)
            })
            .collect(),
    }
}

pub async fn offset_fetch(ctx: &Ctx, req: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    if version >= 8 {
        let mut groups = Vec::new();
        for rg in &req.groups {
            let out = OffsetFetchResponseGroup::default().with_group_id(rg.group_id.clone());
            let g = match coordinated(ctx, &rg.group_id.0).await {
                Ok(g) => g,
                Err(e) => {
                    groups.push(out.with_error_code(e.code()));
                    continue;
                }
            };
            let wanted = rg.topics.as_ref().map(|ts| {
                ts.iter()
                    .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                    .collect()
            });
            let list = committed(&*g.lock().await, wanted);
            groups.push(
                out.with_topics(
                    list.into_iter()
                        .map(|(t, ps)| {
                            OffsetFetchResponseTopics::default()
                                .with_name(TopicName(s(t)))
                                .with_partitions(
                                    ps.into_iter()
                                        .map(|(p, o)| {
                                            OffsetFetchResponsePartitions::default()
                                                .with_partition_index(p)
                                                .with_committed_offset(o.offset)
                                                .with_committed_leader_epoch(o.leader_epoch)
                                                .with_metadata(Some(s(o
                                                    .metadata
                                                    .unwrap_or_default())))
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                ),
            );
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let g = match coordinated(ctx, &req.group_id.0).await {
        Ok(g) => g,
        Err(e) => return OffsetFetchResponse::default().with_error_code(e.code()),
    };
    let wanted = req.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let list = committed(&*g.lock().await, wanted);
    OffsetFetchResponse::default().with_topics(
        list.into_iter()
            .map(|(t, ps)| {
                OffsetFetchResponseTopic::default()
                    .with_name(TopicName(s(t)))
                    .with_partitions(
                        ps.into_iter()
                            .map(|(p, o)| {
                                let out = OffsetFetchResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(o.offset)
                                    .with_metadata(Some(s(o.metadata.unwrap_or_default())));
                                if version >= 5 {
                                    out.with_committed_leader_epoch(o.leader_epoch)
                                } else {
                                    out
                                }
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

pub async fn list_groups(ctx: &Ctx, req: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    // Every group in the cluster: persisted state, groups that only hold offsets, and the
    // live state of the groups this gateway coordinates.
    let mut found: BTreeMap<String, (String, String)> = BTreeMap::new();
    match ctx.store.range(keys::GROUPS_PREFIX.as_bytes(), None).await {
        Ok(r) => {
            for kv in r.kvs {
                let key =
                    String::from_utf8_lossy(&kv.key[keys::GROUPS_PREFIX.len()..]).into_owned();
                let Some((group, rest)) = key.split_once('/') else {
                    continue;
                };
                let group = keys::unescape_group(group);
                if rest == "state" {
                    if let Ok(r) = GroupRecord::decode(&kv.value) {
                        found.insert(group, (r.protocol_type.unwrap_or_default(), r.state));
                    }
                } else if rest.starts_with("offsets/") {
                    found
                        .entry(group)
                        .or_insert_with(|| (String::new(), "Empty".into()));
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "listing groups failed");
            return ListGroupsResponse::default()
                .with_error_code(ResponseError::CoordinatorNotAvailable.code());
        }
    }
    for g in ctx.groups.local_groups() {
        let g = g.lock().await;
        if g.exists() {
            found.insert(
                g.id.clone(),
                (
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state.name().into(),
                ),
            );
        }
    }
    let states: Vec<String> = req
        .states_filter
        .iter()
        .map(|f| f.to_ascii_lowercase())
        .collect();
    // v5: every group here is a classic one (the consumer protocol of KIP-848 is not
    // served).
    let types: Vec<String> = req
        .types_filter
        .iter()
        .map(|f| f.to_ascii_lowercase())
        .collect();
    if !types.is_empty() && !types.iter().any(|t| t == "classic") {
        return ListGroupsResponse::default();
    }
    ListGroupsResponse::default().with_groups(
        found
            .into_iter()
            .filter(|(_, (_, state))| {
                states.is_empty() || states.contains(&state.to_ascii_lowercase())
            })
            .map(|(id, (protocol_type, state))| {
                let g = ListedGroup::default()
                    .with_group_id(GroupId(s(id)))
                    .with_protocol_type(s(protocol_type));
                let g = if version >= 4 {
                    g.with_group_state(s(state))
                } else {
                    g
                };
                if version >= 5 {
                    g.with_group_type(s("classic"))
                } else {
                    g
                }
            })
            .collect(),
    )
}

pub async fn describe_groups(
    ctx: &Ctx,
    req: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let mut out = Vec::new();
    for id in &req.groups {
        let d = DescribedGroup::default().with_group_id(id.clone());
        let g = match coordinated(ctx, &id.0).await {
            Ok(g) => g,
            Err(e) => {
                out.push(d.with_error_code(e.code()));
                continue;
            }
        };
        let g = g.lock().await;
        let state = if g.exists() { g.state.name() } else { "Dead" };
        let protocol = g.protocol.clone().unwrap_or_default();
        let members = g
            .members
            .values()
            .map(|m| {
                let dm = DescribedGroupMember::default()
                    .with_member_id(s(m.id.clone()))
                    .with_client_id(s(m.client_id.clone()))
                    .with_client_host(s(m.client_host.clone()))
                    .with_member_metadata(m.metadata_for(&protocol))
                    .with_member_assignment(m.assignment.clone());
                if version >= 4 {
                    dm.with_group_instance_id(m.instance_id.clone().map(s))
                } else {
                    dm
                }
            })
            .collect();
        out.push(
            d.with_authorized_operations(super::authorized::group(
                version >= 3 && req.include_authorized_operations,
            ))
            .with_group_state(s(state))
            .with_protocol_type(s(g.protocol_type.clone().unwrap_or_default()))
            .with_protocol_data(s(
                if g.state == State::Stable || g.state == State::CompletingRebalance {
                    protocol
                } else {
                    String::new()
                },
            ))
            .with_members(members),
        );
    }
    DescribeGroupsResponse::default().with_groups(out)
}

pub async fn delete_groups(
    ctx: &Ctx,
    req: DeleteGroupsRequest,
    _version: i16,
) -> DeleteGroupsResponse {
    let mut results = Vec::new();
    for id in &req.groups_names {
        let r = DeletableGroupResult::default().with_group_id(id.clone());
        let code = match coordinated(ctx, &id.0).await {
            Err(e) => Some(e),
            Ok(g) => {
                let g = g.lock().await;
                if !g.exists() {
                    Some(ResponseError::GroupIdNotFound)
                } else if !g.members.is_empty() {
                    Some(ResponseError::NonEmptyGroup)
                } else {
                    drop(g);
                    ctx.groups
                        .delete(&id.0)
                        .await
                        .err()
                        .map(|e| group_error(&e))
                }
            }
        };
        results.push(r.with_error_code(code.map_or(0, |e| e.code())));
    }
    DeleteGroupsResponse::default().with_results(results)
}

/// Topics a consumer protocol subscription names (ConsumerProtocolSubscription: a version,
/// then an array of topic names; what follows is not needed here).
fn subscribed_topics(mut metadata: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    if metadata.remaining() < 6 {
        return out;
    }
    let _version = metadata.get_i16();
    let n = metadata.get_i32();
    for _ in 0..n.max(0) {
        if metadata.remaining() < 2 {
            break;
        }
        let len = metadata.get_i16().max(0) as usize;
        if metadata.remaining() < len {
            break;
        }
        out.push(String::from_utf8_lossy(&metadata[..len]).into_owned());
        metadata.advance(len);
    }
    out
}

pub async fn offset_delete(
    ctx: &Ctx,
    req: OffsetDeleteRequest,
    _version: i16,
) -> OffsetDeleteResponse {
    let g = match coordinated(ctx, &req.group_id.0).await {
        Ok(g) => g,
        Err(e) => return OffsetDeleteResponse::default().with_error_code(e.code()),
    };
    let mut g = g.lock().await;
    if !g.exists() {
        return OffsetDeleteResponse::default()
            .with_error_code(ResponseError::GroupIdNotFound.code());
    }
    let protocol = g.protocol.clone().unwrap_or_default();
    let subscribed: BTreeSet<String> = if g.protocol_type.as_deref() == Some("consumer") {
        g.members
            .values()
            .flat_map(|m| subscribed_topics(&m.metadata_for(&protocol)))
            .collect()
    } else {
        BTreeSet::new()
    };
    let mut topics = Vec::new();
    let mut touched = BTreeSet::new();
    for t in &req.topics {
        let name = t.name.0.to_string();
        let busy = subscribed.contains(&name);
        let partitions = t
            .partitions
            .iter()
            .map(|p| {
                let code = if busy {
                    Some(ResponseError::GroupSubscribedToTopic)
                } else {
                    if let Some(ps) = g.offsets.get_mut(&name) {
                        ps.remove(&p.partition_index);
                    }
                    touched.insert(name.clone());
                    None
                };
                OffsetDeleteResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(code.map_or(0, |e| e.code()))
            })
            .collect();
        topics.push(
            OffsetDeleteResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions),
        );
    }
    if let Err(e) = ctx.groups.persist_offsets(&g, touched.iter()).await {
        return OffsetDeleteResponse::default().with_error_code(group_error(&e).code());
    }
    g.offsets.retain(|_, ps| !ps.is_empty());
    OffsetDeleteResponse::default().with_topics(topics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_subscribed_topics() {
        let mut b = Vec::new();
        b.extend_from_slice(&1i16.to_be_bytes());
        b.extend_from_slice(&2i32.to_be_bytes());
        for t in ["a", "bb"] {
            b.extend_from_slice(&(t.len() as i16).to_be_bytes());
            b.extend_from_slice(t.as_bytes());
        }
        b.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(
            subscribed_topics(&b),
            vec!["a".to_string(), "bb".to_string()]
        );
        assert!(subscribed_topics(&[0, 1]).is_empty());
    }
}
