//! Checkpoints: the whole log state as of one revision, written to the object store by the
//! compactor so that gateways start from it instead of replaying every commit, and so that
//! commit and segment records at or below that revision can leave metadata.
//!
//! Format, version 1 (integers big-endian; `str` is a u32 length and UTF-8 bytes):
//!
//! ```text
//! magic "SLUICECK", version: u16, revision: i64, topics: u32, then per topic:
//!   topic record: str (JSON, as stored under log/topics/), partitions: u32, then per partition:
//!     log start: i64, high watermark: i64,
//!     segments: u32, each a segment record: str (JSON)
//!     entries: u32, each: base offset i64, records u32, object str, object size u64,
//!                         position u64, size u32, max timestamp i64
//!     producers: u32, each: id i64, epoch i16, batches u8, each: first seq i32,
//!                          last seq i32, base offset i64
//! crc32c of everything before: u32
//! ```

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{IndexEntry, LogState, PartitionLog, ProducerState, TopicState};
use crate::records::{RecordError, SegmentRecord, TopicRecord};

const MAGIC: &[u8; 8] = b"SLUICECK";
pub const CHECKPOINT_VERSION: u16 = 1;

fn malformed(reason: impl Into<String>) -> RecordError {
    RecordError::Malformed {
        what: "checkpoint",
        reason: reason.into(),
    }
}

fn put_str(b: &mut BytesMut, s: &[u8]) {
    b.put_u32(s.len() as u32);
    b.put_slice(s);
}

impl LogState {
    /// The state as a version 1 checkpoint.
    pub fn encode_checkpoint(&self) -> Bytes {
        let mut b = BytesMut::new();
        b.put_slice(MAGIC);
        b.put_u16(CHECKPOINT_VERSION);
        b.put_i64(self.revision);
        b.put_u32(self.topics.len() as u32);
        for t in self.topics.values() {
            put_str(&mut b, &t.record.encode());
            b.put_u32(t.partitions.len() as u32);
            for p in &t.partitions {
                b.put_i64(p.log_start_offset);
                b.put_i64(p.high_watermark);
                b.put_u32(p.segments.len() as u32);
                for s in &p.segments {
                    put_str(&mut b, &s.encode());
                }
                b.put_u32(p.entries.len() as u32);
                for e in &p.entries {
                    b.put_i64(e.base_offset);
                    b.put_u32(e.records);
                    put_str(&mut b, e.object.as_bytes());
                    b.put_u64(e.object_size);
                    b.put_u64(e.position);
                    b.put_u32(e.size);
                    b.put_i64(e.max_timestamp);
                }
                let mut producers: Vec<_> = p.producers.iter().collect();
                producers.sort_by_key(|(id, _)| **id);
                b.put_u32(producers.len() as u32);
                for (id, s) in producers {
                    b.put_i64(*id);
                    b.put_i16(s.epoch);
                    b.put_u8(s.batches.len() as u8);
                    for &(first, last, base) in &s.batches {
                        b.put_i32(first);
                        b.put_i32(last);
                        b.put_i64(base);
                    }
                }
            }
        }
        let crc = crc32c::crc32c(&b);
        b.put_u32(crc);
        b.freeze()
    }

    /// Reads a checkpoint written by [`LogState::encode_checkpoint`].
    pub fn decode_checkpoint(bytes: &[u8]) -> Result<LogState, RecordError> {
        if bytes.len() < MAGIC.len() + 2 + 8 + 4 || &bytes[..8] != MAGIC {
            return Err(malformed("not a checkpoint"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body) != u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            return Err(malformed("checksum mismatch"));
        }
        let mut r = Reader(&body[8..]);
        let version = r.u16()?;
        if version != CHECKPOINT_VERSION {
            return Err(RecordError::Version {
                what: "checkpoint",
                version,
            });
        }
        let mut state = LogState {
            revision: r.i64()?,
            ..Default::default()
        };
        for _ in 0..r.u32()? {
            let record = TopicRecord::decode(r.str()?)?;
            let mut partitions = Vec::new();
            for _ in 0..r.u32()? {
                partitions.push(r.partition()?);
            }
            state.ids.insert(record.id, record.name.clone());
            state
                .topics
                .insert(record.name.clone(), TopicState { record, partitions });
        }
        if r.0.has_remaining() {
            return Err(malformed("bytes left over"));
        }
        Ok(state)
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn need(&self, n: usize) -> Result<(), RecordError> {
        if self.0.remaining() < n {
            return Err(malformed("truncated"));
        }
        Ok(())
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        self.need(1)?;
        Ok(self.0.get_u8())
    }
    fn u16(&mut self) -> Result<u16, RecordError> {
        self.need(2)?;
        Ok(self.0.get_u16())
    }
    fn i16(&mut self) -> Result<i16, RecordError> {
        self.need(2)?;
        Ok(self.0.get_i16())
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        self.need(4)?;
        Ok(self.0.get_u32())
    }
    fn i32(&mut self) -> Result<i32, RecordError> {
        self.need(4)?;
        Ok(self.0.get_i32())
    }
    fn u64(&mut self) -> Result<u64, RecordError> {
        self.need(8)?;
        Ok(self.0.get_u64())
    }
    fn i64(&mut self) -> Result<i64, RecordError> {
        self.need(8)?;
        Ok(self.0.get_i64())
    }
    fn str(&mut self) -> Result<&'a [u8], RecordError> {
        let n = self.u32()? as usize;
        self.need(n)?;
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(s)
    }

    fn partition(&mut self) -> Result<PartitionLog, RecordError> {
        let mut p = PartitionLog {
            log_start_offset: self.i64()?,
            high_watermark: self.i64()?,
            ..Default::default()
        };
        for _ in 0..self.u32()? {
            p.segments.push(SegmentRecord::decode(self.str()?)?);
        }
        for _ in 0..self.u32()? {
            let base_offset = self.i64()?;
            let records = self.u32()?;
            let object = std::str::from_utf8(self.str()?)
                .map_err(|_| malformed("object name is not UTF-8"))?;
            p.entries.push(IndexEntry {
                base_offset,
                records,
                object: Arc::from(object),
                object_size: self.u64()?,
                position: self.u64()?,
                size: self.u32()?,
                max_timestamp: self.i64()?,
            });
        }
        for _ in 0..self.u32()? {
            let id = self.i64()?;
            let epoch = self.i16()?;
            let mut batches = VecDeque::new();
            for _ in 0..self.u8()? {
                batches.push_back((self.i32()?, self.i32()?, self.i64()?));
            }
            p.producers.insert(id, ProducerState { epoch, batches });
        }
        Ok(p)
    }
}
