//! Topic configurations Sluice understands, their defaults and validation. The gateway
//! serves them (CreateTopics, DescribeConfigs, IncrementalAlterConfigs); the compactor
//! acts on the retention and segment ones.

use crate::records::TopicRecord;

/// A topic configuration Sluice understands, with its default.
pub struct ConfigDef {
    pub name: &'static str,
    pub default: &'static str,
    pub validate: fn(&str) -> Result<(), String>,
    /// Kafka's config type code (DescribeConfigs v3+).
    pub kind: i8,
    pub doc: &'static str,
    /// False for configs Kafka accepts that mean nothing where storage is an object store
    /// (flush intervals, index sizes, replica counts): accepted, stored and described so
    /// that tools which set them work, and documented as having no effect.
    pub applies: bool,
}

/// Kafka's config type codes.
pub const BOOLEAN: i8 = 1;
pub const STRING: i8 = 2;
pub const INT: i8 = 3;
pub const LONG: i8 = 5;
pub const DOUBLE: i8 = 6;
pub const LIST: i8 = 7;

fn long_at_least(min: i64) -> impl Fn(&str) -> Result<(), String> {
    move |v| match v.parse::<i64>() {
        Ok(n) if n >= min => Ok(()),
        _ => Err(format!("must be an integer of at least {min}")),
    }
}

fn int_in(min: i64, max: i64) -> impl Fn(&str) -> Result<(), String> {
    move |v| match v.parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(()),
        _ => Err(format!("must be an integer from {min} to {max}")),
    }
}

fn boolean(v: &str) -> Result<(), String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "false" => Ok(()),
        _ => Err("must be true or false".into()),
    }
}

fn ratio(v: &str) -> Result<(), String> {
    match v.parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(()),
        _ => Err("must be a number from 0 to 1".into()),
    }
}

/// The items of a list config (comma-separated, blanks ignored, as Kafka parses them).
pub fn list_items(v: &str) -> Vec<&str> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// Replica throttling lists: `*`, or `partition:broker` pairs.
fn throttled_replicas(v: &str) -> Result<(), String> {
    let items = list_items(v);
    if items == ["*"] {
        return Ok(());
    }
    for item in items {
        let ok = item
            .split_once(':')
            .is_some_and(|(p, b)| p.parse::<u32>().is_ok() && b.parse::<u32>().is_ok());
        if !ok {
            return Err(format!("'{item}' is not '*' or PARTITION:BROKER"));
        }
    }
    Ok(())
}

pub const CLEANUP_POLICY: &str = "cleanup.policy";
pub const COMPRESSION_TYPE: &str = "compression.type";
pub const COMPRESSION_GZIP_LEVEL: &str = "compression.gzip.level";
pub const COMPRESSION_LZ4_LEVEL: &str = "compression.lz4.level";
pub const COMPRESSION_ZSTD_LEVEL: &str = "compression.zstd.level";
pub const MAX_MESSAGE_BYTES: &str = "max.message.bytes";
pub const TIMESTAMP_TYPE: &str = "message.timestamp.type";
pub const RETENTION_MS: &str = "retention.ms";
pub const RETENTION_BYTES: &str = "retention.bytes";
pub const SEGMENT_BYTES: &str = "segment.bytes";
pub const SEGMENT_MS: &str = "segment.ms";

/// The compression codecs `compression.type` names besides `producer`.
pub const CODECS: &[&str] = &["uncompressed", "gzip", "snappy", "lz4", "zstd"];

const NO_FLUSH: &str = "No effect: a batch is acknowledged once its WAL object is in the object store and committed, so there is nothing to flush.";
const NO_INDEX: &str =
    "No effect: offsets are indexed in metadata and in Parquet segments, not in local index files.";
const NO_REPLICAS: &str =
    "No effect: the object store keeps the data durable; gateways hold no replicas.";
const NO_LOCAL_TIER: &str = "No effect: all data is in the object store; there is no local tier.";
const NO_COMPACTION: &str =
    "No effect yet: log compaction (cleanup.policy=compact) is not supported.";

/// Topic configurations. Anything else is refused with INVALID_CONFIG rather than stored
/// and silently ignored; those Kafka accepts that mean nothing here say so (`applies`).
pub const TOPIC_CONFIGS: &[ConfigDef] = &[
    ConfigDef {
        name: CLEANUP_POLICY,
        default: "delete",
        validate: |v| {
            for item in list_items(v) {
                match item {
                    "delete" => {}
                    "compact" => {
                        return Err(
                            "cleanup.policy=compact is not supported (log compaction is not)"
                                .into(),
                        );
                    }
                    other => return Err(format!("'{other}' is not a cleanup policy")),
                }
            }
            Ok(())
        },
        kind: LIST,
        doc: "What happens to old data: 'delete' removes it by retention; an empty list keeps it forever.",
        applies: true,
    },
    ConfigDef {
        name: COMPRESSION_TYPE,
        default: "producer",
        validate: |v| {
            if v == "producer" || CODECS.contains(&v) {
                Ok(())
            } else {
                Err("must be one of producer, uncompressed, gzip, snappy, lz4, zstd".into())
            }
        },
        kind: STRING,
        doc: "The codec batches are stored with: 'producer' keeps the producer's; any other batch is recompressed on append.",
        applies: true,
    },
    ConfigDef {
        name: COMPRESSION_GZIP_LEVEL,
        default: "-1",
        validate: |v| match v.parse::<i64>() {
            Ok(-1 | 1..=9) => Ok(()),
            _ => Err("must be -1 or from 1 to 9".into()),
        },
        kind: INT,
        doc: "The gzip level used when compression.type=gzip recompresses a batch (-1: the codec's default).",
        applies: true,
    },
    ConfigDef {
        name: COMPRESSION_LZ4_LEVEL,
        default: "9",
        validate: |v| int_in(1, 17)(v),
        kind: INT,
        doc: "The lz4 level used when compression.type=lz4 recompresses a batch.",
        applies: true,
    },
    ConfigDef {
        name: COMPRESSION_ZSTD_LEVEL,
        default: "3",
        validate: |v| int_in(-131_072, 22)(v),
        kind: INT,
        doc: "The zstd level used when compression.type=zstd recompresses a batch.",
        applies: true,
    },
    ConfigDef {
        name: MAX_MESSAGE_BYTES,
        default: "1048588",
        validate: |v| long_at_least(0)(v),
        kind: INT,
        doc: "The largest record batch accepted, in bytes.",
        applies: true,
    },
    ConfigDef {
        name: TIMESTAMP_TYPE,
        default: "CreateTime",
        validate: |v| match v {
            "CreateTime" | "LogAppendTime" => Ok(()),
            _ => Err("must be CreateTime or LogAppendTime".into()),
        },
        kind: STRING,
        doc: "Whether record timestamps are the producer's or the time of append.",
        applies: true,
    },
    ConfigDef {
        name: RETENTION_MS,
        default: "604800000",
        validate: |v| long_at_least(-1)(v),
        kind: LONG,
        doc: "How long data is kept, in milliseconds (-1: forever). Enforced by the compactor.",
        applies: true,
    },
    ConfigDef {
        name: RETENTION_BYTES,
        default: "-1",
        validate: |v| long_at_least(-1)(v),
        kind: LONG,
        doc: "How many bytes a partition keeps (-1: no limit). Enforced by the compactor.",
        applies: true,
    },
    ConfigDef {
        name: SEGMENT_BYTES,
        default: "134217728",
        validate: |v| long_at_least(14)(v),
        kind: INT,
        doc: "Target size of a compacted Parquet segment, in bytes.",
        applies: true,
    },
    ConfigDef {
        name: SEGMENT_MS,
        default: "604800000",
        validate: |v| long_at_least(1)(v),
        kind: LONG,
        doc: "Data older than this (or than the compactor's --compaction-max-age, if shorter) is compacted even if a segment is not full, in milliseconds.",
        applies: true,
    },
    ConfigDef {
        name: "flush.messages",
        default: "9223372036854775807",
        validate: |v| long_at_least(1)(v),
        kind: LONG,
        doc: NO_FLUSH,
        applies: false,
    },
    ConfigDef {
        name: "flush.ms",
        default: "9223372036854775807",
        validate: |v| long_at_least(0)(v),
        kind: LONG,
        doc: NO_FLUSH,
        applies: false,
    },
    ConfigDef {
        name: "segment.index.bytes",
        default: "10485760",
        validate: |v| long_at_least(4)(v),
        kind: INT,
        doc: NO_INDEX,
        applies: false,
    },
    ConfigDef {
        name: "index.interval.bytes",
        default: "4096",
        validate: |v| long_at_least(0)(v),
        kind: INT,
        doc: NO_INDEX,
        applies: false,
    },
    ConfigDef {
        name: "segment.jitter.ms",
        default: "0",
        validate: |v| long_at_least(0)(v),
        kind: LONG,
        doc: "No effect: segments are cut by the compactor, not by a per-partition timer.",
        applies: false,
    },
    ConfigDef {
        name: "file.delete.delay.ms",
        default: "60000",
        validate: |v| long_at_least(0)(v),
        kind: LONG,
        doc: "No effect: the compactor deletes objects once no index entry or read needs them.",
        applies: false,
    },
    ConfigDef {
        name: "preallocate",
        default: "false",
        validate: boolean,
        kind: BOOLEAN,
        doc: "No effect: there are no local segment files to preallocate.",
        applies: false,
    },
    ConfigDef {
        name: "min.insync.replicas",
        default: "1",
        validate: |v| long_at_least(1)(v),
        kind: INT,
        doc: NO_REPLICAS,
        applies: false,
    },
    ConfigDef {
        name: "unclean.leader.election.enable",
        default: "false",
        validate: boolean,
        kind: BOOLEAN,
        doc: "No effect: any gateway serves any partition from shared storage; no leader can be behind.",
        applies: false,
    },
    ConfigDef {
        name: "leader.replication.throttled.replicas",
        default: "",
        validate: throttled_replicas,
        kind: LIST,
        doc: NO_REPLICAS,
        applies: false,
    },
    ConfigDef {
        name: "follower.replication.throttled.replicas",
        default: "",
        validate: throttled_replicas,
        kind: LIST,
        doc: NO_REPLICAS,
        applies: false,
    },
    ConfigDef {
        name: "message.downconversion.enable",
        default: "true",
        validate: boolean,
        kind: BOOLEAN,
        doc: "No effect: batches are served in the record batch format (magic 2) only.",
        applies: false,
    },
    ConfigDef {
        name: "message.format.version",
        default: "3.0-IV1",
        validate: |v| {
            if v.is_empty() {
                Err("must name a version".into())
            } else {
                Ok(())
            }
        },
        kind: STRING,
        doc: "No effect: batches are stored in the record batch format (magic 2).",
        applies: false,
    },
    ConfigDef {
        name: "local.retention.ms",
        default: "-2",
        validate: |v| long_at_least(-2)(v),
        kind: LONG,
        doc: NO_LOCAL_TIER,
        applies: false,
    },
    ConfigDef {
        name: "local.retention.bytes",
        default: "-2",
        validate: |v| long_at_least(-2)(v),
        kind: LONG,
        doc: NO_LOCAL_TIER,
        applies: false,
    },
    ConfigDef {
        name: "remote.storage.enable",
        default: "false",
        validate: boolean,
        kind: BOOLEAN,
        doc: "No effect: every topic lives in the object store.",
        applies: false,
    },
    ConfigDef {
        name: "min.cleanable.dirty.ratio",
        default: "0.5",
        validate: ratio,
        kind: DOUBLE,
        doc: NO_COMPACTION,
        applies: false,
    },
    ConfigDef {
        name: "delete.retention.ms",
        default: "86400000",
        validate: |v| long_at_least(0)(v),
        kind: LONG,
        doc: NO_COMPACTION,
        applies: false,
    },
    ConfigDef {
        name: "min.compaction.lag.ms",
        default: "0",
        validate: |v| long_at_least(0)(v),
        kind: LONG,
        doc: NO_COMPACTION,
        applies: false,
    },
    ConfigDef {
        name: "max.compaction.lag.ms",
        default: "9223372036854775807",
        validate: |v| long_at_least(1)(v),
        kind: LONG,
        doc: NO_COMPACTION,
        applies: false,
    },
];

pub fn config_def(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// The effective value of a topic config: the override, else the default.
pub fn config_value<'a>(topic: &'a TopicRecord, name: &str) -> Option<&'a str> {
    topic
        .configs
        .get(name)
        .map(String::as_str)
        .or_else(|| config_def(name).map(|d| d.default))
}

/// Whether old data is deleted by retention: `cleanup.policy` lists `delete` (an empty
/// list keeps everything, as in Kafka).
pub fn deletes_by_retention(topic: &TopicRecord) -> bool {
    config_value(topic, CLEANUP_POLICY).is_some_and(|v| list_items(v).contains(&"delete"))
}

/// The effective value of an integer topic config; the default if the stored value does
/// not parse (validation keeps that from happening).
pub fn config_i64(topic: &TopicRecord, name: &str) -> i64 {
    let parse = |v: &str| v.parse::<i64>().ok();
    config_value(topic, name)
        .and_then(parse)
        .or_else(|| config_def(name).and_then(|d| parse(d.default)))
        .unwrap_or(-1)
}
