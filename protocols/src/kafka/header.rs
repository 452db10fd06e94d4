//! Request headers and response framing.
//!
//! The first eight bytes of every request (api key, api version, correlation id) have the
//! same layout in every header version, so they can be read before we know whether we
//! support the request at all. That is what lets us answer an unsupported ApiVersions with
//! the v0 error response a client needs, and any other unsupported request with an error
//! instead of a hang.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

/// The fixed prefix of every request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestPrefix {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("request of {len} bytes is shorter than a request header")]
    Truncated { len: usize },
    #[error("malformed request header: {0}")]
    Malformed(String),
}

#[derive(Debug, thiserror::Error)]
#[error("cannot encode {what}: {reason}")]
pub struct EncodeError {
    what: &'static str,
    reason: String,
}

/// Reads the fixed prefix without consuming anything.
pub fn peek_prefix(frame: &[u8]) -> Result<RequestPrefix, HeaderError> {
    if frame.len() < 8 {
        return Err(HeaderError::Truncated { len: frame.len() });
    }
    Ok(RequestPrefix {
        api_key: i16::from_be_bytes([frame[0], frame[1]]),
        api_version: i16::from_be_bytes([frame[2], frame[3]]),
        correlation_id: i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]),
    })
}

/// Decodes the full request header of a request whose api key is known; `frame` is left
/// at the start of the body.
pub fn decode_header(
    api_key: ApiKey,
    version: i16,
    frame: &mut Bytes,
) -> Result<RequestHeader, HeaderError> {
    let header_version = api_key.request_header_version(version);
    RequestHeader::decode(frame, header_version).map_err(|e| HeaderError::Malformed(e.to_string()))
}

/// Decodes a request body of type `T` at `version`.
///
/// Bytes after the body are ignored, as Apache Kafka ignores them: librdkafka 2.16 sends
/// three extra bytes after a Metadata v12 request, and must still be served.
pub fn decode_body<T: Decodable>(frame: &mut Bytes, version: i16) -> Result<T, HeaderError> {
    T::decode(frame, version).map_err(|e| HeaderError::Malformed(e.to_string()))
}

/// Encodes a complete response frame: size prefix, response header, body.
///
/// `header_version` comes from [`ApiKey::response_header_version`]; ApiVersions always
/// uses header v0 so that a client that sent a version we do not know can still read it.
pub fn encode_response<T: Encodable>(
    correlation_id: i32,
    header_version: i16,
    body: &T,
    version: i16,
) -> Result<Bytes, EncodeError> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let err = |what: &'static str| {
        move |e: anyhow::Error| EncodeError {
            what,
            reason: e.to_string(),
        }
    };
    let header_size = header
        .compute_size(header_version)
        .map_err(err("response header"))?;
    let body_size = body.compute_size(version).map_err(err("response body"))?;
    let size = header_size + body_size;
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(i32::try_from(size).map_err(|_| EncodeError {
        what: "response",
        reason: format!("{size} bytes exceed the frame size limit"),
    })?);
    header
        .encode(&mut buf, header_version)
        .map_err(err("response header"))?;
    body.encode(&mut buf, version)
        .map_err(err("response body"))?;
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiVersionsRequest;
    use kafka_protocol::protocol::StrBytes;

    #[test]
    fn request_round_trip_through_prefix_header_and_body() {
        let header = RequestHeader::default()
            .with_request_api_key(ApiKey::ApiVersions as i16)
            .with_request_api_version(3)
            .with_correlation_id(77)
            .with_client_id(Some(StrBytes::from_static_str("c1")));
        let body = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("x"))
            .with_client_software_version(StrBytes::from_static_str("1"));
        let mut buf = BytesMut::new();
        header.encode(&mut buf, 2).expect("encode header");
        body.encode(&mut buf, 3).expect("encode body");
        let mut frame = buf.freeze();
        let prefix = peek_prefix(&frame).expect("prefix");
        assert_eq!(
            prefix,
            RequestPrefix {
                api_key: 18,
                api_version: 3,
                correlation_id: 77
            }
        );
        let decoded = decode_header(ApiKey::ApiVersions, 3, &mut frame).expect("header");
        assert_eq!(decoded, header);
        let decoded: ApiVersionsRequest = decode_body(&mut frame, 3).expect("body");
        assert_eq!(decoded, body);
    }

    #[test]
    fn short_input_is_rejected_and_trailing_bytes_are_ignored() {
        assert!(matches!(
            peek_prefix(&[0, 1, 2]),
            Err(HeaderError::Truncated { len: 3 })
        ));
        let mut buf = BytesMut::new();
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("abc"))
            .with_client_software_version(StrBytes::from_static_str("1"));
        req.encode(&mut buf, 3).expect("encode");
        let whole = buf.clone().freeze();
        let mut short = whole.slice(..whole.len() - 2);
        assert!(decode_body::<ApiVersionsRequest>(&mut short, 3).is_err());
        buf.put_slice(&[1, 0, 0]);
        let mut frame = buf.freeze();
        assert_eq!(
            decode_body::<ApiVersionsRequest>(&mut frame, 3).expect("decodes"),
            req
        );
    }
}
