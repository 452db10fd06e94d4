//! Retained messages, kept in metadata under `mqtt/retained/<topic>` so they survive
//! restarts and every gateway sees the same ones.
//!
//! Value format, version 1: `1u8`, the time it was retained (i64 big-endian, milliseconds),
//! then the message as an MQTT 5.0 PUBLISH packet (topic, QoS, properties, payload), which
//! the MQTT codec reads back.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use sluice_protocols::mqtt::{MAX_PACKET_SIZE, Packet, Publish, Version, decode, encode};

const VERSION: u8 = 1;

/// The largest retained message kept: metadata values stay small (etcd's requests are
/// limited to 1.5 MiB by default).
pub const MAX_RETAINED: usize = 512 << 10;

pub fn encode_retained(p: &Publish, at_ms: i64) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(VERSION);
    b.put_i64(at_ms);
    let mut p = p.clone();
    p.dup = false;
    p.retain = true;
    p.packet_id = p.packet_id.or(Some(1)).filter(|_| p.qos as u8 > 0);
    encode(&Packet::Publish(p), Version::V5, &mut b);
    b.freeze()
}

/// A stored retained message and when it was retained; `None` if unreadable.
pub fn decode_retained(mut v: &[u8]) -> Option<(Publish, i64)> {
    if v.len() < 9 || v.get_u8() != VERSION {
        return None;
    }
    let at = v.get_i64();
    let mut buf = BytesMut::from(v);
    match decode(&mut buf, Some(Version::V5), MAX_PACKET_SIZE) {
        Ok(Some(Packet::Publish(mut p))) if buf.is_empty() => {
            p.packet_id = None;
            Some((p, at))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocols::mqtt::{Properties, QoS};

    #[test]
    fn golden_v1() {
        let p = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: "plant/a/status".into(),
            packet_id: None,
            properties: Properties {
                content_type: Some("text/plain".into()),
                message_expiry_interval: Some(600),
                ..Default::default()
            },
            payload: Bytes::from_static(b"online"),
        };
        let bytes = encode_retained(&p, 1_795_000_000_000);
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/retained-v1.bin");
        if std::env::var_os("SLUICE_BLESS").is_some() {
            std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
            std::fs::write(&path, &bytes).expect("write golden");
        }
        let golden = std::fs::read(&path).expect("golden file");
        assert_eq!(
            golden,
            bytes.to_vec(),
            "retained message encoding changed: bump VERSION"
        );
        assert_eq!(decode_retained(&golden), Some((p, 1_795_000_000_000)));
        assert_eq!(decode_retained(&golden[..golden.len() - 1]), None);
    }
}
