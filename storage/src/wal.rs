//! The WAL object format, version 1.
//!
//! One object per flush holds the record batches of every partition the flush carried,
//! exactly as producers sent them (compressed or not, base offsets as sent: offsets are
//! assigned by the commit, not stored here).
//!
//! ```text
//! header   8 bytes magic "SLUICEWL", u16 version, u16 flags (0), u32 reserved (0)
//! chunks   one per partition: the concatenated record batches
//! footer   u32 chunk count, then per chunk 44 bytes:
//!          16-byte topic id, u32 partition, u64 position, u32 size, u32 records,
//!          i64 max timestamp
//! trailer  u32 footer length, u32 CRC-32C of the footer, 8 bytes magic "SLUICEWL"
//! ```
//!
//! All integers are big-endian. The footer repeats what the commit record says, so an
//! object can be understood (by the compactor, by an operator) without metadata.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use sluice_metadata::records::Chunk;
use uuid::Uuid;

pub const MAGIC: &[u8; 8] = b"SLUICEWL";
pub const VERSION: u16 = 1;
pub const HEADER_SIZE: usize = 16;
const TRAILER_SIZE: usize = 16;
const CHUNK_ENTRY_SIZE: usize = Chunk::ENCODED_LEN;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WalError {
    #[error("not a WAL object: {0}")]
    NotWal(&'static str),
    #[error("WAL object version {0} is not supported")]
    Version(u16),
    #[error("WAL footer checksum mismatch")]
    BadChecksum,
    #[error("WAL footer is inconsistent: {0}")]
    Inconsistent(&'static str),
}

/// Data for one partition in a flush.
#[derive(Debug, Clone)]
pub struct ChunkInput {
    pub topic_id: Uuid,
    pub partition: u32,
    /// Record batches in the order they were accepted.
    pub batches: Vec<Bytes>,
    pub records: u32,
    pub max_timestamp: i64,
}

/// Builds an object from the chunks; returns its bytes and the chunk list to commit.
pub fn encode(chunks: &[ChunkInput]) -> (Bytes, Vec<Chunk>) {
    let data: usize = chunks
        .iter()
        .flat_map(|c| &c.batches)
        .map(|b| b.len())
        .sum();
    let footer_len = 4 + chunks.len() * CHUNK_ENTRY_SIZE;
    let mut buf = BytesMut::with_capacity(HEADER_SIZE + data + footer_len + TRAILER_SIZE);
    buf.put_slice(MAGIC);
    buf.put_u16(VERSION);
    buf.put_u16(0);
    buf.put_u32(0);
    let mut out = Vec::with_capacity(chunks.len());
    for c in chunks {
        let position = buf.len() as u64;
        for b in &c.batches {
            buf.put_slice(b);
        }
        out.push(Chunk {
            topic_id: c.topic_id,
            partition: c.partition,
            position,
            size: (buf.len() as u64 - position) as u32,
            records: c.records,
            max_timestamp: c.max_timestamp,
        });
    }
    let footer_start = buf.len();
    buf.put_u32(out.len() as u32);
    for c in &out {
        c.encode_into(&mut buf);
    }
    let crc = crc32c::crc32c(&buf[footer_start..]);
    let footer_len = (buf.len() - footer_start) as u32;
    buf.put_u32(footer_len);
    buf.put_u32(crc);
    buf.put_slice(MAGIC);
    (buf.freeze(), out)
}

/// Reads the chunk list of a whole object, checking magic, version and footer checksum.
pub fn decode_footer(object: &[u8]) -> Result<Vec<Chunk>, WalError> {
    if object.len() < HEADER_SIZE + 4 + TRAILER_SIZE || &object[..8] != MAGIC {
        return Err(WalError::NotWal("bad header"));
    }
    let version = u16::from_be_bytes([object[8], object[9]]);
    if version != VERSION {
        return Err(WalError::Version(version));
    }
    let trailer = &object[object.len() - TRAILER_SIZE..];
    if &trailer[8..] != MAGIC {
        return Err(WalError::NotWal("bad trailer"));
    }
    let mut t = &trailer[..8];
    let footer_len = t.get_u32() as usize;
    let crc = t.get_u32();
    let footer_end = object.len() - TRAILER_SIZE;
    if footer_len < 4 || footer_len > footer_end - HEADER_SIZE {
        return Err(WalError::Inconsistent("footer length"));
    }
    let footer_start = footer_end - footer_len;
    let mut f = &object[footer_start..footer_end];
    if crc32c::crc32c(f) != crc {
        return Err(WalError::BadChecksum);
    }
    let n = f.get_u32() as usize;
    if f.remaining() != n * CHUNK_ENTRY_SIZE {
        return Err(WalError::Inconsistent("chunk count"));
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let c = Chunk::decode_from(&mut f);
        if c.position < HEADER_SIZE as u64 || c.position + u64::from(c.size) > footer_start as u64 {
            return Err(WalError::Inconsistent("chunk outside the data section"));
        }
        out.push(c);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<ChunkInput> {
        vec![
            ChunkInput {
                topic_id: Uuid::from_u128(1),
                partition: 0,
                batches: vec![
                    Bytes::from_static(b"batch-one"),
                    Bytes::from_static(b"batch-two"),
                ],
                records: 7,
                max_timestamp: 1_700_000_000_123,
            },
            ChunkInput {
                topic_id: Uuid::from_u128(2),
                partition: 5,
                batches: vec![Bytes::from_static(b"other")],
                records: 1,
                max_timestamp: -1,
            },
        ]
    }

    /// Objects written by earlier builds must stay readable: the bytes are pinned.
    #[test]
    fn golden_v1() {
        let (bytes, chunks) = encode(&sample());
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/wal-v1.bin");
        if std::env::var_os("SLUICE_BLESS").is_some() {
            std::fs::write(&path, &bytes).expect("write golden");
        }
        let golden = std::fs::read(&path).expect("golden file");
        assert_eq!(golden, bytes.to_vec(), "WAL encoding changed: bump VERSION");
        assert_eq!(decode_footer(&golden).expect("decode"), chunks);
        assert_eq!(
            &golden[chunks[0].position as usize..][..18],
            b"batch-onebatch-two"
        );
        assert_eq!(chunks[1].size, 5);
    }

    #[test]
    fn corruption_is_detected() {
        let (bytes, _) = encode(&sample());
        let mut b = bytes.to_vec();
        let n = b.len();
        b[n - TRAILER_SIZE - 3] ^= 1;
        assert_eq!(decode_footer(&b), Err(WalError::BadChecksum));
        let mut v = bytes.to_vec();
        v[9] = 2;
        assert_eq!(decode_footer(&v), Err(WalError::Version(2)));
        assert!(decode_footer(&bytes[..n - 1]).is_err());
        assert!(decode_footer(b"short").is_err());
    }
}
