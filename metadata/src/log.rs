//! The commit log's state machine.
//!
//! Every gateway applies the same events (topic records and commit records under
//! [`keys::LOG_PREFIX`]) in the store's revision order, so every gateway derives the same
//! offsets: a commit's chunk for a partition starts at that partition's high watermark at
//! the moment the commit is applied. No gateway ever compares-and-swaps a watermark, so
//! gateways writing the same partition never conflict.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use uuid::Uuid;

use crate::keys;
use crate::records::{BatchMeta, CommitRecord, RecordError, TopicRecord};
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

/// Batches of one producer the log remembers, to recognise retries: as many as a producer
/// may have in flight.
const PRODUCER_BATCHES_KEPT: usize = 5;

/// What the log knows of one idempotent producer on one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerState {
    pub epoch: i16,
    /// `(first sequence, last sequence, base offset)` of its latest batches, oldest first.
    pub batches: VecDeque<(i32, i32, i64)>,
}

/// The sequence number after `seq`, wrapping as Kafka's do.
fn next_sequence(seq: i32) -> i32 {
    if seq == i32::MAX { 0 } else { seq + 1 }
}

/// The last sequence of a batch of `records` starting at `first`.
fn last_sequence(first: i32, records: u32) -> i32 {
    let span = i64::from(records.max(1)) - 1;
    ((i64::from(first) + span) % (i64::from(i32::MAX) + 1)) as i32
}

/// Where a batch went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Appended at this base offset.
    Appended(i64),
    /// A retry of a batch already in the log at this base offset: not appended again.
    Duplicate(i64),
    /// Its sequence does not follow the producer's last one.
    OutOfOrderSequence,
    /// Its producer epoch is older than the producer's current one.
    InvalidProducerEpoch,
    /// The topic or partition no longer exists.
    Gone,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionLog {
    pub log_start_offset: i64,
    pub high_watermark: i64,
    /// Sorted by offset, contiguous.
    pub entries: Vec<IndexEntry>,
    /// Idempotent producers by id.
    pub producers: HashMap<i64, ProducerState>,
}

impl PartitionLog {
    /// Decides where an idempotent producer's batch goes, as Apache Kafka does: an older
    /// epoch is fenced; a new epoch must start at sequence 0; within an epoch a batch must
    /// continue the last sequence or repeat one of the latest batches (a retry).
    fn check_sequence(&self, b: &BatchMeta) -> BatchOutcome {
        let Some(p) = self.producers.get(&b.producer_id) else {
            // A producer the log does not know (new, or its state is gone): accept.
            return BatchOutcome::Appended(self.high_watermark);
        };
        if b.producer_epoch < p.epoch {
            return BatchOutcome::InvalidProducerEpoch;
        }
        if b.producer_epoch > p.epoch {
            return if b.base_sequence == 0 {
                BatchOutcome::Appended(self.high_watermark)
            } else {
                BatchOutcome::OutOfOrderSequence
            };
        }
        let last = last_sequence(b.base_sequence, b.records);
        if let Some(&(_, _, base)) = p
            .batches
            .iter()
            .find(|(f, l, _)| *f == b.base_sequence && *l == last)
        {
            return BatchOutcome::Duplicate(base);
        }
        match p.batches.back() {
            Some(&(_, prev_last, _)) if b.base_sequence != next_sequence(prev_last) => {
                BatchOutcome::OutOfOrderSequence
            }
            _ => BatchOutcome::Appended(self.high_watermark),
        }
    }

    fn record_producer(&mut self, b: &BatchMeta, base: i64) {
        let entry = self
            .producers
            .entry(b.producer_id)
            .or_insert_with(|| ProducerState {
                epoch: b.producer_epoch,
                batches: VecDeque::new(),
            });
        if entry.epoch != b.producer_epoch {
            entry.epoch = b.producer_epoch;
            entry.batches.clear();
        }
        entry.batches.push_back((
            b.base_sequence,
            last_sequence(b.base_sequence, b.records),
            base,
        ));
        while entry.batches.len() > PRODUCER_BATCHES_KEPT {
            entry.batches.pop_front();
        }
    }

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
    /// A commit: where each batch of each chunk went, in order.
    Commit {
        /// The commit's id: its key without the commits prefix (the WAL object's id).
        id: String,
        revision: Revision,
        outcomes: Vec<Vec<BatchOutcome>>,
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
        let mut outcomes = Vec::with_capacity(commit.chunks.len());
        let mut partitions = Vec::new();
        for c in &commit.chunks {
            let log = self
                .ids
                .get(&c.chunk.topic_id)
                .and_then(|n| self.topics.get_mut(n))
                .and_then(|t| t.partitions.get_mut(c.chunk.partition as usize));
            let Some(log) = log else {
                outcomes.push(vec![BatchOutcome::Gone; c.batches.len()]);
                continue;
            };
            let mut results = Vec::with_capacity(c.batches.len());
            let mut position = c.chunk.position;
            // Accepted batches that sit next to each other share one index entry.
            let mut run_end: Option<u64> = None;
            for b in &c.batches {
                let outcome = if b.producer_id >= 0 {
                    log.check_sequence(b)
                } else {
                    BatchOutcome::Appended(log.high_watermark)
                };
                if let BatchOutcome::Appended(base) = outcome {
                    match (run_end == Some(position), log.entries.last_mut()) {
                        (true, Some(e)) => {
                            e.records += b.records;
                            e.size += b.size;
                            e.max_timestamp = e.max_timestamp.max(b.max_timestamp);
                        }
                        _ => log.entries.push(IndexEntry {
                            base_offset: base,
                            records: b.records,
                            object: object.clone(),
                            object_size: commit.object_size,
                            position,
                            size: b.size,
                            max_timestamp: b.max_timestamp,
                        }),
                    }
                    run_end = Some(position + u64::from(b.size));
                    log.high_watermark += i64::from(b.records);
                    if b.producer_id >= 0 {
                        log.record_producer(b, base);
                    }
                }
                results.push(outcome);
                position += u64::from(b.size);
            }
            outcomes.push(results);
            partitions.push((c.chunk.topic_id, c.chunk.partition));
        }
        Applied::Commit {
            id: key,
            revision,
            outcomes,
            partitions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{Chunk, CommitChunk, TOPIC_VERSION};
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

    /// A plain (non-idempotent) batch of `records` records.
    fn plain(records: u32) -> BatchMeta {
        BatchMeta {
            size: 10,
            records,
            max_timestamp: i64::from(records),
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        }
    }

    fn idem(producer_id: i64, epoch: i16, base_sequence: i32, records: u32) -> BatchMeta {
        BatchMeta {
            producer_id,
            producer_epoch: epoch,
            base_sequence,
            ..plain(records)
        }
    }

    fn commit_batches(topic: u128, parts: &[(u32, Vec<BatchMeta>)]) -> Bytes {
        CommitRecord {
            object: "wal/x".into(),
            object_size: 1000,
            chunks: parts
                .iter()
                .map(|(partition, batches)| CommitChunk {
                    chunk: Chunk {
                        topic_id: Uuid::from_u128(topic),
                        partition: *partition,
                        position: 0,
                        size: batches.iter().map(|b| b.size).sum(),
                        records: batches.iter().map(|b| b.records).sum(),
                        max_timestamp: batches.iter().map(|b| b.max_timestamp).max().unwrap_or(-1),
                    },
                    batches: batches.clone(),
                })
                .collect(),
        }
        .encode()
    }

    fn commit(topic: u128, parts: &[(u32, u32)]) -> Bytes {
        let parts: Vec<(u32, Vec<BatchMeta>)> =
            parts.iter().map(|&(p, r)| (p, vec![plain(r)])).collect();
        commit_batches(topic, &parts)
    }

    fn outcomes(a: Applied) -> Vec<Vec<BatchOutcome>> {
        match a {
            Applied::Commit { outcomes, .. } => outcomes,
            other => panic!("not a commit: {other:?}"),
        }
    }

    #[test]
    fn idempotent_batches_are_deduplicated_ordered_and_fenced() {
        use BatchOutcome::*;
        let mut s = LogState::default();
        s.apply(&event(
            EventKind::Put,
            keys::topic("t"),
            topic(1, 1).encode(),
            1,
        ))
        .expect("apply");
        let mut rev = 1;
        let mut apply = |batches: Vec<BatchMeta>| {
            rev += 1;
            outcomes(
                s.apply(&event(
                    EventKind::Put,
                    keys::commit(&rev.to_string()),
                    commit_batches(1, &[(0, batches)]),
                    rev,
                ))
                .expect("apply"),
            )
            .remove(0)
        };
        // Producer 7: seq 0..=2, then 3..=4; a retry of the first batch is a duplicate.
        assert_eq!(
            apply(vec![idem(7, 0, 0, 3), plain(1), idem(7, 0, 3, 2)]),
            vec![Appended(0), Appended(3), Appended(4)]
        );
        assert_eq!(apply(vec![idem(7, 0, 0, 3)]), vec![Duplicate(0)]);
        assert_eq!(
            apply(vec![idem(7, 0, 3, 2), idem(7, 0, 5, 1)]),
            vec![Duplicate(4), Appended(6)]
        );
        // A gap is out of order; nothing is appended.
        assert_eq!(apply(vec![idem(7, 0, 9, 1)]), vec![OutOfOrderSequence]);
        // A new epoch must start at 0; after it, the old epoch is fenced.
        assert_eq!(apply(vec![idem(7, 1, 4, 1)]), vec![OutOfOrderSequence]);
        assert_eq!(apply(vec![idem(7, 1, 0, 1)]), vec![Appended(7)]);
        assert_eq!(apply(vec![idem(7, 0, 6, 1)]), vec![InvalidProducerEpoch]);
        // Another producer is independent; an unknown producer may start anywhere.
        assert_eq!(apply(vec![idem(8, 0, 100, 2)]), vec![Appended(8)]);
        assert_eq!(
            apply(vec![idem(8, 0, 102, 1), idem(8, 0, 102, 1)]),
            vec![Appended(10), Duplicate(10)]
        );
        // Sequences wrap.
        assert_eq!(
            apply(vec![idem(9, 0, i32::MAX - 1, 2), idem(9, 0, 0, 1)]),
            vec![Appended(11), Appended(13)]
        );
        let p = s.partition(&Uuid::from_u128(1), 0).expect("partition");
        assert_eq!(p.high_watermark, 14);
        // Rejected batches left gaps in the chunk; index entries still cover every offset once.
        let mut next = 0;
        for e in &p.entries {
            assert_eq!(e.base_offset, next);
            next = e.end_offset();
        }
        assert_eq!(next, 14);
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
        use BatchOutcome::*;
        assert_eq!(outcomes(a), vec![vec![Appended(0)], vec![Appended(0)]]);
        assert_eq!(outcomes(b), vec![vec![Appended(3)], vec![Gone]]);
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
        assert_eq!(outcomes(late), vec![vec![BatchOutcome::Gone]]);
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
