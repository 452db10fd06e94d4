//! The embedded store's file records. Versioned; see the golden test.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::store::{KeyValue, LeaseId, MetaError, MetaResult, Revision};

pub const MAGIC: &[u8; 8] = b"SLUICEMD";
pub const VERSION: u16 = 1;
const HEADER_LEN: usize = 10;

const TAG_SNAPSHOT: u8 = 1;
const TAG_WRITE: u8 = 2;
const TAG_LEASE_GRANT: u8 = 3;
const TAG_LEASE_REVOKE: u8 = 4;

const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PersistOp {
    Put {
        key: Bytes,
        value: Bytes,
        lease: Option<LeaseId>,
    },
    Delete {
        key: Bytes,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogRecord {
    Snapshot {
        revision: Revision,
        next_lease: i64,
        kvs: Vec<KeyValue>,
        leases: Vec<(i64, i64)>,
    },
    Write {
        revision: Revision,
        ops: Vec<PersistOp>,
    },
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    LeaseRevoke {
        id: i64,
    },
}

fn put_bytes(b: &mut BytesMut, v: &[u8]) {
    b.put_u32(v.len() as u32);
    b.put_slice(v);
}

fn put_lease(b: &mut BytesMut, l: Option<LeaseId>) {
    b.put_i64(l.map_or(0, |l| l.0));
}

/// Encodes one record with its length and CRC prefix.
pub fn encode_record(r: &LogRecord) -> Vec<u8> {
    let mut p = BytesMut::new();
    match r {
        LogRecord::Snapshot {
            revision,
            next_lease,
            kvs,
            leases,
        } => {
            p.put_u8(TAG_SNAPSHOT);
            p.put_i64(*revision);
            p.put_i64(*next_lease);
            p.put_u32(kvs.len() as u32);
            for kv in kvs {
                put_bytes(&mut p, &kv.key);
                put_bytes(&mut p, &kv.value);
                p.put_i64(kv.create_revision);
                p.put_i64(kv.mod_revision);
                p.put_i64(kv.version);
                put_lease(&mut p, kv.lease);
            }
            p.put_u32(leases.len() as u32);
            for (id, ttl) in leases {
                p.put_i64(*id);
                p.put_i64(*ttl);
            }
        }
        LogRecord::Write { revision, ops } => {
            p.put_u8(TAG_WRITE);
            p.put_i64(*revision);
            p.put_u32(ops.len() as u32);
            for op in ops {
                match op {
                    PersistOp::Put { key, value, lease } => {
                        p.put_u8(OP_PUT);
                        put_bytes(&mut p, key);
                        put_bytes(&mut p, value);
                        put_lease(&mut p, *lease);
                    }
                    PersistOp::Delete { key } => {
                        p.put_u8(OP_DELETE);
                        put_bytes(&mut p, key);
                    }
                }
            }
        }
        LogRecord::LeaseGrant { id, ttl } => {
            p.put_u8(TAG_LEASE_GRANT);
            p.put_i64(*id);
            p.put_i64(*ttl);
        }
        LogRecord::LeaseRevoke { id } => {
            p.put_u8(TAG_LEASE_REVOKE);
            p.put_i64(*id);
        }
    }
    let mut out = Vec::with_capacity(8 + p.len());
    out.extend_from_slice(&(p.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&p).to_be_bytes());
    out.extend_from_slice(&p);
    out
}

struct Reader(Bytes);

impl Reader {
    fn need(&self, n: usize) -> MetaResult<()> {
        if self.0.remaining() < n {
            return Err(MetaError::Corrupt("record shorter than its fields".into()));
        }
        Ok(())
    }
    fn u8(&mut self) -> MetaResult<u8> {
        self.need(1)?;
        Ok(self.0.get_u8())
    }
    fn u32(&mut self) -> MetaResult<u32> {
        self.need(4)?;
        Ok(self.0.get_u32())
    }
    fn i64(&mut self) -> MetaResult<i64> {
        self.need(8)?;
        Ok(self.0.get_i64())
    }
    fn bytes(&mut self) -> MetaResult<Bytes> {
        let n = self.u32()? as usize;
        self.need(n)?;
        Ok(self.0.split_to(n))
    }
    fn lease(&mut self) -> MetaResult<Option<LeaseId>> {
        let l = self.i64()?;
        Ok((l != 0).then_some(LeaseId(l)))
    }
}

pub fn decode_payload(payload: Bytes) -> MetaResult<LogRecord> {
    let mut r = Reader(payload);
    let record = match r.u8()? {
        TAG_SNAPSHOT => {
            let revision = r.i64()?;
            let next_lease = r.i64()?;
            let n = r.u32()?;
            let mut kvs = Vec::new();
            for _ in 0..n {
                kvs.push(KeyValue {
                    key: r.bytes()?,
                    value: r.bytes()?,
                    create_revision: r.i64()?,
                    mod_revision: r.i64()?,
                    version: r.i64()?,
                    lease: r.lease()?,
                });
            }
            let n = r.u32()?;
            let mut leases = Vec::new();
            for _ in 0..n {
                leases.push((r.i64()?, r.i64()?));
            }
            LogRecord::Snapshot {
                revision,
                next_lease,
                kvs,
                leases,
            }
        }
        TAG_WRITE => {
            let revision = r.i64()?;
            let n = r.u32()?;
            let mut ops = Vec::new();
            for _ in 0..n {
                ops.push(match r.u8()? {
                    OP_PUT => PersistOp::Put {
                        key: r.bytes()?,
                        value: r.bytes()?,
                        lease: r.lease()?,
                    },
                    OP_DELETE => PersistOp::Delete { key: r.bytes()? },
                    t => return Err(MetaError::Corrupt(format!("unknown op tag {t}"))),
                });
            }
            LogRecord::Write { revision, ops }
        }
        TAG_LEASE_GRANT => LogRecord::LeaseGrant {
            id: r.i64()?,
            ttl: r.i64()?,
        },
        TAG_LEASE_REVOKE => LogRecord::LeaseRevoke { id: r.i64()? },
        t => return Err(MetaError::Corrupt(format!("unknown record tag {t}"))),
    };
    if r.0.has_remaining() {
        return Err(MetaError::Corrupt("trailing bytes in a record".into()));
    }
    Ok(record)
}

/// Decodes a whole file image: the records, and the length of the valid prefix (a torn
/// final record is not an error: it is what a crash mid-append leaves).
pub fn decode_log(data: &[u8]) -> MetaResult<(Vec<LogRecord>, u64)> {
    if data.len() < HEADER_LEN || &data[..8] != MAGIC {
        return Err(MetaError::Corrupt("not a sluice metadata file".into()));
    }
    let version = u16::from_be_bytes([data[8], data[9]]);
    if version != VERSION {
        return Err(MetaError::Corrupt(format!(
            "metadata file version {version} is not supported (expected {VERSION})"
        )));
    }
    let mut at = HEADER_LEN;
    let mut out = Vec::new();
    while at < data.len() {
        if data.len() - at < 8 {
            break;
        }
        let len = u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as usize;
        let crc = u32::from_be_bytes([data[at + 4], data[at + 5], data[at + 6], data[at + 7]]);
        let end = at + 8 + len;
        if end > data.len() {
            break;
        }
        let payload = &data[at + 8..end];
        if crc32c::crc32c(payload) != crc {
            if end == data.len() {
                break;
            }
            return Err(MetaError::Corrupt(format!(
                "bad checksum in the record at byte {at}"
            )));
        }
        out.push(decode_payload(Bytes::copy_from_slice(payload))?);
        at = end;
    }
    if out.is_empty() || !matches!(out[0], LogRecord::Snapshot { .. }) {
        return Err(MetaError::Corrupt(
            "metadata file does not start with a snapshot".into(),
        ));
    }
    Ok((out, at as u64))
}

pub fn read_log(path: &Path) -> MetaResult<(Vec<LogRecord>, u64)> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    decode_log(&data)
}

/// Replaces the file at `path` with a header and one snapshot record, atomically.
pub fn write_snapshot(path: &Path, snapshot: &LogRecord) -> MetaResult<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(MAGIC)?;
        f.write_all(&VERSION.to_be_bytes())?;
        f.write_all(&encode_record(snapshot))?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
pub fn file_image(records: &[LogRecord]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&VERSION.to_be_bytes());
    for r in records {
        out.extend_from_slice(&encode_record(r));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<LogRecord> {
        vec![
            LogRecord::Snapshot {
                revision: 7,
                next_lease: 3,
                kvs: vec![KeyValue {
                    key: Bytes::from_static(b"a"),
                    value: Bytes::from_static(b"1"),
                    create_revision: 2,
                    mod_revision: 7,
                    version: 3,
                    lease: Some(LeaseId(2)),
                }],
                leases: vec![(2, 10)],
            },
            LogRecord::Write {
                revision: 8,
                ops: vec![
                    PersistOp::Put {
                        key: Bytes::from_static(b"b"),
                        value: Bytes::from_static(b"xyz"),
                        lease: None,
                    },
                    PersistOp::Delete {
                        key: Bytes::from_static(b"a"),
                    },
                ],
            },
            LogRecord::LeaseGrant { id: 3, ttl: 5 },
            LogRecord::LeaseRevoke { id: 3 },
        ]
    }

    /// The file format must keep reading files written by earlier builds.
    #[test]
    fn golden_file_v1() {
        let golden = crate::golden::check_golden("metadata-v1.bin", &file_image(&sample()));
        let (records, len) = decode_log(&golden).expect("decodes");
        assert_eq!(records, sample());
        assert_eq!(len, golden.len() as u64);
    }

    #[test]
    fn torn_tail_is_cut_and_inner_corruption_is_reported() {
        let image = file_image(&sample());
        let (records, len) = decode_log(&image[..image.len() - 3]).expect("torn tail is fine");
        assert_eq!(records.len(), 3);
        assert!(len < image.len() as u64 - 3);
        let mut bad = image.clone();
        bad[HEADER_LEN + 20] ^= 0xff;
        assert!(matches!(decode_log(&bad), Err(MetaError::Corrupt(_))));
    }
}
