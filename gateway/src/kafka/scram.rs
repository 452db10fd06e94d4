//! DescribeUserScramCredentials and AlterUserScramCredentials (KIP-554): the user store
//! through Kafka's own admin APIs, answered as Kafka answers them.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::server::Ctx;
use crate::users::{self, Alteration, Mechanism, UserError};

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

fn infos(credentials: &[(Mechanism, u32)]) -> Vec<CredentialInfo> {
    credentials
        .iter()
        .map(|(m, i)| {
            CredentialInfo::default()
                .with_mechanism(m.code())
                .with_iterations(*i as i32)
        })
        .collect()
}

pub async fn describe(
    ctx: &Ctx,
    req: DescribeUserScramCredentialsRequest,
    _version: i16,
) -> DescribeUserScramCredentialsResponse {
    let resp = DescribeUserScramCredentialsResponse::default();
    // Null or empty: every user with credentials.
    let Some(names) = req.users.filter(|u| !u.is_empty()) else {
        return match users::list(&ctx.store).await {
            Ok(all) => resp.with_results(
                all.iter()
                    .map(|(name, c)| {
                        DescribeUserScramCredentialsResult::default()
                            .with_user(s(name.clone()))
                            .with_credential_infos(infos(c))
                    })
                    .collect(),
            ),
            Err(e) => resp
                .with_error_code(e.error().code())
                .with_error_message(Some(s(e.to_string()))),
        };
    };
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for n in &names {
        *count.entry(n.name.as_str()).or_default() += 1;
    }
    let mut results = Vec::new();
    for n in &names {
        let name = n.name.as_str();
        let out = DescribeUserScramCredentialsResult::default().with_user(n.name.clone());
        if count[name] > 1 {
            results.push(
                out.with_error_code(ResponseError::DuplicateResource.code())
                    .with_error_message(Some(s(format!("user {name} is named more than once")))),
            );
            continue;
        }
        results.push(match users::describe(&ctx.store, name).await {
            Ok(Some(c)) => out.with_credential_infos(infos(&c)),
            Ok(None) => out
                .with_error_code(ResponseError::ResourceNotFound.code())
                .with_error_message(Some(s(format!("user {name} has no credentials")))),
            Err(e) => out
                .with_error_code(e.error().code())
                .with_error_message(Some(s(e.to_string()))),
        });
    }
    resp.with_results(results)
}

pub async fn alter(
    ctx: &Ctx,
    req: AlterUserScramCredentialsRequest,
    _version: i16,
) -> AlterUserScramCredentialsResponse {
    // One result per user: its alterations apply together or not at all.
    let mut by_user: BTreeMap<String, Vec<Alteration>> = BTreeMap::new();
    for d in &req.deletions {
        by_user
            .entry(d.name.to_string())
            .or_default()
            .push(Alteration::Delete(d.mechanism));
    }
    for u in &req.upsertions {
        by_user
            .entry(u.name.to_string())
            .or_default()
            .push(Alteration::Upsert {
                mechanism: u.mechanism,
                iterations: u.iterations,
                salt: u.salt.to_vec(),
                salted_password: u.salted_password.to_vec(),
            });
    }
    let mut results = Vec::new();
    for (name, alterations) in by_user {
        let out = AlterUserScramCredentialsResult::default().with_user(s(name.clone()));
        results.push(match users::alter(&ctx.store, &name, &alterations).await {
            Ok(()) => {
                tracing::info!(user = %name, changes = alterations.len(), "user credentials altered");
                out
            }
            Err(e) => {
                if matches!(e, UserError::Metadata(_)) {
                    tracing::warn!(user = %name, error = %e, "altering user credentials failed");
                }
                out.with_error_code(e.error().code())
                    .with_error_message(Some(s(e.to_string())))
            }
        });
    }
    AlterUserScramCredentialsResponse::default().with_results(results)
}
