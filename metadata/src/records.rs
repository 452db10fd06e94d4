//! Values stored in metadata. Every format carries a version and has a golden test.
//!
//! Topics are JSON (small, rare, readable with `etcdctl`). Commit records are written on
//! every flush, so they use a compact binary encoding.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

mod compaction;
pub use compaction::*;

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

/// Commit records are written at version 3; versions 1 (no per-batch list) and 2 (no
/// object digest) still decode.
pub const COMMIT_VERSION: u16 = 3;

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

/// One record batch of a chunk, as its header says: what the log needs to place it and,
/// for idempotent producers, to check its sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub size: u32,
    pub records: u32,
    pub max_timestamp: i64,
    /// -1 unless the producer is idempotent.
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl BatchMeta {
    /// `u32 size`, `u32 records`, `i64 max timestamp`, `i64 producer id`, `i16 epoch`,
    /// `i32 base sequence`.
    pub const ENCODED_LEN: usize = 30;

    fn encode_into(&self, b: &mut impl BufMut) {
        b.put_u32(self.size);
        b.put_u32(self.records);
        b.put_i64(self.max_timestamp);
        b.put_i64(self.producer_id);
        b.put_i16(self.producer_epoch);
        b.put_i32(self.base_sequence);
    }

    fn decode_from(b: &mut impl Buf) -> Self {
        Self {
            size: b.get_u32(),
            records: b.get_u32(),
            max_timestamp: b.get_i64(),
            producer_id: b.get_i64(),
            producer_epoch: b.get_i16(),
            base_sequence: b.get_i32(),
        }
    }
}

/// A chunk and its batches, in order; their sizes add up to the chunk's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitChunk {
    pub chunk: Chunk,
    pub batches: Vec<BatchMeta>,
}

/// What one flush commits: a WAL object and the chunks in it, stored under
/// `log/commits/<object id>`. Its revision in the store orders it among all commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRecord {
    /// The object's path in the bucket, relative to the store's root.
    pub object: String,
    pub object_size: u64,
    /// SHA-256 of the object, for objects handed to other gateways before their commit
    /// (see the gateway's `peers`): a receiver caches the bytes only if they hash to it.
    pub digest: Option<[u8; 32]>,
    pub chunks: Vec<CommitChunk>,
}

impl CommitRecord {
    /// Layout (version 3): `u16 version`, `u16 path length`, path, `u64 object size`,
    /// `u8 1` and the 32-byte digest or `u8 0`, `u32 chunk count`, then per chunk: the chunk
    /// (see [`Chunk::ENCODED_LEN`]), `u32 batch count`, and each batch (see
    /// [`BatchMeta::ENCODED_LEN`]). Version 2 had no digest; version 1 no batch count or
    /// batches either.
    pub fn encode(&self) -> Bytes {
        let batches: usize = self.chunks.iter().map(|c| c.batches.len()).sum();
        let mut b = BytesMut::with_capacity(
            49 + self.object.len()
                + self.chunks.len() * (Chunk::ENCODED_LEN + 4)
                + batches * BatchMeta::ENCODED_LEN,
        );
        b.put_u16(COMMIT_VERSION);
        b.put_u16(self.object.len() as u16);
        b.put_slice(self.object.as_bytes());
        b.put_u64(self.object_size);
        match &self.digest {
            Some(d) => {
                b.put_u8(1);
                b.put_slice(d);
            }
            None => b.put_u8(0),
        }
        b.put_u32(self.chunks.len() as u32);
        for c in &self.chunks {
            c.chunk.encode_into(&mut b);
            b.put_u32(c.batches.len() as u32);
            for m in &c.batches {
                m.encode_into(&mut b);
            }
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
        if !(1..=3).contains(&version) {
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
        let digest = if version >= 3 {
            if b.remaining() < 1 {
                return Err(short());
            }
            match b.get_u8() {
                0 => None,
                1 if b.remaining() >= 32 => {
                    let mut d = [0u8; 32];
                    b.copy_to_slice(&mut d);
                    Some(d)
                }
                1 => return Err(short()),
                other => {
                    return Err(RecordError::Malformed {
                        what: "commit record",
                        reason: format!("digest flag {other}"),
                    });
                }
            }
        } else {
            None
        };
        if b.remaining() < 4 {
            return Err(short());
        }
        let count = b.get_u32() as usize;
        let mut chunks = Vec::with_capacity(count.min(1 << 16));
        for _ in 0..count {
            if b.remaining() < Chunk::ENCODED_LEN {
                return Err(short());
            }
            let chunk = Chunk::decode_from(&mut b);
            let batches = if version == 1 {
                // Version 1 knew no producers: the chunk is one run of plain batches.
                vec![BatchMeta {
                    size: chunk.size,
                    records: chunk.records,
                    max_timestamp: chunk.max_timestamp,
                    producer_id: -1,
                    producer_epoch: -1,
                    base_sequence: -1,
                }]
            } else {
                if b.remaining() < 4 {
                    return Err(short());
                }
                let n = b.get_u32() as usize;
                if b.remaining() < n * BatchMeta::ENCODED_LEN {
                    return Err(short());
                }
                (0..n).map(|_| BatchMeta::decode_from(&mut b)).collect()
            };
            let (size, records) = batches.iter().fold((0u64, 0u64), |(s, r), m| {
                (s + u64::from(m.size), r + u64::from(m.records))
            });
            if size != u64::from(chunk.size) || records != u64::from(chunk.records) {
                return Err(RecordError::Malformed {
                    what: "commit record",
                    reason: "batches do not add up to their chunk".into(),
                });
            }
            chunks.push(CommitChunk { chunk, batches });
        }
        if b.has_remaining() {
            return Err(RecordError::Malformed {
                what: "commit record",
                reason: "trailing bytes".into(),
            });
        }
        Ok(Self {
            object,
            object_size,
            digest,
            chunks,
        })
    }
}

pub const GROUP_VERSION: u16 = 1;

/// One member of a consumer group as last persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMemberRecord {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    /// The member's metadata for the group's protocol.
    pub metadata: Vec<u8>,
    pub assignment: Vec<u8>,
}

/// A consumer group's state, stored under `groups/<group>/state` by its coordinator
/// whenever a generation completes, so another gateway can take the group over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub v: u16,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub generation: i32,
    pub leader: Option<String>,
    /// `Empty` or `Stable`: the states a persisted group can be in.
    pub state: String,
    pub members: Vec<GroupMemberRecord>,
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetRecord {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_timestamp: i64,
}

/// A group's committed offsets for one topic, stored under `groups/<group>/offsets/<topic>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicOffsetsRecord {
    pub v: u16,
    pub partitions: BTreeMap<i32, OffsetRecord>,
}

pub const OFFSETS_VERSION: u16 = 1;

fn encode_json<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("invariant: metadata records always serialize"))
}

fn decode_json<T: for<'de> Deserialize<'de>>(
    b: &[u8],
    what: &'static str,
    expected: u16,
) -> Result<T, RecordError> {
    #[derive(Deserialize)]
    struct Probe {
        v: u16,
    }
    let probe: Probe = serde_json::from_slice(b).map_err(|e| RecordError::Malformed {
        what,
        reason: e.to_string(),
    })?;
    if probe.v != expected {
        return Err(RecordError::Version {
            what,
            version: probe.v,
        });
    }
    serde_json::from_slice(b).map_err(|e| RecordError::Malformed {
        what,
        reason: e.to_string(),
    })
}

impl GroupRecord {
    pub fn encode(&self) -> Bytes {
        encode_json(self)
    }
    pub fn decode(b: &[u8]) -> Result<Self, RecordError> {
        decode_json(b, "group record", GROUP_VERSION)
    }
}

impl TopicOffsetsRecord {
    pub fn encode(&self) -> Bytes {
        encode_json(self)
    }
    pub fn decode(b: &[u8]) -> Result<Self, RecordError> {
        decode_json(b, "offsets record", OFFSETS_VERSION)
    }
}

pub const USER_VERSION: u16 = 1;

/// One SCRAM credential of a user (RFC 5802): never the password, only what verifies it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredentialRecord {
    /// `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: String,
    pub iterations: u32,
    pub salt: Vec<u8>,
    /// H(HMAC(SaltedPassword, "Client Key")).
    pub stored_key: Vec<u8>,
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: Vec<u8>,
}

/// A user of the one user store Kafka SASL and MQTT share, under `users/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub v: u16,
    /// At most one per mechanism.
    pub scram: Vec<ScramCredentialRecord>,
}

impl UserRecord {
    pub fn encode(&self) -> Bytes {
        encode_json(self)
    }
    pub fn decode(b: &[u8]) -> Result<Self, RecordError> {
        decode_json(b, "user record", USER_VERSION)
    }
}

pub const ACL_VERSION: u16 = 1;

/// One ACL binding, as Kafka's model has it, under `acls/<digest of the binding>` (so one
/// binding is stored once). Names are Kafka's: `resource_type` `Topic`, `Group`, `Cluster`
/// or `TransactionalId`; `pattern` `Literal` or `Prefixed`; `principal` `User:NAME` or
/// `User:*`; `host` an address or `*`; `operation` `All`, `Read`, `Write`, `Create`,
/// `Delete`, `Alter`, `Describe`, `ClusterAction`, `DescribeConfigs`, `AlterConfigs` or
/// `IdempotentWrite`; `permission` `Allow` or `Deny`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AclRecord {
    pub v: u16,
    pub resource_type: String,
    pub resource_name: String,
    pub pattern: String,
    pub principal: String,
    pub host: String,
    pub operation: String,
    pub permission: String,
}

impl AclRecord {
    pub fn encode(&self) -> Bytes {
        encode_json(self)
    }
    pub fn decode(b: &[u8]) -> Result<Self, RecordError> {
        decode_json(b, "ACL record", ACL_VERSION)
    }
}

pub const QUOTA_VERSION: u16 = 1;

/// One client quota entity's values, as Kafka's `AlterClientQuotas` sets them, under
/// `quotas/<entity>` (see [`crate::keys::quota`]). `entity` lists its components in
/// Kafka's names (`user`, `client-id`), each with a name or none for the type's default;
/// `values` maps Kafka's quota keys (`producer_byte_rate`, `consumer_byte_rate`) to bytes
/// per second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotaRecord {
    pub v: u16,
    pub entity: Vec<QuotaEntityRecord>,
    pub values: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QuotaEntityRecord {
    pub entity_type: String,
    /// `None`: the default of this type.
    pub name: Option<String>,
}

impl QuotaRecord {
    pub fn encode(&self) -> Bytes {
        encode_json(self)
    }
    pub fn decode(b: &[u8]) -> Result<Self, RecordError> {
        decode_json(b, "quota record", QUOTA_VERSION)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::check_golden;

    #[test]
    fn quota_record_golden_v1() {
        let q = QuotaRecord {
            v: QUOTA_VERSION,
            entity: vec![
                QuotaEntityRecord {
                    entity_type: "user".into(),
                    name: Some("alice".into()),
                },
                QuotaEntityRecord {
                    entity_type: "client-id".into(),
                    name: None,
                },
            ],
            values: BTreeMap::from([
                ("consumer_byte_rate".into(), 2097152.0),
                ("producer_byte_rate".into(), 1048576.0),
            ]),
        };
        let golden = check_golden("quota-v1.json", &q.encode());
        assert_eq!(QuotaRecord::decode(&golden).expect("decode"), q);
        assert!(QuotaRecord::decode(br#"{"v":2}"#).is_err());
    }

    #[test]
    fn acl_record_golden_v1() {
        let a = AclRecord {
            v: ACL_VERSION,
            resource_type: "Topic".into(),
            resource_name: "orders-".into(),
            pattern: "Prefixed".into(),
            principal: "User:alice".into(),
            host: "*".into(),
            operation: "Write".into(),
            permission: "Allow".into(),
        };
        let golden = check_golden("acl-v1.json", &a.encode());
        assert_eq!(AclRecord::decode(&golden).expect("decode"), a);
        assert!(AclRecord::decode(br#"{"v":2}"#).is_err());
    }

    fn plain(size: u32, records: u32, max_timestamp: i64) -> BatchMeta {
        BatchMeta {
            size,
            records,
            max_timestamp,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        }
    }

    fn chunks_v1() -> Vec<Chunk> {
        vec![
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
        ]
    }

    fn sample_commit() -> CommitRecord {
        let [a, b] = <[Chunk; 2]>::try_from(chunks_v1()).expect("two chunks");
        CommitRecord {
            object: "wal/0190c4e0-0000-7000-8000-000000000001.wal".into(),
            object_size: 4096,
            digest: None,
            chunks: vec![
                CommitChunk {
                    chunk: a,
                    batches: vec![
                        plain(60, 3, 1_699_999_999_000),
                        BatchMeta {
                            size: 40,
                            records: 2,
                            max_timestamp: 1_700_000_000_000,
                            producer_id: 7,
                            producer_epoch: 1,
                            base_sequence: 42,
                        },
                    ],
                },
                CommitChunk {
                    chunk: b,
                    batches: vec![plain(70, 1, -1)],
                },
            ],
        }
    }

    /// Version 1 records, written by earlier builds, still decode: one plain batch per chunk.
    #[test]
    fn commit_record_golden_v1_still_decodes() {
        let golden = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/commit-v1.bin"),
        )
        .expect("golden file");
        let decoded = CommitRecord::decode(&golden).expect("decode");
        let chunks: Vec<Chunk> = decoded.chunks.iter().map(|c| c.chunk).collect();
        assert_eq!(chunks, chunks_v1());
        assert_eq!(
            decoded.chunks[0].batches,
            vec![plain(100, 5, 1_700_000_000_000)]
        );
    }

    /// Version 2 records (no digest) still decode.
    #[test]
    fn commit_record_golden_v2_still_decodes() {
        let golden = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/commit-v2.bin"),
        )
        .expect("golden file");
        assert_eq!(
            CommitRecord::decode(&golden).expect("decode"),
            sample_commit()
        );
    }

    #[test]
    fn commit_record_golden_v3() {
        let with_digest = CommitRecord {
            digest: Some(std::array::from_fn(|i| i as u8)),
            ..sample_commit()
        };
        let golden = check_golden("commit-v3.bin", &with_digest.encode());
        assert_eq!(CommitRecord::decode(&golden).expect("decode"), with_digest);
        // Without a digest.
        let b = sample_commit().encode();
        assert_eq!(CommitRecord::decode(&b).expect("decode"), sample_commit());
        let mut bad_flag = b.to_vec();
        let at = 2 + 2 + sample_commit().object.len() + 8;
        bad_flag[at] = 2;
        assert!(CommitRecord::decode(&bad_flag).is_err());
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
    fn group_records_golden_v1() {
        let g = GroupRecord {
            v: GROUP_VERSION,
            protocol_type: Some("consumer".into()),
            protocol: Some("range".into()),
            generation: 3,
            leader: Some("c-1".into()),
            state: "Stable".into(),
            members: vec![GroupMemberRecord {
                member_id: "c-1".into(),
                instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                session_timeout_ms: 45000,
                rebalance_timeout_ms: 300000,
                metadata: vec![0, 1, 2],
                assignment: vec![3, 4],
            }],
        };
        let golden = check_golden("group-v1.json", &g.encode());
        assert_eq!(GroupRecord::decode(&golden).expect("decode"), g);
        let o = TopicOffsetsRecord {
            v: OFFSETS_VERSION,
            partitions: [(
                0,
                OffsetRecord {
                    offset: 42,
                    leader_epoch: -1,
                    metadata: Some("m".into()),
                    commit_timestamp: 1_700_000_000_000,
                },
            )]
            .into(),
        };
        let golden = check_golden("offsets-v1.json", &o.encode());
        assert_eq!(TopicOffsetsRecord::decode(&golden).expect("decode"), o);
    }

    #[test]
    fn user_record_golden_v1() {
        let u = UserRecord {
            v: USER_VERSION,
            scram: vec![ScramCredentialRecord {
                mechanism: "SCRAM-SHA-256".into(),
                iterations: 8192,
                salt: vec![1, 2, 3, 4],
                stored_key: vec![5; 32],
                server_key: vec![6; 32],
            }],
        };
        let golden = check_golden("user-v1.json", &u.encode());
        assert_eq!(UserRecord::decode(&golden).expect("decode"), u);
        assert!(UserRecord::decode(br#"{"v":2,"scram":[]}"#).is_err());
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
