//! Record batches (magic 2) as they travel in Produce and Fetch.
//!
//! Sluice stores batches exactly as producers sent them, compressed or not, and only
//! rewrites the base offset (and, for `LogAppendTime` topics, the timestamp type and max
//! timestamp) on the way in or out. So validation here works on the batch header; it never
//! decompresses.
//!
//! Layout of a batch header (all big-endian):
//!
//! | offset | field |
//! |---|---|
//! | 0 | base offset: i64 |
//! | 8 | batch length: i32 (bytes after this field) |
//! | 12 | partition leader epoch: i32 |
//! | 16 | magic: i8 |
//! | 17 | crc: u32, CRC-32C of everything from `attributes` to the end |
//! | 21 | attributes: i16 |
//! | 23 | last offset delta: i32 |
//! | 27 | base timestamp: i64 |
//! | 35 | max timestamp: i64 |
//! | 43 | producer id: i64 |
//! | 51 | producer epoch: i16 |
//! | 53 | base sequence: i32 |
//! | 57 | record count: i32 |
//! | 61 | records |

/// Size of the fixed batch header.
pub const HEADER_SIZE: usize = 61;
/// Bytes before the `batch length` field ends: the length counts what follows it.
pub const LOG_OVERHEAD: usize = 12;

const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;
const MAX_TIMESTAMP_OFFSET: usize = 35;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_MASK: i16 = 0x08;
const TRANSACTIONAL_MASK: i16 = 0x10;
const CONTROL_MASK: i16 = 0x20;

/// Why a batch in a produce request was refused. Each maps to one Kafka error code.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    /// Maps to CORRUPT_MESSAGE: the bytes cannot be a valid batch.
    #[error("batch at byte {at} is truncated: {reason}")]
    Truncated { at: usize, reason: &'static str },
    /// Maps to CORRUPT_MESSAGE.
    #[error("batch at byte {at} has CRC {found:#010x}, computed {computed:#010x}")]
    BadCrc {
        at: usize,
        found: u32,
        computed: u32,
    },
    /// Maps to UNSUPPORTED_FOR_MESSAGE_FORMAT: only magic 2 is accepted.
    #[error("batch at byte {at} has magic {magic}; only record batch v2 is supported")]
    BadMagic { at: usize, magic: i8 },
    /// Maps to INVALID_RECORD.
    #[error("batch at byte {at} is invalid: {reason}")]
    Invalid { at: usize, reason: String },
    /// Maps to INVALID_RECORD: an empty produce for a partition.
    #[error("no record batch in the produce request")]
    Empty,
}

/// What a validated batch header says. Enough to index, order and serve the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInfo {
    /// Byte position of the batch in the buffer that was validated.
    pub position: usize,
    /// Total size of the batch, header included.
    pub size: usize,
    pub attributes: i16,
    pub record_count: u32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl BatchInfo {
    pub fn compression(&self) -> i16 {
        self.attributes & COMPRESSION_MASK
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_MASK != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_MASK != 0
    }
    pub fn uses_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_MASK != 0
    }
}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn i64_at(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// Reads the header of the batch starting at `at` without checking the CRC. Used on data
/// that was validated when it was written (the read path).
pub fn read_header(buf: &[u8], at: usize) -> Result<BatchInfo, BatchError> {
    let rest = &buf[at..];
    if rest.len() < HEADER_SIZE {
        return Err(BatchError::Truncated {
            at,
            reason: "fewer bytes than a batch header",
        });
    }
    let length = i32_at(rest, 8);
    if length < (HEADER_SIZE - LOG_OVERHEAD) as i32 {
        return Err(BatchError::Truncated {
            at,
            reason: "batch length is smaller than a batch header",
        });
    }
    let size = length as usize + LOG_OVERHEAD;
    if rest.len() < size {
        return Err(BatchError::Truncated {
            at,
            reason: "batch length runs past the end of the records",
        });
    }
    let magic = rest[16] as i8;
    if magic != 2 {
        return Err(BatchError::BadMagic { at, magic });
    }
    let last_offset_delta = i32_at(rest, 23);
    let count = i32_at(rest, 57);
    if count <= 0 {
        return Err(BatchError::Invalid {
            at,
            reason: format!("record count {count} must be positive"),
        });
    }
    if last_offset_delta != count - 1 {
        return Err(BatchError::Invalid {
            at,
            reason: format!(
                "last offset delta {last_offset_delta} does not match record count {count}"
            ),
        });
    }
    Ok(BatchInfo {
        position: at,
        size,
        attributes: i16_at(rest, ATTRIBUTES_OFFSET),
        record_count: count as u32,
        base_timestamp: i64_at(rest, 27),
        max_timestamp: i64_at(rest, MAX_TIMESTAMP_OFFSET),
        producer_id: i64_at(rest, 43),
        producer_epoch: i16_at(rest, 51),
        base_sequence: i32_at(rest, 53),
    })
}

/// Iterates over the batch headers of already-validated data.
pub fn iter_headers(buf: &[u8]) -> impl Iterator<Item = Result<BatchInfo, BatchError>> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= buf.len() {
            return None;
        }
        let r = read_header(buf, at);
        match &r {
            Ok(info) => at += info.size,
            Err(_) => at = buf.len(),
        }
        Some(r)
    })
}

/// Validates the records field of one partition of a produce request, as Apache Kafka
/// does before appending: exactly one batch (Produce v3 and later), magic 2, sizes
/// consistent, CRC-32C correct, record count consistent with the last offset delta, no
/// control batches from clients, a sequence number wherever there is a producer id.
pub fn validate_produce(buf: &[u8]) -> Result<BatchInfo, BatchError> {
    if buf.is_empty() {
        return Err(BatchError::Empty);
    }
    let info = read_header(buf, 0)?;
    if info.size != buf.len() {
        return Err(BatchError::Invalid {
            at: info.size,
            reason: "a produce request may carry exactly one record batch per partition".into(),
        });
    }
    let found = u32_at(buf, CRC_OFFSET);
    let computed = crc32c::crc32c(&buf[ATTRIBUTES_OFFSET..]);
    if found != computed {
        return Err(BatchError::BadCrc {
            at: 0,
            found,
            computed,
        });
    }
    if info.is_control() {
        return Err(BatchError::Invalid {
            at: 0,
            reason: "clients may not produce control batches".into(),
        });
    }
    if info.producer_id >= 0 && info.base_sequence < 0 {
        return Err(BatchError::Invalid {
            at: 0,
            reason: "a batch with a producer id must have a base sequence".into(),
        });
    }
    Ok(info)
}

/// Checks the CRC of the batch described by `info` in `buf` (stored data being rewritten,
/// so that damaged bytes are never carried into another format).
pub fn verify_crc(buf: &[u8], info: &BatchInfo) -> Result<(), BatchError> {
    let batch = &buf[info.position..info.position + info.size];
    let found = u32_at(batch, CRC_OFFSET);
    let computed = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]);
    if found != computed {
        return Err(BatchError::BadCrc {
            at: info.position,
            found,
            computed,
        });
    }
    Ok(())
}

/// Overwrites the base offset of the batch at the start of `batch`. The base offset is
/// outside the CRC, so the batch stays valid.
pub fn set_base_offset(batch: &mut [u8], offset: i64) {
    batch[0..8].copy_from_slice(&offset.to_be_bytes());
}

/// Marks the batch at the start of `batch` as `LogAppendTime` with the given time, as a
/// broker does for topics with `message.timestamp.type=LogAppendTime`, and recomputes
/// the CRC.
pub fn set_log_append_time(batch: &mut [u8], time_ms: i64) {
    let attributes = i16_at(batch, ATTRIBUTES_OFFSET) | TIMESTAMP_TYPE_MASK;
    batch[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8].copy_from_slice(&time_ms.to_be_bytes());
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
pub(crate) mod tests;
