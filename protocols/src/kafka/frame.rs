//! Length-prefixed Kafka frames.
//!
//! Every Kafka request and response is an `INT32` size followed by that many bytes.

use bytes::{Buf, Bytes, BytesMut};

/// A frame that cannot be accepted. The connection that sent it must be closed: after a bad
/// size prefix there is no way to find the next frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame size {size} is negative or zero")]
    InvalidSize { size: i32 },
    #[error("frame size {size} exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
}

/// Takes the next complete frame (without its size prefix) out of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed. `limit` bounds the size a peer may
/// announce, so a garbage prefix cannot make the server allocate gigabytes.
pub fn take_frame(buf: &mut BytesMut, limit: usize) -> Result<Option<Bytes>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if size <= 0 {
        return Err(FrameError::InvalidSize { size });
    }
    let size = size as usize;
    if size > limit {
        return Err(FrameError::TooLarge { size, limit });
    }
    if buf.len() < 4 + size {
        buf.reserve(4 + size - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(size).freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_frames_and_waits_for_more() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&3i32.to_be_bytes());
        buf.extend_from_slice(b"ab");
        assert_eq!(take_frame(&mut buf, 100), Ok(None));
        buf.extend_from_slice(b"c");
        buf.extend_from_slice(&1i32.to_be_bytes());
        assert_eq!(
            take_frame(&mut buf, 100),
            Ok(Some(Bytes::from_static(b"abc")))
        );
        assert_eq!(take_frame(&mut buf, 100), Ok(None));
        buf.extend_from_slice(b"z");
        assert_eq!(
            take_frame(&mut buf, 100),
            Ok(Some(Bytes::from_static(b"z")))
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn rejects_bad_sizes() {
        let mut buf = BytesMut::from(&(-5i32).to_be_bytes()[..]);
        assert_eq!(
            take_frame(&mut buf, 100),
            Err(FrameError::InvalidSize { size: -5 })
        );
        let mut buf = BytesMut::from(&0i32.to_be_bytes()[..]);
        assert_eq!(
            take_frame(&mut buf, 100),
            Err(FrameError::InvalidSize { size: 0 })
        );
        let mut buf = BytesMut::from(&101i32.to_be_bytes()[..]);
        assert_eq!(
            take_frame(&mut buf, 100),
            Err(FrameError::TooLarge {
                size: 101,
                limit: 100
            })
        );
    }
}
