//! DescribeClientQuotas and AlterClientQuotas: client quotas in metadata (see
//! [`crate::quotas`]). Describing needs DescribeConfigs on the cluster, altering needs
//! AlterConfigs, as in Kafka.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_metadata::records::QuotaRecord;
use sluice_metadata::{Compare, SharedStore, Txn, TxnOp, keys};

use crate::acl::{CLUSTER, Operation, Principal, ResourceType};
use crate::quotas::{CLIENT_ID, CONSUMER_BYTE_RATE, Entity, PRODUCER_BYTE_RATE, USER};
use crate::server::Ctx;

/// How long an alteration waits to be in force on this gateway before it is answered.
const APPLIED_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// An entity of a request, or why it is not one this gateway keeps quotas for.
fn entity<'a>(
    components: impl Iterator<Item = (&'a str, Option<&'a str>)>,
) -> Result<Entity, String> {
    let mut e = Entity::default();
    for (entity_type, name) in components {
        let slot = match entity_type {
            USER => &mut e.user,
            CLIENT_ID => &mut e.client_id,
            "ip" => {
                return Err(
                    "ip quotas are not supported; limit connections with --max-connections-per-ip"
                        .into(),
                );
            }
            other => return Err(format!("unknown entity type {other}")),
        };
        if slot.is_some() {
            return Err(format!("entity type {entity_type} given twice"));
        }
        *slot = Some(name.map(str::to_string));
    }
    if e.user.is_none() && e.client_id.is_none() {
        return Err("an empty entity".into());
    }
    Ok(e)
}

/// Why a quota key cannot be set or removed.
fn check_key(key: &str) -> Result<(), String> {
    match key {
        PRODUCER_BYTE_RATE | CONSUMER_BYTE_RATE => Ok(()),
        "request_percentage" | "controller_mutation_rate" | "connection_creation_rate" => {
            Err(format!("quota {key} is not supported"))
        }
        other => Err(format!("unknown quota key {other}")),
    }
}

/// Why a quota value cannot be set: byte rates are whole bytes per second above 0.
fn check_value(key: &str, value: f64) -> Result<(), String> {
    check_key(key)?;
    if value.is_finite() && value > 0.0 && value.fract() == 0.0 {
        Ok(())
    } else {
        Err(format!(
            "{key} must be a whole number of bytes per second above 0"
        ))
    }
}

fn refused(ctx: &Ctx, p: &Principal, op: Operation) -> bool {
    !ctx.acl.allows(p, op, ResourceType::Cluster, CLUSTER)
}

pub async fn describe(
    ctx: &Ctx,
    req: DescribeClientQuotasRequest,
    _version: i16,
    p: &Principal,
) -> DescribeClientQuotasResponse {
    let fail = |e: ResponseError, why: &str| {
        DescribeClientQuotasResponse::default()
            .with_error_code(e.code())
            .with_error_message(Some(s(why)))
    };
    if refused(ctx, p, Operation::DescribeConfigs) {
        return fail(ResponseError::ClusterAuthorizationFailed, "not authorized");
    }
    // Each component: its type, and the name it must have (`Some(None)`: the default;
    // `None`: any).
    let mut filter: Vec<(&str, Option<Option<String>>)> = Vec::new();
    for c in &req.components {
        let t = c.entity_type.as_str();
        if !matches!(t, USER | CLIENT_ID) {
            return fail(
                ResponseError::InvalidRequest,
                &format!("unknown entity type {t}"),
            );
        }
        if filter.iter().any(|(f, _)| *f == t) {
            return fail(
                ResponseError::InvalidRequest,
                &format!("entity type {t} given twice"),
            );
        }
        let name = match (c.match_type, &c._match) {
            (0, Some(m)) => Some(Some(m.to_string())),
            (1, _) => Some(None),
            (2, _) => None,
            _ => {
                return fail(
                    ResponseError::InvalidRequest,
                    &format!("match type {} of {t} is not valid", c.match_type),
                );
            }
        };
        filter.push((t, name));
    }
    let stored = match ctx.store.range(keys::QUOTAS_PREFIX.as_bytes(), None).await {
        Ok(r) => r.kvs,
        Err(e) => return fail(ResponseError::UnknownServerError, &e.to_string()),
    };
    let mut entries = Vec::new();
    for kv in stored {
        let Ok(record) = QuotaRecord::decode(&kv.value) else {
            continue;
        };
        let Some(e) = Entity::from_record(&record) else {
            continue;
        };
        let components = e.components();
        let matches = filter.iter().all(|(t, want)| {
            components
                .iter()
                .any(|(ct, name)| ct == t && want.as_ref().is_none_or(|w| w.as_deref() == *name))
        });
        let extra = components
            .iter()
            .any(|(ct, _)| !filter.iter().any(|(t, _)| t == ct));
        if !matches || (req.strict && extra) {
            continue;
        }
        entries.push(
            describe_client_quotas_response::EntryData::default()
                .with_entity(
                    components
                        .iter()
                        .map(|(t, n)| {
                            describe_client_quotas_response::EntityData::default()
                                .with_entity_type(s(t))
                                .with_entity_name(n.map(s))
                        })
                        .collect(),
                )
                .with_values(
                    record
                        .values
                        .iter()
                        .map(|(k, v)| {
                            describe_client_quotas_response::ValueData::default()
                                .with_key(s(k))
                                .with_value(*v)
                        })
                        .collect(),
                ),
        );
    }
    DescribeClientQuotasResponse::default().with_entries(Some(entries))
}

pub async fn alter(
    ctx: &Ctx,
    req: AlterClientQuotasRequest,
    _version: i16,
    p: &Principal,
) -> AlterClientQuotasResponse {
    let denied = refused(ctx, p, Operation::AlterConfigs);
    let mut results = Vec::with_capacity(req.entries.len());
    for entry in &req.entries {
        let result = alter_client_quotas_response::EntryData::default().with_entity(
            entry
                .entity
                .iter()
                .map(|c| {
                    alter_client_quotas_response::EntityData::default()
                        .with_entity_type(c.entity_type.clone())
                        .with_entity_name(c.entity_name.clone())
                })
                .collect(),
        );
        let outcome = if denied {
            Err((
                ResponseError::ClusterAuthorizationFailed,
                "not authorized".into(),
            ))
        } else {
            alter_entry(&ctx.store, entry, req.validate_only).await
        };
        if let Ok(Some(revision)) = outcome {
            ctx.quotas.applied(revision, APPLIED_WAIT).await;
        }
        results.push(match outcome {
            Ok(_) => {
                if !req.validate_only {
                    tracing::info!(principal = %p.name, entity = ?entry.entity, "client quotas altered");
                }
                result
            }
            Err((e, why)) => result
                .with_error_code(e.code())
                .with_error_message(Some(s(&why))),
        });
    }
    AlterClientQuotasResponse::default().with_entries(results)
}

async fn alter_entry(
    store: &SharedStore,
    entry: &alter_client_quotas_request::EntryData,
    validate_only: bool,
) -> Result<Option<i64>, (ResponseError, String)> {
    let invalid = |why: String| (ResponseError::InvalidRequest, why);
    let e = entity(
        entry
            .entity
            .iter()
            .map(|c| (c.entity_type.as_str(), c.entity_name.as_deref())),
    )
    .map_err(invalid)?;
    let mut seen = Vec::new();
    for op in &entry.ops {
        let key = op.key.as_str();
        if seen.contains(&key) {
            return Err(invalid(format!("quota {key} given twice")));
        }
        seen.push(key);
        if op.remove {
            check_key(key).map_err(invalid)?;
        } else {
            check_value(key, op.value).map_err(invalid)?;
        }
    }
    if validate_only {
        return Ok(None);
    }
    let key = e.key();
    for _ in 0..5 {
        let current = store
            .get(key.as_bytes())
            .await
            .map_err(|err| (ResponseError::UnknownServerError, err.to_string()))?;
        let (mut values, compare) = match &current {
            Some(kv) => (
                QuotaRecord::decode(&kv.value)
                    .map(|r| r.values)
                    .unwrap_or_default(),
                Compare::mod_revision(key.clone(), kv.mod_revision),
            ),
            None => (BTreeMap::new(), Compare::absent(key.clone())),
        };
        for op in &entry.ops {
            if op.remove {
                values.remove(op.key.as_str());
            } else {
                values.insert(op.key.to_string(), op.value);
            }
        }
        let op = if values.is_empty() {
            TxnOp::delete(key.clone())
        } else {
            TxnOp::put(key.clone(), e.record(&values).encode())
        };
        let r = store
            .txn(Txn {
                compares: vec![compare],
                success: vec![op],
                failure: vec![],
            })
            .await
            .map_err(|err| (ResponseError::UnknownServerError, err.to_string()))?;
        if r.succeeded {
            return Ok(Some(r.revision));
        }
    }
    Err((
        ResponseError::UnknownServerError,
        "the entity's quotas changed concurrently; try again".into(),
    ))
}
