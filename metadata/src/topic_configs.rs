//! Topic configurations Sluice understands, their defaults and validation. The gateway
//! serves them (CreateTopics, DescribeConfigs, IncrementalAlterConfigs); the compactor
//! acts on the retention and segment ones.

use crate::records::TopicRecord;

/// A topic configuration Sluice understands, with its default.
pub struct ConfigDef {
    pub name: &'static str,
    pub default: &'static str,
    pub validate: fn(&str) -> Result<(), String>,
    /// Kafka's config type code (DescribeConfigs v3+): 2 string, 5 long, 7 list.
    pub kind: i8,
    pub doc: &'static str,
}

fn long_at_least(min: i64) -> impl Fn(&str) -> Result<(), String> {
    move |v| match v.parse::<i64>() {
        Ok(n) if n >= min => Ok(()),
        _ => Err(format!("must be an integer of at least {min}")),
    }
}

pub const MAX_MESSAGE_BYTES: &str = "max.message.bytes";
pub const TIMESTAMP_TYPE: &str = "message.timestamp.type";
pub const RETENTION_MS: &str = "retention.ms";
pub const RETENTION_BYTES: &str = "retention.bytes";
pub const SEGMENT_BYTES: &str = "segment.bytes";
pub const SEGMENT_MS: &str = "segment.ms";

/// Topic configurations. Anything else is refused with INVALID_CONFIG rather than stored
/// and silently ignored.
pub const TOPIC_CONFIGS: &[ConfigDef] = &[
    ConfigDef {
        name: "cleanup.policy",
        default: "delete",
        validate: |v| match v {
            "delete" => Ok(()),
            _ => Err("only cleanup.policy=delete is supported (log compaction is not)".into()),
        },
        kind: 7,
        doc: "What happens to old data: deleted by retention.",
    },
    ConfigDef {
        name: "compression.type",
        default: "producer",
        validate: |v| match v {
            "producer" => Ok(()),
            _ => Err(
                "only compression.type=producer is supported: batches are stored as sent".into(),
            ),
        },
        kind: 2,
        doc: "Batches are stored with the producer's compression.",
    },
    ConfigDef {
        name: MAX_MESSAGE_BYTES,
        default: "1048588",
        validate: |v| long_at_least(0)(v),
        kind: 5,
        doc: "The largest record batch accepted, in bytes.",
    },
    ConfigDef {
        name: TIMESTAMP_TYPE,
        default: "CreateTime",
        validate: |v| match v {
            "CreateTime" | "LogAppendTime" => Ok(()),
            _ => Err("must be CreateTime or LogAppendTime".into()),
        },
        kind: 2,
        doc: "Whether record timestamps are the producer's or the time of append.",
    },
    ConfigDef {
        name: RETENTION_MS,
        default: "604800000",
        validate: |v| long_at_least(-1)(v),
        kind: 5,
        doc: "How long data is kept, in milliseconds (-1: forever). Enforced by the compactor.",
    },
    ConfigDef {
        name: RETENTION_BYTES,
        default: "-1",
        validate: |v| long_at_least(-1)(v),
        kind: 5,
        doc: "How many bytes a partition keeps (-1: no limit). Enforced by the compactor.",
    },
    ConfigDef {
        name: SEGMENT_BYTES,
        default: "134217728",
        validate: |v| long_at_least(14)(v),
        kind: 5,
        doc: "Target size of a compacted Parquet segment, in bytes.",
    },
    ConfigDef {
        name: SEGMENT_MS,
        default: "604800000",
        validate: |v| long_at_least(1)(v),
        kind: 5,
        doc: "Data older than this (or than the compactor's --compaction-max-age, if shorter) is compacted even if a segment is not full, in milliseconds.",
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

/// The effective value of an integer topic config; the default if the stored value does
/// not parse (validation keeps that from happening).
pub fn config_i64(topic: &TopicRecord, name: &str) -> i64 {
    let parse = |v: &str| v.parse::<i64>().ok();
    config_value(topic, name)
        .and_then(parse)
        .or_else(|| config_def(name).and_then(|d| parse(d.default)))
        .unwrap_or(-1)
}
