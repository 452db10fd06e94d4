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
use crate::records::{
    BatchMeta, CommitRecord, LogStartRecord, RecordError, SegmentRecord, TopicRecord,
};
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

/// Where a run of offsets is read from: a Parquet segment or a chunk of a WAL object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span<'a> {
    Segment(&'a SegmentRecord),
    Wal(&'a IndexEntry),
}

impl Span<'_> {
    pub fn base_offset(&self) -> i64 {
        match self {
            Span::Segment(s) => s.base_offset,
            Span::Wal(e) => e.base_offset,
        }
    }
    pub fn end_offset(&self) -> i64 {
        match self {
            Span::Segment(s) => s.end_offset,
            Span::Wal(e) => e.end_offset(),
        }
    }
    pub fn max_timestamp(&self) -> i64 {
        match self {
            Span::Segment(s) => s.max_timestamp,
            Span::Wal(e) => e.max_timestamp,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionLog {
    pub log_start_offset: i64,
    pub high_watermark: i64,
    /// Compacted data, sorted by offset, contiguous, all before `entries`.
    pub segments: Vec<SegmentRecord>,
    /// Data still in WAL objects: sorted by offset, contiguous.
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

    /// The segment holding `offset`, if it is compacted.
    pub fn segment_for(&self, offset: i64) -> Option<&SegmentRecord> {
        let i = self.segments.partition_point(|s| s.end_offset <= offset);
        self.segments.get(i)
    }

    /// Where the partition's data lives, oldest first.
    pub fn spans(&self) -> impl DoubleEndedIterator<Item = Span<'_>> {
        self.segments
            .iter()
            .map(Span::Segment)
            .chain(self.entries.iter().map(Span::Wal))
    }

    /// The first span whose newest record is at least `timestamp`: where a search by
    /// timestamp must look.
    pub fn first_span_at_or_after(&self, timestamp: i64) -> Option<Span<'_>> {
        self.spans().find(|s| s.max_timestamp() >= timestamp)
    }

    /// The span holding the partition's largest timestamp (the latest one on ties).
    pub fn span_with_max_timestamp(&self) -> Option<Span<'_>> {
        self.spans().rev().max_by_key(|s| s.max_timestamp())
    }

    /// Where compacted data ends and WAL data begins.
    pub fn compacted_offset(&self) -> i64 {
        self.segments
            .last()
            .map_or(self.log_start_offset, |s| s.end_offset)
    }

    /// Bytes the partition holds, counted as Kafka counts a log: the size of its record
    /// batches (which compacted data had in WAL objects), whatever Parquet makes of them.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.wal_bytes).sum::<u64>() + self.wal_bytes()
    }

    /// Bytes still in WAL objects: what waits for compaction.
    pub fn wal_bytes(&self) -> u64 {
        self.entries.iter().map(|e| u64::from(e.size)).sum()
    }

    /// Swaps `[base, end)` from WAL entries to a segment, updates a known segment (its
    /// publication), or replaces the run of segments a merge rewrote. A record for a range
    /// a larger segment already holds (a member of a merge, seen again) changes nothing, so
    /// the outcome does not depend on the order segment records are applied in.
    fn apply_segment(&mut self, s: SegmentRecord) {
        if s.end_offset <= self.log_start_offset {
            return;
        }
        let covered = |k: &SegmentRecord| {
            k.base_offset <= s.base_offset
                && s.end_offset <= k.end_offset
                && (k.base_offset, k.end_offset) != (s.base_offset, s.end_offset)
        };
        if self.segments.iter().any(covered) {
            return;
        }
        // The segments it takes the place of: those within its range.
        let from = self
            .segments
            .partition_point(|k| k.base_offset < s.base_offset);
        let to = from
            + self.segments[from..]
                .iter()
                .take_while(|k| k.end_offset <= s.end_offset)
                .count();
        let compacted = self
            .entries
            .partition_point(|e| e.end_offset() <= s.end_offset);
        self.entries.drain(..compacted);
        self.segments.splice(from..to, [s]);
    }

    /// Moves the log start forward (never back, never past the high watermark) and drops
    /// what lies wholly before it.
    fn apply_start(&mut self, offset: i64) {
        let offset = offset.min(self.high_watermark);
        if offset <= self.log_start_offset {
            return;
        }
        self.log_start_offset = offset;
        self.segments.retain(|s| s.end_offset > offset);
        let gone = self.entries.partition_point(|e| e.end_offset() <= offset);
        self.entries.drain(..gone);
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
        /// The WAL object's path, and its digest when the commit has one.
        object: Arc<str>,
        digest: Option<[u8; 32]>,
    },
    /// A segment was committed or published, or the log start moved.
    Compaction {
        topic_id: Uuid,
        partition: u32,
    },
    /// An event the log does not act on (removal of an old commit record).
    Nothing,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
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

    /// Drops the topics `keep` says no to.
    pub fn retain_topics(&mut self, mut keep: impl FnMut(&str) -> bool) {
        let ids = &mut self.ids;
        self.topics.retain(|name, t| {
            let k = keep(name);
            if !k {
                ids.remove(&t.record.id);
            }
            k
        });
    }

    fn partition_mut(&mut self, topic_id: &Uuid, partition: u32) -> Option<&mut PartitionLog> {
        let name = self.ids.get(topic_id)?;
        self.topics
            .get_mut(name)?
            .partitions
            .get_mut(partition as usize)
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
        if event.kind == EventKind::Delete {
            // Segment records and commit records are removed once a checkpoint holds them.
            return Ok(Applied::Nothing);
        }
        if key.starts_with(keys::SEGMENTS_PREFIX) {
            let s = SegmentRecord::decode(&event.kv.value)?;
            let (topic_id, partition) = (s.topic_id, s.partition);
            return Ok(match self.partition_mut(&topic_id, partition) {
                Some(log) => {
                    log.apply_segment(s);
                    Applied::Compaction {
                        topic_id,
                        partition,
                    }
                }
                None => Applied::Nothing,
            });
        }
        if let Some(rest) = key.strip_prefix(keys::STARTS_PREFIX) {
            let start = LogStartRecord::decode(&event.kv.value)?;
            let parsed = rest
                .split_once('/')
                .and_then(|(t, p)| Some((Uuid::try_parse(t).ok()?, p.parse::<u32>().ok()?)));
            let Some((topic_id, partition)) = parsed else {
                return Err(RecordError::Malformed {
                    what: "log start key",
                    reason: rest.to_string(),
                });
            };
            return Ok(match self.partition_mut(&topic_id, partition) {
                Some(log) => {
                    log.apply_start(start.offset);
                    Applied::Compaction {
                        topic_id,
                        partition,
                    }
                }
                None => Applied::Nothing,
            });
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
            object,
            digest: commit.digest,
        }
    }
}

mod checkpoint;
pub use checkpoint::CHECKPOINT_VERSION;

#[cfg(test)]
mod tests;
