//! Topic administration: create, delete, grow, configure. Every change is a transaction
//! on the topic's key (create: the key must be absent; others: it must be unchanged since
//! read), then a wait until this gateway's log has applied it, so the next request on the
//! same connection sees it.

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_protocol::ResponseError;
use sluice_metadata::records::{TOPIC_VERSION, TopicRecord};
use sluice_metadata::{Compare, MetaError, Revision, Txn, TxnOp, keys};
use sluice_protocols::kafka::recompress::Codec;
use uuid::Uuid;

use crate::server::Ctx;

const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

pub use sluice_metadata::topic_configs::*;

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("topic '{0}' already exists")]
    Exists(String),
    #[error("topic '{0}' does not exist")]
    Unknown(String),
    #[error("invalid topic name: {0}")]
    InvalidName(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("the topic changed concurrently; retry")]
    Concurrent,
    #[error("metadata store error: {0}")]
    Metadata(#[from] MetaError),
    #[error("the change was written but not seen applied in time")]
    Timeout,
}

impl TopicError {
    pub fn code(&self) -> i16 {
        self.error().code()
    }

    pub fn error(&self) -> ResponseError {
        match self {
            TopicError::Exists(_) => ResponseError::TopicAlreadyExists,
            TopicError::Unknown(_) => ResponseError::UnknownTopicOrPartition,
            TopicError::InvalidName(_) => ResponseError::InvalidTopicException,
            TopicError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
            TopicError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
            TopicError::InvalidConfig(_) => ResponseError::InvalidConfig,
            TopicError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
            TopicError::InvalidRequest(_) => ResponseError::InvalidRequest,
            TopicError::Concurrent => ResponseError::RequestTimedOut,
            TopicError::Metadata(_) => ResponseError::KafkaStorageError,
            TopicError::Timeout => ResponseError::RequestTimedOut,
        }
    }
}

/// Kafka's topic name rules.
pub fn validate_name(name: &str) -> Result<(), TopicError> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(TopicError::InvalidName(format!("'{name}' is not allowed")));
    }
    if name.len() > 249 {
        return Err(TopicError::InvalidName("longer than 249 characters".into()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(TopicError::InvalidName(format!(
            "'{name}' contains '{c}'; only ASCII alphanumerics, '.', '_' and '-' are allowed"
        )));
    }
    Ok(())
}

pub fn validate_configs(configs: &BTreeMap<String, String>) -> Result<(), TopicError> {
    for (k, v) in configs {
        let def = config_def(k)
            .ok_or_else(|| TopicError::InvalidConfig(format!("unknown topic config '{k}'")))?;
        (def.validate)(v).map_err(|e| TopicError::InvalidConfig(format!("{k}={v}: {e}")))?;
    }
    Ok(())
}

async fn wait_applied(ctx: &Ctx, revision: Revision) -> Result<(), TopicError> {
    if ctx.log.wait_for(revision, APPLY_TIMEOUT).await {
        Ok(())
    } else {
        Err(TopicError::Timeout)
    }
}

/// The current record of a topic and the revision it was last written at.
async fn read_topic(ctx: &Ctx, name: &str) -> Result<(TopicRecord, Revision), TopicError> {
    let kv = ctx
        .store
        .get(keys::topic(name).as_bytes())
        .await?
        .ok_or_else(|| TopicError::Unknown(name.into()))?;
    let record =
        TopicRecord::decode(&kv.value).map_err(|e| TopicError::InvalidRequest(e.to_string()))?;
    Ok((record, kv.mod_revision))
}

pub async fn create(
    ctx: &Ctx,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<TopicRecord, TopicError> {
    validate_name(name)?;
    let partitions = match partitions {
        -1 => ctx.config.default_partitions as i32,
        p if p > 0 => p,
        p => {
            return Err(TopicError::InvalidPartitions(format!(
                "{p} partitions; must be positive or -1"
            )));
        }
    };
    if replication_factor == 0 || replication_factor < -1 {
        return Err(TopicError::InvalidReplicationFactor(format!(
            "replication factor {replication_factor}; must be positive or -1"
        )));
    }
    validate_configs(&configs)?;
    let record = TopicRecord {
        v: TOPIC_VERSION,
        id: Uuid::new_v4(),
        name: name.to_string(),
        partitions: partitions as u32,
        configs,
    };
    if validate_only {
        if ctx.log.read(|s| s.topic(name).is_some()) {
            return Err(TopicError::Exists(name.into()));
        }
        return Ok(record);
    }
    let key = keys::topic(name);
    let r = ctx
        .store
        .txn(Txn {
            compares: vec![Compare::absent(key.clone())],
            success: vec![TxnOp::put(key, record.encode())],
            failure: vec![],
        })
        .await?;
    if !r.succeeded {
        return Err(TopicError::Exists(name.into()));
    }
    wait_applied(ctx, r.revision).await?;
    Ok(record)
}

/// Kafka's checks of a manual replica assignment, one replica list per partition in
/// partition order: no list empty, no broker twice in one, every broker a live gateway,
/// and (`uniform`) every list as long as the first. Storage is shared, so nothing else of
/// an assignment is kept: the partition count is what it decides. Returns the replication
/// factor it describes.
pub fn check_assignment(
    live: &[i32],
    replicas: &[Vec<i32>],
    uniform: bool,
) -> Result<i16, TopicError> {
    let bad = |m: String| Err(TopicError::InvalidReplicaAssignment(m));
    let Some(first) = replicas.first() else {
        return bad("the manual partition assignment is empty".into());
    };
    for (p, brokers) in replicas.iter().enumerate() {
        if brokers.is_empty() {
            return bad(format!(
                "the manual partition assignment of partition {p} has no replicas"
            ));
        }
        if uniform && brokers.len() != first.len() {
            return bad(format!(
                "partition {p} has {} replicas, not {} like the partitions before it",
                brokers.len(),
                first.len()
            ));
        }
        let mut seen = brokers.clone();
        seen.sort_unstable();
        seen.dedup();
        if seen.len() != brokers.len() {
            return bad(format!(
                "the manual partition assignment of partition {p} names a broker twice"
            ));
        }
        if let Some(b) = brokers.iter().find(|b| !live.contains(b)) {
            return bad(format!(
                "the manual partition assignment names broker {b}, but no such broker is registered"
            ));
        }
    }
    Ok(i16::try_from(first.len()).unwrap_or(i16::MAX))
}

/// The codec a topic's `compression.type` asks for, with its level; `None` for `producer`.
pub fn codec(t: &TopicRecord) -> Option<Codec> {
    let level = |name| config_i64(t, name);
    Some(match config_value(t, COMPRESSION_TYPE)? {
        "uncompressed" => Codec::None,
        "gzip" => Codec::Gzip(u32::try_from(level(COMPRESSION_GZIP_LEVEL)).ok()),
        "snappy" => Codec::Snappy,
        "lz4" => Codec::Lz4(u32::try_from(level(COMPRESSION_LZ4_LEVEL)).unwrap_or(9)),
        "zstd" => Codec::Zstd(i32::try_from(level(COMPRESSION_ZSTD_LEVEL)).unwrap_or(3)),
        _ => return None,
    })
}

/// Runs a read-modify-write again when another writer changed the topic in between.
async fn retry_concurrent<T, F, Fut>(mut attempt: F) -> Result<T, TopicError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, TopicError>>,
{
    for _ in 0..4 {
        match attempt().await {
            Err(TopicError::Concurrent) => continue,
            r => return r,
        }
    }
    attempt().await
}

/// Replaces a topic's record if it was not changed since `revision`.
async fn swap(ctx: &Ctx, record: &TopicRecord, revision: Revision) -> Result<(), TopicError> {
    let key = keys::topic(&record.name);
    let r = ctx
        .store
        .txn(Txn {
            compares: vec![Compare::mod_revision(key.clone(), revision)],
            success: vec![TxnOp::put(key, record.encode())],
            failure: vec![],
        })
        .await?;
    if !r.succeeded {
        return Err(TopicError::Concurrent);
    }
    wait_applied(ctx, r.revision).await
}

pub async fn delete(ctx: &Ctx, name: &str) -> Result<Uuid, TopicError> {
    retry_concurrent(|| delete_once(ctx, name)).await
}

async fn delete_once(ctx: &Ctx, name: &str) -> Result<Uuid, TopicError> {
    let (record, revision) = read_topic(ctx, name).await?;
    let key = keys::topic(name);
    let r = ctx
        .store
        .txn(Txn {
            compares: vec![Compare::mod_revision(key.clone(), revision)],
            success: vec![TxnOp::delete(key)],
            failure: vec![],
        })
        .await?;
    if !r.succeeded {
        return Err(TopicError::Concurrent);
    }
    wait_applied(ctx, r.revision).await?;
    Ok(record.id)
}

pub async fn create_partitions(
    ctx: &Ctx,
    name: &str,
    count: i32,
    validate_only: bool,
) -> Result<(), TopicError> {
    retry_concurrent(|| create_partitions_once(ctx, name, count, validate_only)).await
}

async fn create_partitions_once(
    ctx: &Ctx,
    name: &str,
    count: i32,
    validate_only: bool,
) -> Result<(), TopicError> {
    let (mut record, revision) = read_topic(ctx, name).await?;
    if count <= record.partitions as i32 {
        return Err(TopicError::InvalidPartitions(format!(
            "topic '{name}' has {} partitions; the new count {count} must be larger",
            record.partitions
        )));
    }
    if validate_only {
        return Ok(());
    }
    record.partitions = count as u32;
    swap(ctx, &record, revision).await
}

/// Kafka's IncrementalAlterConfigs operations.
#[derive(Debug, Clone, Copy)]
pub enum AlterOp {
    Set,
    Delete,
    /// Adds the given items to a list config (its default if unset), skipping those there.
    Append,
    /// Removes the given items from a list config.
    Subtract,
}

pub async fn alter_configs(
    ctx: &Ctx,
    name: &str,
    changes: Vec<(String, AlterOp, Option<String>)>,
    validate_only: bool,
) -> Result<(), TopicError> {
    retry_concurrent(|| alter_configs_once(ctx, name, changes.clone(), validate_only)).await
}

async fn alter_configs_once(
    ctx: &Ctx,
    name: &str,
    changes: Vec<(String, AlterOp, Option<String>)>,
    validate_only: bool,
) -> Result<(), TopicError> {
    let (mut record, revision) = read_topic(ctx, name).await?;
    for (k, op, v) in changes {
        let Some(def) = config_def(&k) else {
            return Err(TopicError::InvalidConfig(format!(
                "unknown topic config '{k}'"
            )));
        };
        if matches!(op, AlterOp::Append | AlterOp::Subtract) && def.kind != LIST {
            return Err(TopicError::InvalidConfig(format!(
                "APPEND and SUBTRACT apply to list configs; '{k}' takes one value"
            )));
        }
        match op {
            AlterOp::Set => {
                let v = v.ok_or_else(|| {
                    TopicError::InvalidConfig(format!("no value given to set {k}"))
                })?;
                record.configs.insert(k, v);
            }
            AlterOp::Delete => {
                record.configs.remove(&k);
            }
            AlterOp::Append | AlterOp::Subtract => {
                let given = v.unwrap_or_default();
                let given = list_items(&given);
                let current = config_value(&record, &k).unwrap_or_default().to_string();
                let mut items: Vec<&str> = list_items(&current);
                if matches!(op, AlterOp::Append) {
                    for g in given {
                        if !items.contains(&g) {
                            items.push(g);
                        }
                    }
                } else {
                    items.retain(|i| !given.contains(i));
                }
                let joined = items.join(",");
                record.configs.insert(k, joined);
            }
        }
    }
    validate_configs(&record.configs)?;
    if validate_only {
        return Ok(());
    }
    swap(ctx, &record, revision).await
}

/// The legacy AlterConfigs: the topic's overrides become exactly `configs` (everything
/// not named returns to its default).
pub async fn replace_configs(
    ctx: &Ctx,
    name: &str,
    configs: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<(), TopicError> {
    validate_configs(&configs)?;
    retry_concurrent(|| async {
        let (mut record, revision) = read_topic(ctx, name).await?;
        if validate_only {
            return Ok(());
        }
        record.configs = configs.clone();
        swap(ctx, &record, revision).await
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kafka_rules() {
        assert!(validate_name("orders.v1_x-2").is_ok());
        for bad in ["", ".", "..", "a b", "a/b", "ü"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_name(&"a".repeat(250)).is_err());
    }

    #[test]
    fn configs_are_checked() {
        let ok: BTreeMap<String, String> = [
            ("retention.ms".into(), "-1".into()),
            (TIMESTAMP_TYPE.into(), "LogAppendTime".into()),
        ]
        .into();
        assert!(validate_configs(&ok).is_ok());
        for (k, v) in [
            ("retention.ms", "x"),
            ("cleanup.policy", "compact"),
            ("no.such", "1"),
            (MAX_MESSAGE_BYTES, "-5"),
        ] {
            let c: BTreeMap<String, String> = [(k.to_string(), v.to_string())].into();
            assert!(
                matches!(validate_configs(&c), Err(TopicError::InvalidConfig(_))),
                "{k}={v}"
            );
        }
    }
}
