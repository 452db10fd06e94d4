//! The records inside a batch: decoding (decompressing where needed) and encoding.
//!
//! The write path never looks inside a batch; this is for the compactor, which turns
//! records into Parquet rows, and for serving compacted data, which turns rows back into
//! batches. `kafka-protocol` has a record codec too, but it keeps headers in a map, which
//! would merge repeated header keys (Kafka allows them and keeps their order), and it does
//! not expose the batch fields needed to rebuild a batch exactly. Decompression comes from
//! `kafka-protocol` (including the xerial framing Kafka's snappy uses), as does snappy
//! compression; gzip, lz4 and zstd are compressed here at their fastest levels, since
//! rebuilding batches is on the read path (`kafka-protocol` uses lz4's slow HC mode).
//!
//! Record layout (lengths and deltas are zigzag varints):
//! `length, attributes: i8, timestamp delta: varlong, offset delta: varint, key length,
//! key, value length, value, header count, (header key length, key, value length, value)*`
//! where a length of -1 means null.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Snappy};

use super::batch::{self, BatchError, HEADER_SIZE, LOG_OVERHEAD};
use super::recompress::{self, Codec};

/// The fields of a batch header, as needed to rebuild the batch. The record count comes
/// from the records, the length and CRC are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub partition_leader_epoch: i32,
    pub attributes: i16,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl BatchHeader {
    pub fn compression(&self) -> i16 {
        self.attributes & 0x07
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: Bytes,
    pub value: Option<Bytes>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub attributes: i8,
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

/// Why a stored batch's records cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error("records are malformed: {0}")]
    Malformed(&'static str),
    #[error("compression codec {0} is not a Kafka codec")]
    UnknownCodec(i16),
    #[error("{0}")]
    Codec(String),
}

fn codec_error(e: anyhow::Error) -> RecordsError {
    RecordsError::Codec(format!("{e:#}"))
}

/// Reads a zigzag-encoded varint of at most `max_bytes` bytes.
fn get_varlong(buf: &mut Bytes, max_bytes: usize) -> Result<i64, RecordsError> {
    let mut raw: u64 = 0;
    for i in 0..max_bytes {
        if !buf.has_remaining() {
            return Err(RecordsError::Malformed("varint runs past the end"));
        }
        let b = buf.get_u8();
        raw |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
        }
    }
    Err(RecordsError::Malformed("varint is too long"))
}

fn get_varint(buf: &mut Bytes) -> Result<i32, RecordsError> {
    let v = get_varlong(buf, 5)?;
    i32::try_from(v).map_err(|_| RecordsError::Malformed("varint out of range"))
}

fn put_varlong(buf: &mut BytesMut, v: i64) {
    let mut raw = ((v << 1) ^ (v >> 63)) as u64;
    while raw >= 0x80 {
        buf.put_u8((raw as u8) | 0x80);
        raw >>= 7;
    }
    buf.put_u8(raw as u8);
}

fn varlong_len(v: i64) -> usize {
    let raw = ((v << 1) ^ (v >> 63)) as u64;
    (64 - raw.max(1).leading_zeros() as usize).div_ceil(7)
}

/// A length-prefixed byte string; -1 is null.
fn get_nullable(buf: &mut Bytes) -> Result<Option<Bytes>, RecordsError> {
    let len = get_varint(buf)?;
    if len < 0 {
        return Ok(None);
    }
    let len = len as usize;
    if buf.remaining() < len {
        return Err(RecordsError::Malformed(
            "field runs past the end of the record",
        ));
    }
    Ok(Some(buf.split_to(len)))
}

fn put_nullable(buf: &mut BytesMut, v: Option<&Bytes>) {
    match v {
        None => put_varlong(buf, -1),
        Some(b) => {
            put_varlong(buf, b.len() as i64);
            buf.put_slice(b);
        }
    }
}

fn nullable_len(v: Option<&Bytes>) -> usize {
    v.map_or(1, |b| varlong_len(b.len() as i64) + b.len())
}

fn decode_record(buf: &mut Bytes) -> Result<Record, RecordsError> {
    let len = get_varint(buf)?;
    if len < 0 || buf.remaining() < len as usize {
        return Err(RecordsError::Malformed("record length runs past the end"));
    }
    let mut r = buf.split_to(len as usize);
    if !r.has_remaining() {
        return Err(RecordsError::Malformed("empty record"));
    }
    let attributes = r.get_i8();
    let timestamp_delta = get_varlong(&mut r, 10)?;
    let offset_delta = get_varint(&mut r)?;
    let key = get_nullable(&mut r)?;
    let value = get_nullable(&mut r)?;
    let count = get_varint(&mut r)?;
    if count < 0 {
        return Err(RecordsError::Malformed("negative header count"));
    }
    let mut headers = Vec::with_capacity((count as usize).min(r.remaining()));
    for _ in 0..count {
        let key =
            get_nullable(&mut r)?.ok_or(RecordsError::Malformed("a header key cannot be null"))?;
        let value = get_nullable(&mut r)?;
        headers.push(Header { key, value });
    }
    if r.has_remaining() {
        return Err(RecordsError::Malformed("bytes left over after a record"));
    }
    Ok(Record {
        attributes,
        timestamp_delta,
        offset_delta,
        key,
        value,
        headers,
    })
}

fn record_body_len(r: &Record) -> usize {
    1 + varlong_len(r.timestamp_delta)
        + varlong_len(i64::from(r.offset_delta))
        + nullable_len(r.key.as_ref())
        + nullable_len(r.value.as_ref())
        + varlong_len(r.headers.len() as i64)
        + r.headers
            .iter()
            .map(|h| nullable_len(Some(&h.key)) + nullable_len(h.value.as_ref()))
            .sum::<usize>()
}

fn encode_record(buf: &mut BytesMut, r: &Record) {
    put_varlong(buf, record_body_len(r) as i64);
    buf.put_i8(r.attributes);
    put_varlong(buf, r.timestamp_delta);
    put_varlong(buf, i64::from(r.offset_delta));
    put_nullable(buf, r.key.as_ref());
    put_nullable(buf, r.value.as_ref());
    put_varlong(buf, r.headers.len() as i64);
    for h in &r.headers {
        put_nullable(buf, Some(&h.key));
        put_nullable(buf, h.value.as_ref());
    }
}

fn parse_records(mut buf: Bytes, count: u32) -> Result<Vec<Record>, RecordsError> {
    let mut records = Vec::with_capacity(count as usize);
    for _ in 0..count {
        records.push(decode_record(&mut buf)?);
    }
    if buf.has_remaining() {
        return Err(RecordsError::Malformed(
            "bytes left over after the last record",
        ));
    }
    Ok(records)
}

/// Decodes one stored batch (the bytes of exactly one batch, as validated on produce).
pub fn decode_batch(bytes: &Bytes) -> Result<(BatchHeader, Vec<Record>), RecordsError> {
    let info = batch::read_header(bytes, 0)?;
    if info.size != bytes.len() {
        return Err(RecordsError::Malformed("bytes left over after the batch"));
    }
    let mut head = &bytes[..HEADER_SIZE];
    let base_offset = head.get_i64();
    let _length = head.get_i32();
    let partition_leader_epoch = head.get_i32();
    let header = BatchHeader {
        base_offset,
        partition_leader_epoch,
        attributes: info.attributes,
        base_timestamp: info.base_timestamp,
        max_timestamp: info.max_timestamp,
        producer_id: info.producer_id,
        producer_epoch: info.producer_epoch,
        base_sequence: info.base_sequence,
    };
    let raw = recompress::decompress(info.compression(), bytes.slice(HEADER_SIZE..))?;
    Ok((header, parse_records(raw, info.record_count)?))
}

/// Encodes a batch with the header's codec and appends it to `out`, CRC computed.
pub fn encode_batch(
    header: &BatchHeader,
    records: &[Record],
    out: &mut BytesMut,
) -> Result<(), RecordsError> {
    let count =
        i32::try_from(records.len())
            .ok()
            .filter(|n| *n > 0)
            .ok_or(RecordsError::Malformed(
                "a batch holds 1 to i32::MAX records",
            ))?;
    let start = out.len();
    let body: usize = records
        .iter()
        .map(|r| {
            let n = record_body_len(r);
            varlong_len(n as i64) + n
        })
        .sum();
    out.reserve(HEADER_SIZE + body);
    out.put_i64(header.base_offset);
    out.put_i32(0); // length, set below
    out.put_i32(header.partition_leader_epoch);
    out.put_i8(2);
    out.put_u32(0); // CRC, set below
    out.put_i16(header.attributes);
    out.put_i32(records.last().map_or(0, |r| r.offset_delta));
    out.put_i64(header.base_timestamp);
    out.put_i64(header.max_timestamp);
    out.put_i64(header.producer_id);
    out.put_i16(header.producer_epoch);
    out.put_i32(header.base_sequence);
    out.put_i32(count);
    let plain = |buf: &mut BytesMut| -> anyhow::Result<()> {
        for r in records {
            encode_record(buf, r);
        }
        Ok(())
    };
    // Gzip, lz4 and zstd at their fastest levels: rebuilding batches is on the read path.
    let codec = match header.compression() {
        0 => None,
        1 => Some(Codec::Gzip(Some(1))),
        2 => Some(Codec::Snappy),
        3 => Some(Codec::Lz4(1)),
        4 => Some(Codec::Zstd(1)),
        c => return Err(RecordsError::UnknownCodec(c)),
    };
    match codec {
        None => plain(out).map_err(codec_error)?,
        Some(Codec::Snappy) => Snappy::compress(out, plain).map_err(codec_error)?,
        Some(codec) => {
            let mut raw = BytesMut::new();
            plain(&mut raw).map_err(codec_error)?;
            recompress::compress(codec, &raw, out)?;
        }
    }
    let length = i32::try_from(out.len() - start - LOG_OVERHEAD)
        .map_err(|_| RecordsError::Malformed("batch larger than 2 GiB"))?;
    out[start + 8..start + 12].copy_from_slice(&length.to_be_bytes());
    let crc = crc32c::crc32c(&out[start + 21..]);
    out[start + 17..start + 21].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests;
