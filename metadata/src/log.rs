//! The commit log's state machine.
//!
//! Every gateway applies the same events (topic records and commit records under
//! [`keys::LOG_PREFIX`]) in the store's revision order, so every gateway derives the same
//! offsets: a commit's chunk for a partition starts at that partition's high watermark at
//! the moment the commit is applied. No gateway ever compares-and-swaps a watermark, so
//! gateways writing the same partition never conflict.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use uuid::Uuid;

use crate::keys;
use crate::records::{CommitRecord, RecordError, TopicRecord};
use crate::store::{EventKind, Revision, WatchEvent};

/// Where a run of offsets lives: a chunk of a WAL object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub base_offset: i64,
    pub records: u32,
    pub object: Arc<str>,
    pub object_size: u64,
    pub position: u64,
    pub size: u32,
    pub max_timestamp: i64,
}

impl IndexEntry {
    /// One past the last offset in the entry.
    pub fn end_offset(&self) -> i64 {
        self.base_offset + i64::from(self.records)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionLog {
    pub log_start_offset: i64,
    pub high_watermark: i64,
    /// Sorted by offset, contiguous.
    pub entries: Vec<IndexEntry>,
}

impl PartitionLog {
    /// The entries holding `offset` and everything after it.
    pub fn entries_from(&self, offset: i64) -> &[IndexEntry] {
        let i = self.entries.partition_point(|e| e.end_offset() <= offset);
        &self.entries[i..]
    }

    /// The first entry whose newest record is at least `timestamp`: where a search by
    /// timestamp must look.
    pub fn first_entry_at_or_after(&self, timestamp: i64) -> Option<&IndexEntry> {
        self.entries.iter().find(|e| e.max_timestamp >= timestamp)
    }

    /// The entry holding the partition's largest timestamp (the latest one on ties).
    pub fn entry_with_max_timestamp(&self) -> Option<&IndexEntry> {
        self.entries.iter().rev().max_by_key(|e| e.max_timestamp)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicState {
    pub record: TopicRecord,
    pub partitions: Vec<PartitionLog>,
}

/// What applying one event changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    TopicChanged {
        name: String,
    },
    TopicDeleted {
        name: String,
    },
    /// A commit: the base offset of each chunk, in order (`None` where the topic or
    /// partition no longer exists, so the chunk takes no offsets).
    Commit {
        /// The commit's id: its key without the commits prefix (the WAL object's id).
        id: String,
        revision: Revision,
        bases: Vec<Option<i64>>,
        partitions: Vec<(Uuid, u32)>,
    },
    /// An event the log does not act on (removal of an old commit record).
    Nothing,
}

#[derive(Debug, Clone, Default)]
pub struct LogState {
    revision: Revision,
    topics: BTreeMap<String, TopicState>,
    ids: HashMap<Uuid, String>,
}

impl LogState {
    /// The revision of the last applied event.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    pub fn topics(&self) -> impl Iterator<Item = &TopicState> {
        self.topics.values()
    }

    pub fn topic(&self, name: &str) -> Option<&TopicState> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&TopicState> {
        self.ids.get(id).and_then(|n| self.topics.get(n))
    }

    pub fn partition(&self, topic_id: &Uuid, partition: u32) -> Option<&PartitionLog> {
        self.topic_by_id(topic_id)?
            .partitions
            .get(partition as usize)
    }

    /// Applies one event of the log, in revision order.
    pub fn apply(&mut self, event: &WatchEvent) -> Result<Applied, RecordError> {
        let revision = event.kv.mod_revision;
        if revision > self.revision {
            self.revision = revision;
        }
        let key = std::str::from_utf8(&event.kv.key).map_err(|_| RecordError::Malformed {
            what: "log key",
            reason: "not utf-8".into(),
        })?;
        if let Some(name) = key.strip_prefix(keys::TOPICS_PREFIX) {
            return Ok(match event.kind {
                EventKind::Put => {
                    self.put_topic(TopicRecord::decode(&event.kv.value)?);
                    Applied::TopicChanged {
                        name: name.to_string(),
                    }
                }
                EventKind::Delete => {
                    if let Some(t) = self.topics.remove(name) {
                        self.ids.remove(&t.record.id);
                    }
                    Applied::TopicDeleted {
                        name: name.to_string(),
                    }
                }
            });
        }
        if let Some(id) = key.strip_prefix(keys::COMMITS_PREFIX) {
            if event.kind == EventKind::Delete {
                return Ok(Applied::Nothing);
            }
            let commit = CommitRecord::decode(&event.kv.value)?;
            return Ok(self.apply_commit(id.to_string(), revision, commit));
        }
        Ok(Applied::Nothing)
    }

    fn put_topic(&mut self, record: TopicRecord) {
        match self.topics.get_mut(&record.name) {
            Some(t) if t.record.id == record.id => {
                let n = record.partitions as usize;
                if t.partitions.len() < n {
                    t.partitions.resize_with(n, PartitionLog::default);
                }
                t.record = record;
            }
            _ => {
                if let Some(old) = self.topics.remove(&record.name) {
                    self.ids.remove(&old.record.id);
                }
                self.ids.insert(record.id, record.name.clone());
                let partitions = vec![PartitionLog::default(); record.partitions as usize];
                self.topics
                    .insert(record.name.clone(), TopicState { record, partitions });
            }
        }
    }

    fn apply_commit(&mut self, key: String, revision: Revision, commit: CommitRecord) -> Applied {
        let object: Arc<str> = Arc::from(commit.object.as_str());
        let mut bases = Vec::with_capacity(commit.chunks.len());
        let mut partitions = Vec::new();
        for c in &commit.chunks {
            let log = self
                .ids
                .get(&c.topic_id)
                .and_then(|n| self.topics.get_mut(n))
                .and_then(|t| t.partitions.get_mut(c.partition as usize));
            let Some(log) = log else {
                bases.push(None);
                continue;
            };
            let base = log.high_watermark;
            log.entries.push(IndexEntry {
                base_offset: base,
                records: c.records,
                object: object.clone(),
                object_size: commit.object_size,
                position: c.position,
                size: c.size,
                max_timestamp: c.max_timestamp,
            });
            log.high_watermark += i64::from(c.records);
            bases.push(Some(base));
            partitions.push((c.topic_id, c.partition));
        }
        Applied::Commit {
            id: key,
            revision,
            bases,
            partitions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{Chunk, TOPIC_VERSION};
    use crate::store::KeyValue;
    use bytes::Bytes;

    fn event(kind: EventKind, key: String, value: Bytes, rev: Revision) -> WatchEvent {
        WatchEvent {
            kind,
            kv: KeyValue {
                key: Bytes::from(key),
                value,
                create_revision: rev,
                mod_revision: rev,
                version: 1,
                lease: None,
            },
        }
    }

    fn topic(id: u128, partitions: u32) -> TopicRecord {
        TopicRecord {
            v: TOPIC_VERSION,
            id: Uuid::from_u128(id),
            name: "t".into(),
            partitions,
            configs: Default::default(),
        }
    }

    fn commit(topic: u128, parts: &[(u32, u32)]) -> Bytes {
        CommitRecord {
            object: "wal/x".into(),
            object_size: 1000,
            chunks: parts
                .iter()
                .map(|&(partition, records)| Chunk {
                    topic_id: Uuid::from_u128(topic),
                    partition,
                    position: 0,
                    size: 10,
                    records,
                    max_timestamp: i64::from(records),
                })
                .collect(),
        }
        .encode()
    }

    #[test]
    fn commits_assign_dense_offsets_in_order() {
        let mut s = LogState::default();
        s.apply(&event(
            EventKind::Put,
            keys::topic("t"),
            topic(1, 2).encode(),
            1,
        ))
        .expect("apply");
        let a = s
            .apply(&event(
                EventKind::Put,
                keys::commit("a"),
                commit(1, &[(0, 3), (1, 2)]),
                2,
            ))
            .expect("apply");
        let b = s
            .apply(&event(
                EventKind::Put,
                keys::commit("b"),
                commit(1, &[(0, 4), (5, 1)]),
                3,
            ))
            .expect("apply");
        assert!(matches!(a, Applied::Commit { ref bases, .. } if bases == &[Some(0), Some(0)]));
        assert!(matches!(b, Applied::Commit { ref bases, .. } if bases == &[Some(3), None]));
        let p0 = s.partition(&Uuid::from_u128(1), 0).expect("partition");
        assert_eq!(p0.high_watermark, 7);
        assert_eq!(p0.entries_from(2).len(), 2);
        assert_eq!(p0.entries_from(3).len(), 1);
        assert_eq!(p0.entries_from(7).len(), 0);
        assert_eq!(
            p0.first_entry_at_or_after(4).map(|e| e.base_offset),
            Some(3)
        );
        assert_eq!(s.revision(), 3);
    }

    #[test]
    fn recreated_topic_starts_empty_and_old_commits_are_ignored() {
        let mut s = LogState::default();
        s.apply(&event(
            EventKind::Put,
            keys::topic("t"),
            topic(1, 1).encode(),
            1,
        ))
        .expect("apply");
        s.apply(&event(
            EventKind::Put,
            keys::commit("a"),
            commit(1, &[(0, 3)]),
            2,
        ))
        .expect("apply");
        s.apply(&event(EventKind::Delete, keys::topic("t"), Bytes::new(), 3))
            .expect("apply");
        s.apply(&event(
            EventKind::Put,
            keys::topic("t"),
            topic(2, 1).encode(),
            4,
        ))
        .expect("apply");
        let late = s
            .apply(&event(
                EventKind::Put,
                keys::commit("b"),
                commit(1, &[(0, 3)]),
                5,
            ))
            .expect("apply");
        assert!(matches!(late, Applied::Commit { ref bases, .. } if bases == &[None]));
        assert_eq!(
            s.partition(&Uuid::from_u128(2), 0)
                .map(|p| p.high_watermark),
            Some(0)
        );
        // Growing the partition count keeps existing partitions.
        s.apply(&event(
            EventKind::Put,
            keys::commit("c"),
            commit(2, &[(0, 2)]),
            6,
        ))
        .expect("apply");
        s.apply(&event(
            EventKind::Put,
            keys::topic("t"),
            topic(2, 3).encode(),
            7,
        ))
        .expect("apply");
        let t = s.topic("t").expect("topic");
        assert_eq!(t.partitions.len(), 3);
        assert_eq!(t.partitions[0].high_watermark, 2);
    }
}
