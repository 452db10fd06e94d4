//! Which protocol a connection speaks, from its first bytes: every listener accepts Kafka,
//! MQTT, HTTP and TLS (inside which the same question is asked again).

/// What the first bytes of a connection say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// A Kafka request: a four-byte big-endian size (requests are far below 16 MiB, so
    /// the first byte is 0).
    Kafka,
    /// An MQTT CONNECT: packet type 1, flags 0.
    Mqtt,
    /// An HTTP/1.1 request line (metrics, health, admin, MQTT over WebSocket).
    Http,
    /// A TLS handshake record.
    Tls,
}

/// Bytes needed to decide.
pub const SNIFF_BYTES: usize = 1;

/// The protocol of a connection whose first byte is `first`; `None` if it is none of ours.
pub fn sniff(first: u8) -> Option<Protocol> {
    match first {
        0x00 => Some(Protocol::Kafka),
        0x10 => Some(Protocol::Mqtt),
        0x16 => Some(Protocol::Tls),
        b'A'..=b'Z' => Some(Protocol::Http),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_of_real_clients() {
        // librdkafka's ApiVersions request; mosquitto's CONNECT; curl; a TLS ClientHello.
        assert_eq!(
            sniff(b"\x00\x00\x00\x23\x00\x12\x00\x03"[0]),
            Some(Protocol::Kafka)
        );
        assert_eq!(sniff(b"\x10\x11\x00\x04MQTT"[0]), Some(Protocol::Mqtt));
        assert_eq!(sniff(b"GET /metrics HTTP/1.1"[0]), Some(Protocol::Http));
        assert_eq!(sniff(b"\x16\x03\x01\x02\x00"[0]), Some(Protocol::Tls));
        assert_eq!(sniff(0x30), None); // an MQTT PUBLISH cannot open a connection
        assert_eq!(sniff(0xff), None);
    }
}
