//! Values stored in metadata. Every format carries a version and has a golden test.
//!
//! Topics are JSON (small, rare, readable with `etcdctl`). Commit records are written on
//! every flush, so they use a compact binary encoding.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("unsupported {what} version {version}")]
    Version { what: &'static str, version: u16 },
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
}

pub const TOPIC_VERSION: u16 = 1;

/// A topic as stored under `log/topics/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub v: u16,
    pub id: Uuid,
    pub name: String,
    pub partitions: u32,
    /// Topic-level configuration overrides (Kafka names, e.g. `retention.ms`).
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
}

impl TopicRecord {
    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("invariant: a topic record always serializes"))
    }

    pub fn decode(b: &[u8]) -> Result<Self, RecordError> {
        #[derive(Deserialize)]
        struct Probe {
            v: u16,
        }
        let probe: Probe = serde_json::from_slice(b).map_err(|e| RecordError::Malformed {
            what: "topic record",
            reason: e.to_string(),
        })?;
        if probe.v != TOPIC_VERSION {
            return Err(RecordError::Version {
                what: "topic record",
                version: probe.v,
            });
        }
        serde_json::from_slice(b).map_err(|e| RecordError::Malformed {
            what: "topic record",
            reason: e.to_string(),
        })
    }
}

pub const COMMIT_VERSION: u16 = 1;

/// One partition's bytes inside a WAL object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    pub topic_id: Uuid,
    pub partition: u32,
    /// Byte position of the chunk in the object.
    pub position: u64,
    pub size: u32,
    /// Records in the chunk: the offsets it takes.
    pub records: u32,
    pub max_timestamp: i64,
}

impl Chunk {
    /// Encoded size: 16-byte topic id, `u32 partition`, `u64 position`, `u32 size`,
    /// `u32 records`, `i64 max timestamp`, big-endian.
    pub const ENCODED_LEN: usize = 44;

    pub fn encode_into(&self, b: &mut impl BufMut) {
        b.put_slice(self.topic_id.as_bytes());
        b.put_u32(self.partition);
        b.put_u64(self.position);
        b.put_u32(self.size);
        b.put_u32(self.records);
        b.put_i64(self.max_timestamp);
    }

    /// Reads one chunk; the caller checks that [`Self::ENCODED_LEN`] bytes remain.
    pub fn decode_from(b: &mut impl Buf) -> Self {
        let mut id = [0u8; 16];
        b.copy_to_slice(&mut id);
        Self {
            topic_id: Uuid::from_bytes(id),
            partition: b.get_u32(),
            position: b.get_u64(),
            size: b.get_u32(),
            records: b.get_u32(),
            max_timestamp: b.get_i64(),
        }
    }
}

/// What one flush commits: a WAL object and the chunks in it, stored under
/// `log/commits/<object id>`. Its revision in the store orders it among all commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRecord {
    /// The object's path in the bucket, relative to the store's root.
    pub object: String,
    pub object_size: u64,
    pub chunks: Vec<Chunk>,
}

impl CommitRecord {
    /// Layout: `u16 version`, `u16 path length`, path, `u64 object size`, `u32 chunk count`,
    /// then per chunk: 16-byte topic id, `u32 partition`, `u64 position`, `u32 size`,
    /// `u32 records`, `i64 max timestamp`.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(
            16 + self.object.len() + self.chunks.len() * Chunk::ENCODED_LEN,
        );
        b.put_u16(COMMIT_VERSION);
        b.put_u16(self.object.len() as u16);
        b.put_slice(self.object.as_bytes());
        b.put_u64(self.object_size);
        b.put_u32(self.chunks.len() as u32);
        for c in &self.chunks {
            c.encode_into(&mut b);
        }
        b.freeze()
    }

    pub fn decode(mut b: &[u8]) -> Result<Self, RecordError> {
        let short = || RecordError::Malformed {
            what: "commit record",
            reason: "truncated".into(),
        };
        if b.remaining() < 4 {
            return Err(short());
        }
        let version = b.get_u16();
        if version != COMMIT_VERSION {
            return Err(RecordError::Version {
                what: "commit record",
                version,
            });
        }
        let n = b.get_u16() as usize;
        if b.remaining() < n + 12 {
            return Err(short());
        }
        let object = String::from_utf8(b[..n].to_vec()).map_err(|e| RecordError::Malformed {
            what: "commit record",
            reason: e.to_string(),
        })?;
        b.advance(n);
        let object_size = b.get_u64();
        let count = b.get_u32() as usize;
        if b.remaining() != count * Chunk::ENCODED_LEN {
            return Err(short());
        }
        let chunks = (0..count).map(|_| Chunk::decode_from(&mut b)).collect();
        Ok(Self {
            object,
            object_size,
            chunks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::check_golden;

    fn sample_commit() -> CommitRecord {
        CommitRecord {
            object: "wal/0190c4e0-0000-7000-8000-000000000001.wal".into(),
            object_size: 4096,
            chunks: vec![
                Chunk {
                    topic_id: Uuid::from_u128(0x1234),
                    partition: 0,
                    position: 10,
                    size: 100,
                    records: 5,
                    max_timestamp: 1_700_000_000_000,
                },
                Chunk {
                    topic_id: Uuid::from_u128(0x5678),
                    partition: 3,
                    position: 110,
                    size: 70,
                    records: 1,
                    max_timestamp: -1,
                },
            ],
        }
    }

    #[test]
    fn commit_record_golden_v1() {
        let golden = check_golden("commit-v1.bin", &sample_commit().encode());
        assert_eq!(
            CommitRecord::decode(&golden).expect("decode"),
            sample_commit()
        );
    }

    #[test]
    fn topic_record_golden_v1() {
        let t = TopicRecord {
            v: TOPIC_VERSION,
            id: Uuid::from_u128(0xabc),
            name: "orders".into(),
            partitions: 3,
            configs: [("retention.ms".to_string(), "1000".to_string())].into(),
        };
        let golden = check_golden("topic-v1.json", &t.encode());
        assert_eq!(TopicRecord::decode(&golden).expect("decode"), t);
    }

    #[test]
    fn unknown_versions_and_truncation_are_errors() {
        let mut b = sample_commit().encode().to_vec();
        b[1] = 9;
        assert!(matches!(
            CommitRecord::decode(&b),
            Err(RecordError::Version { version: 9, .. })
        ));
        let b = sample_commit().encode();
        assert!(CommitRecord::decode(&b[..b.len() - 1]).is_err());
        assert!(TopicRecord::decode(br#"{"v":2}"#).is_err());
    }
}
