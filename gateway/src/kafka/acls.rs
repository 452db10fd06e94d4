//! CreateAcls, DescribeAcls and DeleteAcls: ACL bindings in metadata (see [`crate::acl`]).
//! Creating and deleting need Alter on the cluster, describing needs Describe, as in Kafka;
//! without `--authorizer acl` they answer SECURITY_DISABLED, as Kafka without an authorizer.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_metadata::keys;
use sluice_metadata::records::AclRecord;
use sluice_metadata::{MetaStoreExt, Txn, TxnOp};

use crate::acl::{
    Binding, CLUSTER, Filter, Operation, PatternFilter, PatternType, Permission, Principal,
    ResourceType,
};
use crate::server::Ctx;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// Why a request about ACLs is not served as a whole.
fn refused(ctx: &Ctx, p: &Principal, op: Operation) -> Option<(ResponseError, &'static str)> {
    if !ctx.acl.enabled() {
        return Some((
            ResponseError::SecurityDisabled,
            "no authorizer is configured (--authorizer acl)",
        ));
    }
    if !ctx.acl.allows(p, op, ResourceType::Cluster, CLUSTER) {
        return Some((ResponseError::ClusterAuthorizationFailed, "not authorized"));
    }
    None
}

/// A binding to create, or why it cannot be.
fn creation(c: &create_acls_request::AclCreation) -> Result<Binding, String> {
    let resource_type = ResourceType::from_code(c.resource_type)
        .ok_or_else(|| format!("resource type {} is not supported", c.resource_type))?;
    let pattern = PatternType::from_code(c.resource_pattern_type)
        .ok_or_else(|| format!("pattern type {} cannot be stored", c.resource_pattern_type))?;
    let operation = Operation::from_code(c.operation)
        .ok_or_else(|| format!("operation {} is not supported", c.operation))?;
    let permission = Permission::from_code(c.permission_type)
        .ok_or_else(|| format!("permission type {} cannot be stored", c.permission_type))?;
    let principal = c.principal.to_string();
    if !principal.starts_with("User:") || principal.len() == 5 {
        return Err(format!("principal {principal}: expected User:NAME"));
    }
    let host = c.host.to_string();
    if host != "*" && host.parse::<std::net::IpAddr>().is_err() {
        return Err(format!("host {host}: expected * or an address"));
    }
    let resource_name = c.resource_name.to_string();
    if resource_name.is_empty() {
        return Err("empty resource name".into());
    }
    if resource_type == ResourceType::Cluster && resource_name != CLUSTER {
        return Err(format!("the cluster resource is named {CLUSTER}"));
    }
    if pattern == PatternType::Prefixed && resource_name == "*" {
        return Err("a PREFIXED pattern cannot be *".into());
    }
    Ok(Binding {
        resource_type,
        resource_name,
        pattern,
        principal,
        host,
        operation,
        permission,
    })
}

pub async fn create_acls(
    ctx: &Ctx,
    req: CreateAclsRequest,
    _version: i16,
    p: &Principal,
) -> CreateAclsResponse {
    let refusal = refused(ctx, p, Operation::Alter);
    let mut results = Vec::with_capacity(req.creations.len());
    for c in &req.creations {
        let r = AclCreationResult::default();
        if let Some((e, why)) = refusal {
            results.push(r.with_error_code(e.code()).with_error_message(Some(s(why))));
            continue;
        }
        let binding = match creation(c) {
            Ok(b) => b,
            Err(why) => {
                results.push(
                    r.with_error_code(ResponseError::InvalidRequest.code())
                        .with_error_message(Some(s(&why))),
                );
                continue;
            }
        };
        match ctx
            .store
            .put(binding.key(), binding.record().encode())
            .await
        {
            Ok(_) => {
                tracing::info!(principal = %p.name, acl = ?binding, "ACL created");
                results.push(r);
            }
            Err(e) => results.push(
                r.with_error_code(ResponseError::UnknownServerError.code())
                    .with_error_message(Some(s(&e.to_string()))),
            ),
        }
    }
    CreateAclsResponse::default().with_results(results)
}

/// A DescribeAcls or DeleteAcls filter, or why it matches nothing it could.
fn filter(
    resource_type: i8,
    name: Option<&StrBytes>,
    pattern: i8,
    principal: Option<&StrBytes>,
    host: Option<&StrBytes>,
    operation: i8,
    permission: i8,
) -> Result<Filter, String> {
    // 1 is ANY in every field.
    let resource_type = match resource_type {
        1 => None,
        code => Some(ResourceType::from_code(code).ok_or_else(|| format!("resource type {code}"))?),
    };
    let pattern = match pattern {
        1 => PatternFilter::Any,
        2 => PatternFilter::Match,
        code => PatternFilter::Exactly(
            PatternType::from_code(code).ok_or_else(|| format!("pattern type {code}"))?,
        ),
    };
    let operation = match operation {
        1 => None,
        code => Some(Operation::from_code(code).ok_or_else(|| format!("operation {code}"))?),
    };
    let permission = match permission {
        1 => None,
        code => Some(Permission::from_code(code).ok_or_else(|| format!("permission {code}"))?),
    };
    Ok(Filter {
        resource_type,
        resource_name: name.map(|n| n.to_string()),
        pattern,
        principal: principal.map(|p| p.to_string()),
        host: host.map(|h| h.to_string()),
        operation,
        permission,
    })
}

/// Every stored binding with its key, read from metadata (not this gateway's copy, so a
/// binding made a moment ago through another gateway is seen).
async fn stored(ctx: &Ctx) -> Result<Vec<(String, Binding)>, String> {
    let kvs = ctx
        .store
        .range(keys::ACLS_PREFIX.as_bytes(), None)
        .await
        .map_err(|e| e.to_string())?;
    Ok(kvs
        .kvs
        .iter()
        .filter_map(|kv| {
            let b = Binding::from_record(&AclRecord::decode(&kv.value).ok()?)?;
            Some((String::from_utf8_lossy(&kv.key).into_owned(), b))
        })
        .collect())
}

pub async fn describe_acls(
    ctx: &Ctx,
    req: DescribeAclsRequest,
    _version: i16,
    p: &Principal,
) -> DescribeAclsResponse {
    let resp = DescribeAclsResponse::default();
    if let Some((e, why)) = refused(ctx, p, Operation::Describe) {
        return resp
            .with_error_code(e.code())
            .with_error_message(Some(s(why)));
    }
    let f = match filter(
        req.resource_type_filter,
        req.resource_name_filter.as_ref(),
        req.pattern_type_filter,
        req.principal_filter.as_ref(),
        req.host_filter.as_ref(),
        req.operation,
        req.permission_type,
    ) {
        Ok(f) => f,
        Err(why) => {
            return resp
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_error_message(Some(s(&why)));
        }
    };
    let all = match stored(ctx).await {
        Ok(a) => a,
        Err(e) => {
            return resp
                .with_error_code(ResponseError::UnknownServerError.code())
                .with_error_message(Some(s(&e)));
        }
    };
    let mut by_resource: std::collections::BTreeMap<(i8, String, i8), Vec<AclDescription>> =
        Default::default();
    for (_, b) in all.into_iter().filter(|(_, b)| f.matches(b)) {
        by_resource
            .entry((
                b.resource_type.code(),
                b.resource_name.clone(),
                b.pattern.code(),
            ))
            .or_default()
            .push(
                AclDescription::default()
                    .with_principal(s(&b.principal))
                    .with_host(s(&b.host))
                    .with_operation(b.operation.code())
                    .with_permission_type(b.permission.code()),
            );
    }
    resp.with_resources(
        by_resource
            .into_iter()
            .map(|((rt, name, pattern), acls)| {
                DescribeAclsResource::default()
                    .with_resource_type(rt)
                    .with_resource_name(s(&name))
                    .with_pattern_type(pattern)
                    .with_acls(acls)
            })
            .collect(),
    )
}

pub async fn delete_acls(
    ctx: &Ctx,
    req: DeleteAclsRequest,
    _version: i16,
    p: &Principal,
) -> DeleteAclsResponse {
    let refusal = refused(ctx, p, Operation::Alter);
    let all = match refusal {
        Some(_) => Ok(Vec::new()),
        None => stored(ctx).await,
    };
    let mut results = Vec::with_capacity(req.filters.len());
    for f in &req.filters {
        results.push(delete_one(ctx, f, refusal, &all, p).await);
    }
    DeleteAclsResponse::default().with_filter_results(results)
}

async fn delete_one(
    ctx: &Ctx,
    f: &DeleteAclsFilter,
    refusal: Option<(ResponseError, &'static str)>,
    all: &Result<Vec<(String, Binding)>, String>,
    p: &Principal,
) -> DeleteAclsFilterResult {
    let r = DeleteAclsFilterResult::default();
    if let Some((e, why)) = refusal {
        return r.with_error_code(e.code()).with_error_message(Some(s(why)));
    }
    let all = match all {
        Ok(a) => a,
        Err(e) => {
            return r
                .with_error_code(ResponseError::UnknownServerError.code())
                .with_error_message(Some(s(e)));
        }
    };
    let filter = match filter(
        f.resource_type_filter,
        f.resource_name_filter.as_ref(),
        f.pattern_type_filter,
        f.principal_filter.as_ref(),
        f.host_filter.as_ref(),
        f.operation,
        f.permission_type,
    ) {
        Ok(f) => f,
        Err(why) => {
            return r
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_error_message(Some(s(&why)));
        }
    };
    let doomed: Vec<&(String, Binding)> = all.iter().filter(|(_, b)| filter.matches(b)).collect();
    if doomed.is_empty() {
        return r;
    }
    let deleted = ctx
        .store
        .txn(Txn {
            success: doomed
                .iter()
                .map(|(key, _)| TxnOp::Delete {
                    key: key.clone().into(),
                })
                .collect(),
            ..Txn::default()
        })
        .await;
    let error = deleted.err().map(|e| e.to_string());
    let matching = doomed
        .iter()
        .map(|(_, b)| {
            if error.is_none() {
                tracing::info!(principal = %p.name, acl = ?b, "ACL deleted");
            }
            let m = DeleteAclsMatchingAcl::default()
                .with_resource_type(b.resource_type.code())
                .with_resource_name(s(&b.resource_name))
                .with_pattern_type(b.pattern.code())
                .with_principal(s(&b.principal))
                .with_host(s(&b.host))
                .with_operation(b.operation.code())
                .with_permission_type(b.permission.code());
            match &error {
                None => m,
                Some(e) => m
                    .with_error_code(ResponseError::UnknownServerError.code())
                    .with_error_message(Some(s(e))),
            }
        })
        .collect();
    r.with_matching_acls(matching)
}
