//! Records the compactor writes: segments, log starts, checkpoint pointers. All JSON: one
//! per segment or partition, written rarely, readable with `etcdctl`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{RecordError, decode_json, encode_json};
use bytes::Bytes;

pub const SEGMENT_RECORD_VERSION: u16 = 1;

/// A Parquet segment that holds `[base_offset, end_offset)` of a partition, stored under
/// `log/segments/<topic id>/<partition>/<base offset>`. Written when the compactor swaps
/// the range from WAL objects to the segment; written again (with `staging` cleared) once
/// the file is published under the table path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRecord {
    pub v: u16,
    pub topic_id: Uuid,
    pub partition: u32,
    pub base_offset: i64,
    pub end_offset: i64,
    /// Where the segment is published: under `topics/<topic>/partition=<n>/...`.
    pub path: String,
    /// Where the segment was written before publication; readers use it until `path` is
    /// published, and it is cleared then.
    pub staging: Option<String>,
    /// File size in bytes.
    pub size: u64,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    /// Bytes the same records took in WAL objects.
    pub wal_bytes: u64,
}

impl SegmentRecord {
    pub fn encode(&self) -> Bytes {
        encode_json(self)
    }
    pub fn decode(b: &[u8]) -> Result<Self, RecordError> {
        decode_json(b, "segment record", SEGMENT_RECORD_VERSION)
    }
    /// The object readers fetch from now.
    pub fn read_path(&self) -> &str {
        self.staging.as_deref().unwrap_or(&self.path)
    }
}

pub const LOG_START_VERSION: u16 = 1;

/// The first offset still readable in a partition, stored under
/// `log/starts/<topic id>/<partition>`; moved forward by retention and DeleteRecords.
/// Applying it never moves the start backwards, so concurrent writers need no compare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogStartRecord {
    pub v: u16,
    pub offset: i64,
}

impl LogStartRecord {
    pub fn encode(&self) -> Bytes {
        encode_json(self)
    }
    pub fn decode(b: &[u8]) -> Result<Self, RecordError> {
        decode_json(b, "log start record", LOG_START_VERSION)
    }
}

pub const CHECKPOINT_POINTER_VERSION: u16 = 1;

/// Where the latest checkpoint of the log state lives, stored under `log/checkpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointPointer {
    pub v: u16,
    /// The log state in the object is as of this revision: every log event at or below it
    /// is in the checkpoint, every event above it is not.
    pub revision: i64,
    pub path: String,
}

impl CheckpointPointer {
    pub fn encode(&self) -> Bytes {
        encode_json(self)
    }
    pub fn decode(b: &[u8]) -> Result<Self, RecordError> {
        decode_json(b, "checkpoint pointer", CHECKPOINT_POINTER_VERSION)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::check_golden;

    #[test]
    fn compaction_records_golden_v1() {
        let s = SegmentRecord {
            v: SEGMENT_RECORD_VERSION,
            topic_id: Uuid::from_u128(0x1234),
            partition: 3,
            base_offset: 1000,
            end_offset: 2000,
            path: "topics/t/partition=3/date=2026-11-22/00000000000000001000-0193.parquet".into(),
            staging: Some("staging/0193.parquet".into()),
            size: 123_456,
            min_timestamp: 1_700_000_000_000,
            max_timestamp: 1_700_000_001_000,
            wal_bytes: 234_567,
        };
        let golden = check_golden("segment-record-v1.json", &s.encode());
        assert_eq!(SegmentRecord::decode(&golden).expect("decode"), s);
        let l = LogStartRecord {
            v: LOG_START_VERSION,
            offset: 77,
        };
        let golden = check_golden("log-start-v1.json", &l.encode());
        assert_eq!(LogStartRecord::decode(&golden).expect("decode"), l);
        let c = CheckpointPointer {
            v: CHECKPOINT_POINTER_VERSION,
            revision: 4242,
            path: "checkpoints/00000000000000004242.ckpt".into(),
        };
        let golden = check_golden("checkpoint-pointer-v1.json", &c.encode());
        assert_eq!(CheckpointPointer::decode(&golden).expect("decode"), c);
    }
}
