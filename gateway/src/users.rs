//! The user store: SCRAM credentials (RFC 5802, 7677) in metadata under `users/<name>`,
//! one for Kafka SASL and MQTT. Only what verifies a password is kept (salt, iterations,
//! StoredKey, ServerKey), never the password or the salted password. Managed with Kafka's
//! DescribeUserScramCredentials and AlterUserScramCredentials, as Kafka manages them.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use sluice_metadata::records::{ScramCredentialRecord, USER_VERSION, UserRecord};
use sluice_metadata::{Compare, MetaError, Revision, SharedStore, Txn, TxnOp, keys};

/// Kafka's bounds on SCRAM iterations.
pub const MIN_ITERATIONS: i32 = 4096;
pub const MAX_ITERATIONS: i32 = 16384;

pub use sluice_protocols::kafka::scram::Mechanism;

/// Why one user's alterations were not applied.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("{0}")]
    Unacceptable(String),
    #[error("unknown SCRAM mechanism {0}")]
    UnsupportedMechanism(i8),
    #[error("{0}")]
    Duplicate(String),
    #[error("{0}")]
    NotFound(String),
    #[error("the user changed concurrently; retry")]
    Concurrent,
    #[error("metadata store error: {0}")]
    Metadata(#[from] MetaError),
}

impl UserError {
    pub fn error(&self) -> ResponseError {
        match self {
            UserError::Unacceptable(_) => ResponseError::UnacceptableCredential,
            UserError::UnsupportedMechanism(_) => ResponseError::UnsupportedSaslMechanism,
            UserError::Duplicate(_) => ResponseError::DuplicateResource,
            UserError::NotFound(_) => ResponseError::ResourceNotFound,
            UserError::Concurrent => ResponseError::RequestTimedOut,
            UserError::Metadata(_) => ResponseError::KafkaStorageError,
        }
    }
}

/// One change to one of a user's credentials.
#[derive(Debug, Clone)]
pub enum Alteration {
    Delete(i8),
    Upsert {
        mechanism: i8,
        iterations: i32,
        salt: Vec<u8>,
        salted_password: Vec<u8>,
    },
}

impl Alteration {
    fn mechanism(&self) -> i8 {
        match self {
            Alteration::Delete(m) | Alteration::Upsert { mechanism: m, .. } => *m,
        }
    }
}

/// Checks a user's alterations as Kafka does, before anything is read or written.
fn check(name: &str, alterations: &[Alteration]) -> Result<(), UserError> {
    if name.is_empty() {
        return Err(UserError::Unacceptable(
            "the user name must not be empty".into(),
        ));
    }
    let mut seen = Vec::new();
    for a in alterations {
        let m = a.mechanism();
        Mechanism::from_code(m).ok_or(UserError::UnsupportedMechanism(m))?;
        if seen.contains(&m) {
            return Err(UserError::Duplicate(format!(
                "a request may alter each of user {name}'s credentials once"
            )));
        }
        seen.push(m);
        if let Alteration::Upsert {
            iterations,
            salt,
            salted_password,
            ..
        } = a
        {
            if *iterations < MIN_ITERATIONS {
                return Err(UserError::Unacceptable(format!(
                    "too few iterations: {iterations} (at least {MIN_ITERATIONS})"
                )));
            }
            if *iterations > MAX_ITERATIONS {
                return Err(UserError::Unacceptable(format!(
                    "too many iterations: {iterations} (at most {MAX_ITERATIONS})"
                )));
            }
            if salt.is_empty() || salted_password.is_empty() {
                return Err(UserError::Unacceptable(
                    "salt and salted password must not be empty".into(),
                ));
            }
        }
    }
    Ok(())
}

/// Applies one user's alterations atomically: all of them, or none.
pub async fn alter(
    store: &SharedStore,
    name: &str,
    alterations: &[Alteration],
) -> Result<(), UserError> {
    check(name, alterations)?;
    for _ in 0..5 {
        match alter_once(store, name, alterations).await {
            Err(UserError::Concurrent) => continue,
            r => return r,
        }
    }
    Err(UserError::Concurrent)
}

async fn alter_once(
    store: &SharedStore,
    name: &str,
    alterations: &[Alteration],
) -> Result<(), UserError> {
    let key = keys::user(name);
    let (mut record, compare) = match read(store, name).await? {
        Some((record, revision)) => (record, Compare::mod_revision(key.clone(), revision)),
        None => (
            UserRecord {
                v: USER_VERSION,
                scram: Vec::new(),
            },
            Compare::absent(key.clone()),
        ),
    };
    for a in alterations {
        let m =
            Mechanism::from_code(a.mechanism()).expect("invariant: mechanisms are checked first");
        let existing = record.scram.iter().position(|c| c.mechanism == m.name());
        match a {
            Alteration::Delete(_) => {
                let Some(i) = existing else {
                    return Err(UserError::NotFound(format!(
                        "user {name} has no {} credential",
                        m.name()
                    )));
                };
                record.scram.remove(i);
            }
            Alteration::Upsert {
                iterations,
                salt,
                salted_password,
                ..
            } => {
                let (stored_key, server_key) = m.scram_keys(salted_password);
                let credential = ScramCredentialRecord {
                    mechanism: m.name().into(),
                    iterations: *iterations as u32,
                    salt: salt.clone(),
                    stored_key,
                    server_key,
                };
                match existing {
                    Some(i) => record.scram[i] = credential,
                    None => record.scram.push(credential),
                }
            }
        }
    }
    record.scram.sort_by(|a, b| a.mechanism.cmp(&b.mechanism));
    let op = if record.scram.is_empty() {
        TxnOp::delete(key)
    } else {
        TxnOp::put(key, record.encode())
    };
    let r = store
        .txn(Txn {
            compares: vec![compare],
            success: vec![op],
            failure: vec![],
        })
        .await?;
    if r.succeeded {
        Ok(())
    } else {
        Err(UserError::Concurrent)
    }
}

/// Creates `name` with SCRAM-SHA-256 and SCRAM-SHA-512 credentials for `password` unless
/// the user exists (the first administrator, from the command line); true if created.
pub async fn ensure(store: &SharedStore, name: &str, password: &str) -> Result<bool, UserError> {
    if store.get(keys::user(name).as_bytes()).await?.is_some() {
        return Ok(false);
    }
    let iterations = MIN_ITERATIONS;
    let mut alterations = Vec::new();
    for m in [Mechanism::Sha256, Mechanism::Sha512] {
        let salt: [u8; 16] = rand::random();
        let password = password.as_bytes().to_vec();
        let salted = tokio::task::spawn_blocking(move || {
            m.salted_password(&password, &salt, iterations as u32)
        })
        .await
        .map_err(|e| UserError::Unacceptable(e.to_string()))?;
        alterations.push(Alteration::Upsert {
            mechanism: m.code(),
            iterations,
            salt: salt.to_vec(),
            salted_password: salted,
        });
    }
    match alter(store, name, &alterations).await {
        Ok(()) => Ok(true),
        // Another gateway created it meanwhile.
        Err(UserError::Concurrent) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Every user with credentials: name to its credentials' `(mechanism, iterations)`.
pub async fn list(
    store: &SharedStore,
) -> Result<BTreeMap<String, Vec<(Mechanism, u32)>>, UserError> {
    let mut out = BTreeMap::new();
    for kv in store.range(keys::USERS_PREFIX.as_bytes(), None).await?.kvs {
        let name = keys::unescape_group(&String::from_utf8_lossy(
            &kv.key[keys::USERS_PREFIX.len()..],
        ));
        match UserRecord::decode(&kv.value) {
            Ok(r) => {
                out.insert(name, credentials(&r));
            }
            Err(e) => tracing::warn!(user = %name, error = %e, "unreadable user record"),
        }
    }
    Ok(out)
}

/// A user's record and the revision it was last written at; `None` for no such user.
async fn read(
    store: &SharedStore,
    name: &str,
) -> Result<Option<(UserRecord, Revision)>, UserError> {
    let Some(kv) = store.get(keys::user(name).as_bytes()).await? else {
        return Ok(None);
    };
    let record = UserRecord::decode(&kv.value)
        .map_err(|e| UserError::Unacceptable(format!("stored user record: {e}")))?;
    Ok(Some((record, kv.mod_revision)))
}

/// One user's credentials, or `None` when the user has none.
pub async fn describe(
    store: &SharedStore,
    name: &str,
) -> Result<Option<Vec<(Mechanism, u32)>>, UserError> {
    Ok(read(store, name).await?.map(|(r, _)| credentials(&r)))
}

/// A user's credential of mechanism `m`, if the user has one.
pub async fn credential(
    store: &SharedStore,
    name: &str,
    m: Mechanism,
) -> Result<Option<ScramCredentialRecord>, UserError> {
    Ok(read(store, name)
        .await?
        .and_then(|(r, _)| r.scram.into_iter().find(|c| c.mechanism == m.name())))
}

/// Whether `password` is `name`'s: checked against the user's SCRAM-SHA-512 credential, or
/// SCRAM-SHA-256 if it has only that (PBKDF2 off the async workers). `Ok(false)` for a
/// user without credentials.
pub async fn verify_password(
    store: &SharedStore,
    name: &str,
    password: Vec<u8>,
) -> Result<bool, UserError> {
    let Some((record, _)) = read(store, name).await? else {
        return Ok(false);
    };
    for m in [Mechanism::Sha512, Mechanism::Sha256] {
        if let Some(c) = record.scram.iter().find(|c| c.mechanism == m.name()) {
            let c = c.clone();
            let matches = tokio::task::spawn_blocking(move || password_matches(m, &c, &password))
                .await
                .unwrap_or(false);
            return Ok(matches);
        }
    }
    Ok(false)
}

/// Whether `password` is the one a SCRAM credential was made from.
pub fn password_matches(m: Mechanism, credential: &ScramCredentialRecord, password: &[u8]) -> bool {
    let salted = m.salted_password(password, &credential.salt, credential.iterations);
    let (stored_key, _) = m.scram_keys(&salted);
    subtle::ConstantTimeEq::ct_eq(stored_key.as_slice(), credential.stored_key.as_slice()).into()
}

fn credentials(r: &UserRecord) -> Vec<(Mechanism, u32)> {
    r.scram
        .iter()
        .filter_map(|c| Some((Mechanism::from_name(&c.mechanism)?, c.iterations)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// RFC 7677's example (user "user", password "pencil", salt
    /// W22ZaJ0SNY7soEsUEjb6gQ==, 4096 iterations): the keys its exchange implies,
    /// computed independently with Python's hashlib and hmac.
    #[test]
    fn keys_follow_rfc_5802() {
        let salt = [
            0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e, 0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36,
            0xfa, 0x81,
        ];
        let salted = Mechanism::Sha256.salted_password(b"pencil", &salt, 4096);
        let (stored, server) = Mechanism::Sha256.scram_keys(&salted);
        assert_eq!(hex(&stored), STORED_KEY_256);
        assert_eq!(hex(&server), SERVER_KEY_256);
    }

    const STORED_KEY_256: &str = "586e5df283e6dceb5c3e791d8b8528ec191e664045ce971792e2e6b5bb13e2a6";
    const SERVER_KEY_256: &str = "c1f3cbc1c13a9d35a14c0990eed97629ea225863e566a4314ab99f3f00e5d9d5";

    #[test]
    fn alterations_are_checked_as_kafka_checks_them() {
        let up = |m, i| Alteration::Upsert {
            mechanism: m,
            iterations: i,
            salt: vec![1],
            salted_password: vec![2],
        };
        assert!(check("alice", &[up(1, 4096), up(2, 8192)]).is_ok());
        assert!(matches!(
            check("", &[up(1, 4096)]),
            Err(UserError::Unacceptable(_))
        ));
        assert!(matches!(
            check("a", &[up(1, 4095)]),
            Err(UserError::Unacceptable(_))
        ));
        assert!(matches!(
            check("a", &[up(1, 16385)]),
            Err(UserError::Unacceptable(_))
        ));
        assert!(matches!(
            check("a", &[up(3, 4096)]),
            Err(UserError::UnsupportedMechanism(3))
        ));
        assert!(matches!(
            check("a", &[up(1, 4096), Alteration::Delete(1)]),
            Err(UserError::Duplicate(_))
        ));
    }
}
