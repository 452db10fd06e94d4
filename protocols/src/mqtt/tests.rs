use super::*;
use bytes::BytesMut;
use proptest::prelude::*;

fn round_trip(p: &Packet, v: Version) -> Packet {
    let mut buf = BytesMut::new();
    encode(p, v, &mut buf);
    assert_eq!(buf.len(), encoded_len(p, v));
    let before = if matches!(p, Packet::Connect(_)) {
        None
    } else {
        Some(v)
    };
    // Fed a byte at a time, the decoder waits for the whole packet and consumes nothing.
    let whole = buf.clone();
    for cut in 0..whole.len() {
        let mut part = BytesMut::from(&whole[..cut]);
        assert_eq!(decode(&mut part, before, MAX_PACKET_SIZE), Ok(None));
        assert_eq!(part.len(), cut);
    }
    let got = decode(&mut buf, before, MAX_PACKET_SIZE)
        .expect("decodes")
        .expect("whole");
    assert!(buf.is_empty());
    got
}

fn s() -> impl Strategy<Value = String> {
    "[a-z/é]{0,12}"
}

fn b() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from)
}

fn props() -> impl Strategy<Value = Properties> {
    (
        proptest::option::of(0u8..2),
        proptest::option::of(any::<u32>()),
        proptest::option::of(s()),
        proptest::option::of(b()),
        proptest::collection::vec((s(), s()), 0..3),
        proptest::option::of(1u16..),
    )
        .prop_map(|(pfi, exp, ct, cd, up, alias)| Properties {
            payload_format_indicator: pfi,
            message_expiry_interval: exp,
            content_type: ct,
            correlation_data: cd,
            user_properties: up,
            topic_alias: alias,
            ..Default::default()
        })
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn publish(v5: bool) -> impl Strategy<Value = Packet> {
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        s(),
        1u16..,
        props(),
        b(),
    )
        .prop_map(move |(dup, qos, retain, topic, id, properties, payload)| {
            Packet::Publish(Publish {
                dup: dup && qos != QoS::AtMostOnce,
                qos,
                retain,
                topic,
                packet_id: (qos != QoS::AtMostOnce).then_some(id),
                properties: if v5 {
                    properties
                } else {
                    Properties::default()
                },
                payload,
            })
        })
}

proptest! {
    #[test]
    fn publish_round_trips(p5 in publish(true), p3 in publish(false)) {
        prop_assert_eq!(round_trip(&p5, Version::V5), p5);
        prop_assert_eq!(round_trip(&p3, Version::V311), p3);
    }

    #[test]
    fn connect_round_trips(
        v5 in any::<bool>(), clean in any::<bool>(), keep_alive in any::<u16>(), id in s(),
        will in proptest::option::of((s(), b(), qos(), any::<bool>())),
        user in proptest::option::of(s()), password in proptest::option::of(b()),
        session_expiry in proptest::option::of(any::<u32>()),
    ) {
        let version = if v5 { Version::V5 } else { Version::V311 };
        let c = Packet::Connect(Box::new(Connect {
            version,
            clean_start: clean,
            keep_alive,
            client_id: id,
            will: will.map(|(topic, payload, qos, retain)| Will {
                topic, payload, qos, retain,
                properties: Properties {
                    will_delay_interval: v5.then_some(5),
                    ..Default::default()
                },
            }),
            // 3.1.1 allows a password only with a user name.
            password: if v5 || user.is_some() { password } else { None },
            username: user,
            properties: Properties {
                session_expiry_interval: session_expiry.filter(|_| v5),
                ..Default::default()
            },
        }));
        prop_assert_eq!(round_trip(&c, version), c);
    }

    #[test]
    fn acks_and_subscriptions_round_trip(id in 1u16.., reason in prop_oneof![Just(0u8), Just(0x10u8), Just(0x87u8)],
                                         filters in proptest::collection::vec((s(), qos(), any::<bool>(), any::<bool>(), 0u8..3), 1..4)) {
        let ack = Ack { packet_id: id, reason, properties: Properties {
            reason_string: (reason != 0).then(|| "why".to_string()), ..Default::default() } };
        for p in [Packet::PubAck(ack.clone()), Packet::PubRec(ack.clone()), Packet::PubRel(ack.clone()), Packet::PubComp(ack.clone())] {
            prop_assert_eq!(round_trip(&p, Version::V5), p);
        }
        let plain = Ack { packet_id: id, reason: 0, properties: Properties::default() };
        prop_assert_eq!(round_trip(&Packet::PubRel(plain.clone()), Version::V311), Packet::PubRel(plain));
        let sub = Subscribe {
            packet_id: id,
            filters: filters.iter().map(|(f, q, nl, rap, rh)| (f.clone(), SubscriptionOptions {
                qos: *q, no_local: *nl, retain_as_published: *rap, retain_handling: *rh })).collect(),
            properties: Properties { subscription_identifiers: vec![7], ..Default::default() },
        };
        prop_assert_eq!(round_trip(&Packet::Subscribe(sub.clone()), Version::V5), Packet::Subscribe(sub.clone()));
        let sub3 = Subscribe {
            properties: Properties::default(),
            filters: sub.filters.iter().map(|(f, o)| (f.clone(), SubscriptionOptions {
                qos: o.qos, no_local: false, retain_as_published: false, retain_handling: 0 })).collect(),
            ..sub
        };
        prop_assert_eq!(round_trip(&Packet::Subscribe(sub3.clone()), Version::V311), Packet::Subscribe(sub3));
    }

    /// Valid packets with bytes changed, cut or inserted: decoding never panics, and
    /// whatever still decodes encodes back to a packet that decodes to itself.
    #[test]
    fn mutated_packets_never_panic(
        p in prop_oneof![publish(true), publish(false)],
        v5 in any::<bool>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let version = if v5 { Version::V5 } else { Version::V311 };
        let mut bytes = BytesMut::new();
        encode(&p, version, &mut bytes);
        let mut bytes = bytes.to_vec();
        for (at, value, kind) in edits {
            if bytes.is_empty() {
                break;
            }
            let i = at.index(bytes.len());
            match kind {
                0 => bytes[i] = value,
                1 => bytes.truncate(i),
                _ => bytes.insert(i, value),
            }
        }
        let mut buf = BytesMut::from(&bytes[..]);
        if let Ok(Some(decoded)) = decode(&mut buf, Some(version), 1 << 20) {
            let mut again = BytesMut::new();
            encode(&decoded, version, &mut again);
            let redecoded = decode(&mut again, Some(version), 1 << 20);
            prop_assert_eq!(redecoded, Ok(Some(decoded)));
        }
    }

    /// Whatever the bytes, decoding returns a packet, "not yet", or an error: never a panic.
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), v in 0u8..3) {
        let version = match v { 0 => None, 1 => Some(Version::V311), _ => Some(Version::V5) };
        let mut buf = BytesMut::from(&bytes[..]);
        let _ = decode(&mut buf, version, 1 << 20);
    }
}

#[test]
fn a_mosquitto_connect_decodes() {
    // mosquitto_sub -V mqttv311 -i probe -k 60 -c: CONNECT as sent on the wire.
    let wire = b"\x10\x11\x00\x04MQTT\x04\x00\x00\x3c\x00\x05probe";
    let mut buf = BytesMut::from(&wire[..]);
    let Some(Packet::Connect(c)) = decode(&mut buf, None, 1024).expect("decodes") else {
        panic!("not a connect")
    };
    assert_eq!(
        (c.version, c.keep_alive, c.client_id.as_str(), c.clean_start),
        (Version::V311, 60, "probe", false)
    );
}

#[test]
fn short_forms_of_5_0_acks_and_disconnect() {
    // PUBACK with only a packet id means success; DISCONNECT with no body, normal.
    let mut buf = BytesMut::from(&b"\x40\x02\x00\x07\xe0\x00"[..]);
    assert_eq!(
        decode(&mut buf, Some(Version::V5), 1024),
        Ok(Some(Packet::PubAck(Ack {
            packet_id: 7,
            reason: 0,
            properties: Properties::default()
        })))
    );
    assert_eq!(
        decode(&mut buf, Some(Version::V5), 1024),
        Ok(Some(Packet::Disconnect(Disconnect {
            reason: 0,
            properties: Properties::default()
        })))
    );
    // Encoded the same short way.
    let mut out = BytesMut::new();
    encode(
        &Packet::PubAck(Ack {
            packet_id: 7,
            reason: 0,
            properties: Properties::default(),
        }),
        Version::V5,
        &mut out,
    );
    assert_eq!(&out[..], b"\x40\x02\x00\x07");
}

fn error_of(bytes: &[u8], v: Option<Version>) -> DecodeError {
    let mut buf = BytesMut::from(bytes);
    decode(&mut buf, v, 1024).expect_err("refused")
}

#[test]
fn violations_get_their_reason_codes() {
    let v5 = Some(Version::V5);
    // Not CONNECT first.
    assert_eq!(
        error_of(b"\xc0\x00", None).reason_code(),
        reason::PROTOCOL_ERROR
    );
    // Unknown protocol level.
    let e = error_of(b"\x10\x0d\x00\x04MQTT\x07\x02\x00\x3c\x00\x01x", None);
    assert_eq!(e.reason_code(), reason::UNSUPPORTED_PROTOCOL_VERSION);
    // CONNECT reserved flag.
    assert_eq!(
        error_of(b"\x10\x0d\x00\x04MQTT\x04\x03\x00\x3c\x00\x01x", None).reason_code(),
        reason::MALFORMED_PACKET
    );
    // QoS 3 PUBLISH; DUP on QoS 0; wrong SUBSCRIBE flags.
    assert_eq!(
        error_of(b"\x36\x03\x00\x01a", v5).reason_code(),
        reason::MALFORMED_PACKET
    );
    assert_eq!(
        error_of(b"\x38\x04\x00\x01a\x00", v5).reason_code(),
        reason::MALFORMED_PACKET
    );
    assert_eq!(
        error_of(b"\x80\x06\x00\x01\x00\x00\x01a", Some(Version::V311)).reason_code(),
        reason::MALFORMED_PACKET
    );
    // Packet id 0.
    assert_eq!(
        error_of(b"\x32\x05\x00\x01a\x00\x00", Some(Version::V311)).reason_code(),
        reason::PROTOCOL_ERROR
    );
    // A property twice; a property where it is not allowed (Topic Alias in PUBACK).
    assert_eq!(
        error_of(b"\x30\x08\x00\x01a\x04\x01\x00\x01\x01", v5).reason_code(),
        reason::PROTOCOL_ERROR
    );
    assert_eq!(
        error_of(b"\x40\x07\x00\x01\x00\x03\x23\x00\x05", v5).reason_code(),
        reason::PROTOCOL_ERROR
    );
    // A string with U+0000; invalid UTF-8.
    assert_eq!(
        error_of(b"\x30\x04\x00\x02a\x00", Some(Version::V311)).reason_code(),
        reason::MALFORMED_PACKET
    );
    assert_eq!(
        error_of(b"\x30\x04\x00\x02\xc3\x28", Some(Version::V311)).reason_code(),
        reason::MALFORMED_PACKET
    );
    // Remaining length over four bytes.
    assert_eq!(
        error_of(b"\x30\xff\xff\xff\xff\x01", v5).reason_code(),
        reason::MALFORMED_PACKET
    );
    // AUTH does not exist in 3.1.1.
    assert_eq!(
        error_of(b"\xf0\x00", Some(Version::V311)).reason_code(),
        reason::MALFORMED_PACKET
    );
    // SUBSCRIBE with no filter.
    assert_eq!(
        error_of(b"\x82\x03\x00\x01\x00", v5).reason_code(),
        reason::PROTOCOL_ERROR
    );
}

#[test]
fn oversized_packets_are_refused_from_their_header() {
    // A PUBLISH announcing 1 MiB is refused with only its first bytes received.
    let mut buf = BytesMut::from(&b"\x30\x80\x80\x40"[..]);
    assert_eq!(
        decode(&mut buf, Some(Version::V5), 4096),
        Err(DecodeError::TooLarge {
            size: 1 + 3 + (1 << 20),
            max: 4096
        })
    );
}

#[test]
fn connack_codes_map_to_3_1_1_return_codes() {
    let mut buf = BytesMut::new();
    let nack = |code| {
        Packet::ConnAck(ConnAck {
            session_present: false,
            code,
            properties: Properties::default(),
        })
    };
    encode(
        &nack(reason::BAD_USER_NAME_OR_PASSWORD),
        Version::V311,
        &mut buf,
    );
    assert_eq!(&buf[..], b"\x20\x02\x00\x04");
    assert_eq!(
        decode(&mut buf, Some(Version::V311), 16),
        Ok(Some(nack(reason::BAD_USER_NAME_OR_PASSWORD)))
    );
}

/// Found by fuzzing: a 3.1.1 SUBACK may only carry return codes 0, 1, 2 and 0x80.
#[test]
fn reserved_3_1_1_suback_codes_are_malformed() {
    let mut buf = BytesMut::from(&b"\x90\x05\x20\x0b\x80\x00\x1f"[..]);
    assert!(matches!(
        decode(&mut buf, Some(Version::V311), 1 << 20),
        Err(DecodeError::Malformed(_))
    ));
    let mut buf = BytesMut::from(&b"\x90\x04\x20\x0b\x80\x02"[..]);
    assert!(decode(&mut buf, Some(Version::V311), 1 << 20).is_ok());
}

#[test]
fn publish_sizes_are_worked_out_as_encoded() {
    let mut props = Properties {
        message_expiry_interval: Some(60),
        content_type: Some("text/plain".into()),
        user_properties: vec![("k".into(), "v".repeat(200))],
        ..Properties::default()
    };
    props.subscription_identifiers = vec![1, 300, 70_000];
    for (qos, packet_id) in [(QoS::AtMostOnce, None), (QoS::AtLeastOnce, Some(7))] {
        for payload in [0usize, 100, 200_000] {
            let p = Packet::Publish(Publish {
                dup: false,
                qos,
                retain: true,
                topic: "a/b".into(),
                packet_id,
                properties: props.clone(),
                payload: Bytes::from(vec![1u8; payload]),
            });
            for version in [Version::V311, Version::V5] {
                let mut out = BytesMut::new();
                encode(&p, version, &mut out);
                assert_eq!(encoded_len(&p, version), out.len());
                let decoded = decode(&mut out, Some(version), usize::MAX)
                    .expect("decodes")
                    .expect("whole");
                if version == Version::V5 {
                    assert_eq!(decoded, p);
                }
            }
        }
    }
}
