//! Packets to and from bytes.

use bytes::{BufMut, BytesMut};

use super::properties::Context;
use super::wire::{
    MAX_VARINT, Reader, put_binary, put_string, put_varint, read_varint, varint_len,
};
use super::*;

const CONNECT: u8 = 1;
const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const PUBREC: u8 = 5;
const PUBREL: u8 = 6;
const PUBCOMP: u8 = 7;
const SUBSCRIBE: u8 = 8;
const SUBACK: u8 = 9;
const UNSUBSCRIBE: u8 = 10;
const UNSUBACK: u8 = 11;
const PINGREQ: u8 = 12;
const PINGRESP: u8 = 13;
const DISCONNECT: u8 = 14;
const AUTH: u8 = 15;

/// Takes one packet off the front of `buf`.
///
/// `version` is `None` until CONNECT has been received: then only CONNECT is accepted, and
/// its protocol level decides how everything after it is read. `Ok(None)`: `buf` does not
/// hold a whole packet yet (nothing is consumed). A packet larger than `max_size` is
/// refused as soon as its fixed header shows its size, before it is buffered.
pub fn decode(
    buf: &mut BytesMut,
    version: Option<Version>,
    max_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let Some((remaining, n)) = read_varint(&buf[1..])? else {
        return Ok(None);
    };
    let size = 1 + n + remaining as usize;
    if size > max_size {
        return Err(DecodeError::TooLarge {
            size,
            max: max_size,
        });
    }
    if buf.len() < size {
        return Ok(None);
    }
    let first = buf[0];
    let frame = buf.split_to(size).freeze();
    let body = Reader(frame.slice(1 + n..));
    let (kind, flags) = (first >> 4, first & 0x0f);
    let Some(version) = version else {
        if kind != CONNECT {
            return Err(DecodeError::Protocol("the first packet must be CONNECT"));
        }
        check_flags(flags, 0)?;
        return decode_connect(body).map(|c| Some(Packet::Connect(Box::new(c))));
    };
    let v5 = version == Version::V5;
    let packet = match kind {
        CONNECT => return Err(DecodeError::Protocol("a second CONNECT")),
        CONNACK => {
            check_flags(flags, 0)?;
            decode_connack(body, v5)?
        }
        PUBLISH => Packet::Publish(decode_publish(body, flags, v5)?),
        PUBACK | PUBREC | PUBCOMP => {
            check_flags(flags, 0)?;
            let ack = decode_ack(body, v5)?;
            match kind {
                PUBACK => Packet::PubAck(ack),
                PUBREC => Packet::PubRec(ack),
                _ => Packet::PubComp(ack),
            }
        }
        PUBREL => {
            check_flags(flags, 2)?;
            Packet::PubRel(decode_ack(body, v5)?)
        }
        SUBSCRIBE => {
            check_flags(flags, 2)?;
            Packet::Subscribe(decode_subscribe(body, v5)?)
        }
        SUBACK => {
            check_flags(flags, 0)?;
            let (packet_id, reasons, properties) = decode_reasons(body, v5, Context::SubAck)?;
            if !v5 && reasons.iter().any(|c| !matches!(c, 0 | 1 | 2 | 0x80)) {
                return Err(DecodeError::Malformed(
                    "SUBACK return code reserved in 3.1.1",
                ));
            }
            Packet::SubAck(SubAck {
                packet_id,
                reasons,
                properties,
            })
        }
        UNSUBSCRIBE => {
            check_flags(flags, 2)?;
            Packet::Unsubscribe(decode_unsubscribe(body, v5)?)
        }
        UNSUBACK => {
            check_flags(flags, 0)?;
            let (packet_id, reasons, properties) = if v5 {
                decode_reasons(body, v5, Context::UnsubAck)?
            } else {
                let mut body = body;
                let id = body.u16()?;
                end(&body)?;
                (id, Vec::new(), Properties::default())
            };
            Packet::UnsubAck(UnsubAck {
                packet_id,
                reasons,
                properties,
            })
        }
        PINGREQ | PINGRESP => {
            check_flags(flags, 0)?;
            end(&body)?;
            if kind == PINGREQ {
                Packet::PingReq
            } else {
                Packet::PingResp
            }
        }
        DISCONNECT => {
            check_flags(flags, 0)?;
            let (reason, properties) = decode_reason_and_properties(body, v5, Context::Disconnect)?;
            Packet::Disconnect(Disconnect { reason, properties })
        }
        AUTH if v5 => {
            check_flags(flags, 0)?;
            let (reason, properties) = decode_reason_and_properties(body, v5, Context::Auth)?;
            Packet::Auth(Auth { reason, properties })
        }
        _ => return Err(DecodeError::Malformed("reserved packet type")),
    };
    Ok(Some(packet))
}

fn check_flags(flags: u8, expected: u8) -> Result<(), DecodeError> {
    if flags != expected {
        return Err(DecodeError::Malformed(
            "reserved fixed header flags are wrong",
        ));
    }
    Ok(())
}

fn end(r: &Reader) -> Result<(), DecodeError> {
    if r.remaining() > 0 {
        return Err(DecodeError::Malformed(
            "bytes left over at the end of a packet",
        ));
    }
    Ok(())
}

fn packet_id(r: &mut Reader) -> Result<u16, DecodeError> {
    let id = r.u16()?;
    if id == 0 {
        return Err(DecodeError::Protocol("packet identifier 0"));
    }
    Ok(id)
}

fn decode_connect(mut r: Reader) -> Result<Connect, DecodeError> {
    let name = r.string()?;
    let level = r.u8()?;
    let version = match (name.as_str(), level) {
        ("MQTT", 4) => Version::V311,
        ("MQTT", 5) => Version::V5,
        _ => return Err(DecodeError::UnsupportedProtocol { name, level }),
    };
    let v5 = version == Version::V5;
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(DecodeError::Malformed("CONNECT reserved flag is set"));
    }
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let has_password = flags & 0x40 != 0;
    let has_username = flags & 0x80 != 0;
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(DecodeError::Malformed(
            "will QoS or retain set without a will",
        ));
    }
    let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::Malformed("will QoS 3"))?;
    if !v5 && has_password && !has_username {
        return Err(DecodeError::Malformed("a password without a user name"));
    }
    let keep_alive = r.u16()?;
    let properties = if v5 {
        Properties::decode(&mut r, Context::Connect)?
    } else {
        Properties::default()
    };
    let client_id = r.string()?;
    let will = if will_flag {
        let properties = if v5 {
            Properties::decode(&mut r, Context::Will)?
        } else {
            Properties::default()
        };
        let topic = r.string()?;
        let payload = r.binary()?;
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(r.string()?)
    } else {
        None
    };
    let password = if has_password {
        Some(r.binary()?)
    } else {
        None
    };
    end(&r)?;
    Ok(Connect {
        version,
        clean_start: flags & 0x02 != 0,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

/// 3.1.1 CONNACK return codes to and from 5.0 reason codes.
fn v3_return_code(reason: u8) -> u8 {
    match reason {
        reason::SUCCESS => 0,
        reason::UNSUPPORTED_PROTOCOL_VERSION => 1,
        reason::CLIENT_IDENTIFIER_NOT_VALID => 2,
        reason::BAD_USER_NAME_OR_PASSWORD => 4,
        reason::NOT_AUTHORIZED => 5,
        _ => 3, // server unavailable
    }
}

fn v5_reason(return_code: u8) -> u8 {
    match return_code {
        0 => reason::SUCCESS,
        1 => reason::UNSUPPORTED_PROTOCOL_VERSION,
        2 => reason::CLIENT_IDENTIFIER_NOT_VALID,
        4 => reason::BAD_USER_NAME_OR_PASSWORD,
        5 => reason::NOT_AUTHORIZED,
        _ => reason::SERVER_UNAVAILABLE,
    }
}

fn decode_connack(mut r: Reader, v5: bool) -> Result<Packet, DecodeError> {
    let ack_flags = r.u8()?;
    if ack_flags & 0xfe != 0 {
        return Err(DecodeError::Malformed("CONNACK reserved flags are set"));
    }
    let code = r.u8()?;
    let (code, properties) = if v5 {
        (code, Properties::decode(&mut r, Context::ConnAck)?)
    } else {
        (v5_reason(code), Properties::default())
    };
    end(&r)?;
    Ok(Packet::ConnAck(ConnAck {
        session_present: ack_flags & 0x01 != 0,
        code,
        properties,
    }))
}

fn decode_publish(mut r: Reader, flags: u8, v5: bool) -> Result<Publish, DecodeError> {
    let qos = QoS::from_u8((flags >> 1) & 0x03).ok_or(DecodeError::Malformed("PUBLISH QoS 3"))?;
    let dup = flags & 0x08 != 0;
    if dup && qos == QoS::AtMostOnce {
        return Err(DecodeError::Malformed("DUP set on a QoS 0 PUBLISH"));
    }
    let topic = r.string()?;
    let packet_id = if qos == QoS::AtMostOnce {
        None
    } else {
        Some(packet_id(&mut r)?)
    };
    let properties = if v5 {
        Properties::decode(&mut r, Context::Publish)?
    } else {
        Properties::default()
    };
    Ok(Publish {
        dup,
        qos,
        retain: flags & 0x01 != 0,
        topic,
        packet_id,
        properties,
        payload: r.rest(),
    })
}

fn decode_ack(mut r: Reader, v5: bool) -> Result<Ack, DecodeError> {
    let packet_id = packet_id(&mut r)?;
    let (reason, properties) = decode_reason_and_properties(r, v5, Context::Ack)?;
    Ok(Ack {
        packet_id,
        reason,
        properties,
    })
}

/// An optional reason code then optional properties (5.0), or nothing (3.1.1).
fn decode_reason_and_properties(
    mut r: Reader,
    v5: bool,
    ctx: Context,
) -> Result<(u8, Properties), DecodeError> {
    if !v5 || r.remaining() == 0 {
        end(&r)?;
        return Ok((reason::SUCCESS, Properties::default()));
    }
    let code = r.u8()?;
    let properties = if r.remaining() > 0 {
        Properties::decode(&mut r, ctx)?
    } else {
        Properties::default()
    };
    end(&r)?;
    Ok((code, properties))
}

fn decode_reasons(
    mut r: Reader,
    v5: bool,
    ctx: Context,
) -> Result<(u16, Vec<u8>, Properties), DecodeError> {
    let (id, properties) = id_and_properties(&mut r, v5, ctx)?;
    Ok((id, r.rest().to_vec(), properties))
}

/// The packet id, then (5.0) the properties, that SUBSCRIBE, UNSUBSCRIBE and their
/// acknowledgements start with.
fn id_and_properties(
    r: &mut Reader,
    v5: bool,
    ctx: Context,
) -> Result<(u16, Properties), DecodeError> {
    let id = packet_id(r)?;
    let properties = if v5 {
        Properties::decode(r, ctx)?
    } else {
        Properties::default()
    };
    Ok((id, properties))
}

fn decode_subscribe(mut r: Reader, v5: bool) -> Result<Subscribe, DecodeError> {
    let (packet_id, properties) = id_and_properties(&mut r, v5, Context::Subscribe)?;
    let mut filters = Vec::new();
    while r.remaining() > 0 {
        let filter = r.string()?;
        let options = r.u8()?;
        let reserved = if v5 { 0xc0 } else { 0xfc };
        if options & reserved != 0 {
            return Err(DecodeError::Malformed(
                "subscription options reserved bits are set",
            ));
        }
        let qos =
            QoS::from_u8(options & 0x03).ok_or(DecodeError::Malformed("subscription QoS 3"))?;
        let retain_handling = (options >> 4) & 0x03;
        if retain_handling == 3 {
            return Err(DecodeError::Protocol("retain handling 3"));
        }
        filters.push((
            filter,
            SubscriptionOptions {
                qos,
                no_local: options & 0x04 != 0,
                retain_as_published: options & 0x08 != 0,
                retain_handling,
            },
        ));
    }
    if filters.is_empty() {
        return Err(DecodeError::Protocol("SUBSCRIBE without a topic filter"));
    }
    Ok(Subscribe {
        packet_id,
        filters,
        properties,
    })
}

fn decode_unsubscribe(mut r: Reader, v5: bool) -> Result<Unsubscribe, DecodeError> {
    let (packet_id, properties) = id_and_properties(&mut r, v5, Context::Unsubscribe)?;
    let mut filters = Vec::new();
    while r.remaining() > 0 {
        filters.push(r.string()?);
    }
    if filters.is_empty() {
        return Err(DecodeError::Protocol("UNSUBSCRIBE without a topic filter"));
    }
    Ok(Unsubscribe {
        packet_id,
        filters,
        properties,
    })
}

/// Appends `packet` as `version` encodes it. Fields the version does not have (3.1.1:
/// properties, reason codes other than CONNACK's and SUBACK's) are left out.
pub fn encode(packet: &Packet, version: Version, buf: &mut BytesMut) {
    let v5 = version == Version::V5;
    let mut body = BytesMut::new();
    let first = match packet {
        Packet::Connect(c) => {
            encode_connect(c, &mut body);
            CONNECT << 4
        }
        Packet::ConnAck(a) => {
            body.put_u8(u8::from(a.session_present));
            if v5 {
                body.put_u8(a.code);
                a.properties.encode(&mut body);
            } else {
                body.put_u8(v3_return_code(a.code));
            }
            CONNACK << 4
        }
        // The most frequent packet by far: written in place, its size worked out first.
        Packet::Publish(p) => return encode_publish(p, v5, buf),
        Packet::PubAck(a) => encode_ack(a, v5, &mut body, PUBACK << 4),
        Packet::PubRec(a) => encode_ack(a, v5, &mut body, PUBREC << 4),
        Packet::PubRel(a) => encode_ack(a, v5, &mut body, (PUBREL << 4) | 2),
        Packet::PubComp(a) => encode_ack(a, v5, &mut body, PUBCOMP << 4),
        Packet::Subscribe(s) => {
            body.put_u16(s.packet_id);
            if v5 {
                s.properties.encode(&mut body);
            }
            for (filter, o) in &s.filters {
                put_string(&mut body, filter);
                let mut options = o.qos as u8;
                if v5 {
                    options |= (u8::from(o.no_local) << 2)
                        | (u8::from(o.retain_as_published) << 3)
                        | (o.retain_handling << 4);
                }
                body.put_u8(options);
            }
            (SUBSCRIBE << 4) | 2
        }
        Packet::SubAck(s) => {
            body.put_u16(s.packet_id);
            if v5 {
                s.properties.encode(&mut body);
                body.put_slice(&s.reasons);
            } else {
                for r in &s.reasons {
                    body.put_u8(if *r >= 0x80 { 0x80 } else { *r });
                }
            }
            SUBACK << 4
        }
        Packet::Unsubscribe(u) => {
            body.put_u16(u.packet_id);
            if v5 {
                u.properties.encode(&mut body);
            }
            for f in &u.filters {
                put_string(&mut body, f);
            }
            (UNSUBSCRIBE << 4) | 2
        }
        Packet::UnsubAck(u) => {
            body.put_u16(u.packet_id);
            if v5 {
                u.properties.encode(&mut body);
                body.put_slice(&u.reasons);
            }
            UNSUBACK << 4
        }
        Packet::PingReq => PINGREQ << 4,
        Packet::PingResp => PINGRESP << 4,
        Packet::Disconnect(d) => {
            if v5 {
                encode_reason_and_properties(d.reason, &d.properties, &mut body);
            }
            DISCONNECT << 4
        }
        Packet::Auth(a) => {
            encode_reason_and_properties(a.reason, &a.properties, &mut body);
            AUTH << 4
        }
    };
    buf.reserve(5 + body.len());
    buf.put_u8(first);
    put_varint(buf, body.len() as u32);
    buf.put_slice(&body);
}

/// Size of `packet` on the wire, for checking a peer's maximum packet size before
/// sending.
pub fn encoded_len(packet: &Packet, version: Version) -> usize {
    if let Packet::Publish(p) = packet {
        let remaining = publish_remaining_len(p, version == Version::V5);
        return 1 + varint_len(remaining as u32) + remaining;
    }
    let mut buf = BytesMut::new();
    encode(packet, version, &mut buf);
    buf.len()
}

fn encode_publish(p: &Publish, v5: bool, buf: &mut BytesMut) {
    let remaining = publish_remaining_len(p, v5);
    buf.reserve(1 + varint_len(remaining as u32) + remaining);
    buf.put_u8((PUBLISH << 4) | (u8::from(p.dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain));
    put_varint(buf, remaining as u32);
    put_string(buf, &p.topic);
    if let Some(id) = p.packet_id {
        buf.put_u16(id);
    }
    if v5 {
        p.properties.encode(buf);
    }
    buf.put_slice(&p.payload);
}

/// The remaining length (after the fixed header's first byte and the length itself) of a
/// PUBLISH.
fn publish_remaining_len(p: &Publish, v5: bool) -> usize {
    let properties = if v5 {
        let n = p.properties.body_len();
        varint_len(n as u32) + n
    } else {
        0
    };
    2 + p.topic.len() + if p.packet_id.is_some() { 2 } else { 0 } + properties + p.payload.len()
}

fn encode_connect(c: &Connect, body: &mut BytesMut) {
    let v5 = c.version == Version::V5;
    put_string(body, "MQTT");
    body.put_u8(c.version.level());
    let mut flags = u8::from(c.clean_start) << 1;
    if let Some(w) = &c.will {
        flags |= 0x04 | ((w.qos as u8) << 3) | (u8::from(w.retain) << 5);
    }
    if c.password.is_some() {
        flags |= 0x40;
    }
    if c.username.is_some() {
        flags |= 0x80;
    }
    body.put_u8(flags);
    body.put_u16(c.keep_alive);
    if v5 {
        c.properties.encode(body);
    }
    put_string(body, &c.client_id);
    if let Some(w) = &c.will {
        if v5 {
            w.properties.encode(body);
        }
        put_string(body, &w.topic);
        put_binary(body, &w.payload);
    }
    if let Some(u) = &c.username {
        put_string(body, u);
    }
    if let Some(p) = &c.password {
        put_binary(body, p);
    }
}

fn encode_ack(a: &Ack, v5: bool, body: &mut BytesMut, first: u8) -> u8 {
    body.put_u16(a.packet_id);
    if v5 && (a.reason != reason::SUCCESS || a.properties != Properties::default()) {
        encode_reason_and_properties(a.reason, &a.properties, body);
    }
    first
}

/// The short forms of 5.0: nothing for success without properties, the reason code alone
/// without properties.
fn encode_reason_and_properties(code: u8, properties: &Properties, body: &mut BytesMut) {
    let empty = *properties == Properties::default();
    if code == reason::SUCCESS && empty {
        return;
    }
    body.put_u8(code);
    if !empty {
        properties.encode(body);
    }
}

/// The largest packet the remaining length can describe.
pub const MAX_PACKET_SIZE: usize = 1 + 4 + MAX_VARINT as usize;
