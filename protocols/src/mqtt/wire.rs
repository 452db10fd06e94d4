//! The data representations of MQTT (section 1.5 of both specifications): big-endian
//! integers, variable byte integers, length-prefixed UTF-8 strings and binary data.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::DecodeError;

/// The largest value a variable byte integer holds (four bytes).
pub const MAX_VARINT: u32 = 268_435_455;

/// Reads fields from the body of one packet; running out of bytes is a malformed packet.
pub struct Reader(pub Bytes);

impl Reader {
    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.0.remaining() < n {
            return Err(DecodeError::Malformed("packet ends inside a field"));
        }
        Ok(())
    }

    pub fn remaining(&self) -> usize {
        self.0.remaining()
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        self.need(1)?;
        Ok(self.0.get_u8())
    }

    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        self.need(2)?;
        Ok(self.0.get_u16())
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4)?;
        Ok(self.0.get_u32())
    }

    pub fn varint(&mut self) -> Result<u32, DecodeError> {
        match read_varint(&self.0)? {
            Some((v, n)) => {
                self.0.advance(n);
                Ok(v)
            }
            None => Err(DecodeError::Malformed(
                "packet ends inside a variable byte integer",
            )),
        }
    }

    pub fn bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        self.need(n)?;
        Ok(self.0.split_to(n))
    }

    /// Binary data: a two-byte length, then the bytes.
    pub fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let n = self.u16()? as usize;
        self.bytes(n)
    }

    /// A UTF-8 encoded string: well-formed UTF-8 without U+0000 ([MQTT-1.5.4-1], [-2]).
    pub fn string(&mut self) -> Result<String, DecodeError> {
        let raw = self.binary()?;
        let s = std::str::from_utf8(&raw)
            .map_err(|_| DecodeError::Malformed("a string is not well-formed UTF-8"))?;
        if s.contains('\0') {
            return Err(DecodeError::Malformed("a string contains U+0000"));
        }
        Ok(s.to_string())
    }

    pub fn rest(&mut self) -> Bytes {
        let n = self.0.remaining();
        self.0.split_to(n)
    }
}

/// A variable byte integer at the start of `buf`: its value and length, `None` if `buf`
/// ends before it does.
pub fn read_varint(buf: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value = 0u32;
    for i in 0..4 {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    Err(DecodeError::Malformed(
        "a variable byte integer is longer than four bytes",
    ))
}

pub fn varint_len(v: u32) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

pub fn put_varint(buf: &mut BytesMut, mut v: u32) {
    loop {
        let mut b = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            b |= 0x80;
        }
        buf.put_u8(b);
        if v == 0 {
            return;
        }
    }
}

pub fn put_binary(buf: &mut BytesMut, b: &[u8]) {
    buf.put_u16(b.len() as u16);
    buf.put_slice(b);
}

pub fn put_string(buf: &mut BytesMut, s: &str) {
    put_binary(buf, s.as_bytes());
}

/// Encoded size of a string or binary field.
pub fn binary_len(b: &[u8]) -> usize {
    2 + b.len()
}
