//! Wills deferred by a drain. A gateway that shuts down (an autoscaler's scale-in, a
//! rolling update) closes its MQTT connections, but its clients have not gone away: they
//! connect again to another gateway at once. Publishing every client's will then would tell
//! every subscriber the whole fleet went offline. So a draining gateway keeps each will
//! under `mqtt/wills/<client id>` with a time it becomes due (the will delay, and at least
//! `--mqtt-drain-will-delay`), and publishes nothing. Whichever gateway has the smallest
//! node id looks at the deferred wills every few seconds: a will whose client connected
//! again since (anywhere) is dropped, as a will delay drops it; a due one is published,
//! once (its key is removed first).
//!
//! Value format, version 1: `1u8`, the connection that left it (16 bytes, a UUID), when it
//! is due (i64 big-endian, milliseconds since the epoch), then the will as an MQTT 5.0
//! PUBLISH packet (topic, QoS, retain, properties, payload), which the MQTT codec reads back.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use sluice_protocols::mqtt::{MAX_PACKET_SIZE, Packet, Publish, Version, decode, encode};
use uuid::Uuid;

const VERSION: u8 = 1;

pub const PREFIX: &str = "mqtt/wills/";

pub fn key(client_id: &str) -> String {
    format!("{PREFIX}{client_id}")
}

/// A will waiting to be published, unless its client comes back first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeferredWill {
    /// The connection that ended: a later one of the same client id drops the will.
    pub conn: Uuid,
    pub due_at_ms: i64,
    pub publish: Publish,
}

impl DeferredWill {
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(VERSION);
        b.put_slice(self.conn.as_bytes());
        b.put_i64(self.due_at_ms);
        let mut p = self.publish.clone();
        p.dup = false;
        // A will's own property, not a PUBLISH one: it has done its work by now.
        p.properties.will_delay_interval = None;
        p.packet_id = Some(1).filter(|_| p.qos as u8 > 0);
        encode(&Packet::Publish(p), Version::V5, &mut b);
        b.freeze()
    }

    /// A stored deferred will; `None` if unreadable.
    pub fn decode(mut v: &[u8]) -> Option<Self> {
        if v.len() < 25 || v.get_u8() != VERSION {
            return None;
        }
        let mut conn = [0u8; 16];
        v.copy_to_slice(&mut conn);
        let due_at_ms = v.get_i64();
        let mut buf = BytesMut::from(v);
        match decode(&mut buf, Some(Version::V5), MAX_PACKET_SIZE) {
            Ok(Some(Packet::Publish(mut p))) if buf.is_empty() => {
                p.packet_id = None;
                Some(Self {
                    conn: Uuid::from_bytes(conn),
                    due_at_ms,
                    publish: p,
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocols::mqtt::{Properties, QoS};

    fn sample() -> DeferredWill {
        DeferredWill {
            conn: Uuid::from_u128(0x1234),
            due_at_ms: 1_796_000_000_000,
            publish: Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: true,
                topic: "devices/42/status".into(),
                packet_id: None,
                properties: Properties {
                    content_type: Some("text/plain".into()),
                    will_delay_interval: None,
                    user_properties: vec![("reason".into(), "gone".into())],
                    ..Properties::default()
                },
                payload: Bytes::from_static(b"offline"),
            },
        }
    }

    #[test]
    fn golden_v1() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/will-v1.bin");
        let w = sample();
        if std::env::var_os("SLUICE_WRITE_GOLDEN").is_some() {
            std::fs::write(&path, w.encode()).expect("write golden");
        }
        let golden = std::fs::read(&path).expect("golden file");
        assert_eq!(DeferredWill::decode(&golden), Some(w.clone()));
        assert_eq!(&w.encode()[..], &golden[..]);
        let mut other = golden.clone();
        other[0] = 2;
        assert_eq!(DeferredWill::decode(&other), None);
        assert_eq!(DeferredWill::decode(&golden[..golden.len() - 1]), None);
        // QoS 0 wills have no packet id.
        let q0 = DeferredWill {
            publish: Publish {
                qos: QoS::AtMostOnce,
                ..w.publish.clone()
            },
            ..w
        };
        assert_eq!(DeferredWill::decode(&q0.encode()), Some(q0.clone()));
        // The will delay is not kept (PUBLISH has no such property).
        let mut delayed = q0.clone();
        delayed.publish.properties.will_delay_interval = Some(30);
        assert_eq!(DeferredWill::decode(&delayed.encode()), Some(q0));
    }
}
