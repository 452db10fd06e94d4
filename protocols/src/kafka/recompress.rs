//! Recompression on append: a topic whose `compression.type` names a codec stores every
//! batch with that codec, whatever the producer used, as Kafka does. Only the records'
//! bytes are decompressed and compressed again; the header (producer id, sequence,
//! timestamps, record count) is kept, and the compression bits, length and CRC are
//! rewritten.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Decompressor, Gzip, Lz4, Snappy, Zstd};

use super::batch::{self, HEADER_SIZE, LOG_OVERHEAD};
use super::records::RecordsError;

/// A codec to store batches with, and its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None,
    /// `None`: the codec's default level.
    Gzip(Option<u32>),
    Snappy,
    Lz4(u32),
    Zstd(i32),
}

impl Codec {
    /// The codec's id in a batch's attributes.
    pub fn id(self) -> i16 {
        match self {
            Codec::None => 0,
            Codec::Gzip(_) => 1,
            Codec::Snappy => 2,
            Codec::Lz4(_) => 3,
            Codec::Zstd(_) => 4,
        }
    }
}

/// `batch` (exactly one validated batch) with its records compressed by `codec`, or
/// `None` when it already uses that codec.
pub fn recompress(batch: &Bytes, codec: Codec) -> Result<Option<Bytes>, RecordsError> {
    let info = batch::read_header(batch, 0)?;
    if info.size != batch.len() {
        return Err(RecordsError::Malformed("bytes left over after the batch"));
    }
    if info.compression() == codec.id() {
        return Ok(None);
    }
    let raw = decompress(info.compression(), batch.slice(HEADER_SIZE..))?;
    let mut out = BytesMut::with_capacity(HEADER_SIZE + raw.len() / 2 + 64);
    out.extend_from_slice(&batch[..HEADER_SIZE]);
    compress(codec, &raw, &mut out)?;
    let attributes = (info.attributes & !0x07) | codec.id();
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    let length = i32::try_from(out.len() - LOG_OVERHEAD)
        .map_err(|_| RecordsError::Malformed("batch larger than 2 GiB"))?;
    out[8..12].copy_from_slice(&length.to_be_bytes());
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(Some(out.freeze()))
}

fn codec_error(e: anyhow::Error) -> RecordsError {
    RecordsError::Codec(format!("{e:#}"))
}

/// The records' bytes of a batch body compressed with codec `id` (the body itself when
/// uncompressed).
pub(crate) fn decompress(id: i16, mut body: Bytes) -> Result<Bytes, RecordsError> {
    let keep = |b: &mut Bytes| Ok(b.copy_to_bytes(b.remaining()));
    match id {
        0 => Ok(body),
        1 => Gzip::decompress(&mut body, keep).map_err(codec_error),
        2 => Snappy::decompress(&mut body, keep).map_err(codec_error),
        3 => Lz4::decompress(&mut body, keep).map_err(codec_error),
        4 => Zstd::decompress(&mut body, keep).map_err(codec_error),
        c => Err(RecordsError::UnknownCodec(c)),
    }
}

/// Appends `raw` compressed with `codec` to `out` (lz4 in Kafka's frame format with
/// independent blocks; snappy with the xerial framing Kafka's clients write).
pub(crate) fn compress(codec: Codec, raw: &[u8], out: &mut BytesMut) -> Result<(), RecordsError> {
    use std::io::Write;
    let io = |e: std::io::Error| RecordsError::Codec(e.to_string());
    match codec {
        Codec::None => out.extend_from_slice(raw),
        Codec::Gzip(level) => {
            let level = level.map_or_else(flate2::Compression::default, flate2::Compression::new);
            let mut e = flate2::write::GzEncoder::new(out.writer(), level);
            e.write_all(raw).map_err(io)?;
            e.finish().map_err(io)?;
        }
        Codec::Snappy => Snappy::compress(out, |buf: &mut BytesMut| {
            buf.extend_from_slice(raw);
            Ok(())
        })
        .map_err(codec_error)?,
        Codec::Lz4(level) => {
            let mut e = lz4::EncoderBuilder::new()
                .level(level)
                .block_mode(lz4::BlockMode::Independent)
                .build(out.writer())
                .map_err(io)?;
            e.write_all(raw).map_err(io)?;
            let (_, r) = e.finish();
            r.map_err(io)?;
        }
        Codec::Zstd(level) => zstd::stream::copy_encode(raw, out.writer(), level).map_err(io)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::records::{BatchHeader, Record, decode_batch, encode_batch};

    fn batch(codec: i16) -> Bytes {
        let header = BatchHeader {
            base_offset: 0,
            partition_leader_epoch: -1,
            attributes: codec | 0x08, // LogAppendTime: a bit recompression must keep
            base_timestamp: 1_795_000_000_000,
            max_timestamp: 1_795_000_000_099,
            producer_id: 7,
            producer_epoch: 2,
            base_sequence: 40,
        };
        let records: Vec<Record> = (0..100)
            .map(|i| Record {
                attributes: 0,
                timestamp_delta: i,
                offset_delta: i as i32,
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(format!("value {i} ").repeat(20))),
                headers: vec![],
            })
            .collect();
        let mut out = BytesMut::new();
        encode_batch(&header, &records, &mut out).expect("encodes");
        out.freeze()
    }

    #[test]
    fn every_codec_to_every_codec_keeps_header_and_records() {
        let targets = [
            Codec::None,
            Codec::Gzip(None),
            Codec::Gzip(Some(9)),
            Codec::Snappy,
            Codec::Lz4(9),
            Codec::Zstd(3),
        ];
        for from in 0..=4 {
            let original = batch(from);
            let (h0, r0) = decode_batch(&original).expect("decodes");
            for to in targets {
                let out = recompress(&original, to).expect("recompresses");
                let Some(out) = out else {
                    assert_eq!(from, to.id());
                    continue;
                };
                let info = batch::validate_produce(&out).expect("a valid batch");
                batch::verify_crc(&out, &info).expect("its CRC holds");
                assert_eq!(info.compression(), to.id());
                let (h1, r1) = decode_batch(&out).expect("decodes");
                assert_eq!(r1, r0, "{from} -> {to:?}");
                assert_eq!(
                    (h1.producer_id, h1.producer_epoch, h1.base_sequence),
                    (h0.producer_id, h0.producer_epoch, h0.base_sequence)
                );
                assert_eq!(
                    (h1.base_timestamp, h1.max_timestamp),
                    (h0.base_timestamp, h0.max_timestamp)
                );
                assert_eq!(h1.attributes & !7, h0.attributes & !7);
            }
        }
    }

    #[test]
    fn compressing_shrinks_compressible_records() {
        let plain = batch(0);
        let zstd = recompress(&plain, Codec::Zstd(3))
            .expect("ok")
            .expect("changed");
        assert!(
            zstd.len() * 4 < plain.len(),
            "{} vs {}",
            zstd.len(),
            plain.len()
        );
    }

    #[test]
    fn a_truncated_batch_is_an_error() {
        let b = batch(0);
        assert!(recompress(&b.slice(..b.len() - 3), Codec::Zstd(3)).is_err());
    }
}
