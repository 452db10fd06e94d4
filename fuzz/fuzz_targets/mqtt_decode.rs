//! MQTT packets from arbitrary bytes, in each version (and CONNECT's own detection):
//! decoding never panics, and what decodes encodes back to a packet that decodes to itself.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sluice_protocols::mqtt::{Version, decode, encode};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let version = match selector % 3 {
        0 => None,
        1 => Some(Version::V311),
        _ => Some(Version::V5),
    };
    let mut buf = BytesMut::from(bytes);
    // Every packet in the buffer, as a connection would read them.
    while let Ok(Some(packet)) = decode(&mut buf, version, 1 << 20) {
        let v = version.unwrap_or(match &packet {
            sluice_protocols::mqtt::Packet::Connect(c) => c.version,
            _ => Version::V5,
        });
        let mut again = BytesMut::new();
        encode(&packet, v, &mut again);
        let redecoded = decode(&mut again, Some(v), 1 << 20);
        assert_eq!(redecoded, Ok(Some(packet)), "re-encoding changed the packet");
    }
});
