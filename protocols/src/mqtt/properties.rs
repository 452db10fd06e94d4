//! MQTT 5.0 properties (section 2.2.2): decoded with the checks the specification asks
//! for (a property only where it is allowed, at most once unless it may repeat, values in
//! range), and encoded.

use bytes::{BufMut, Bytes, BytesMut};

use super::DecodeError;
use super::wire::{Reader, binary_len, put_binary, put_string, put_varint, varint_len};

/// Where a property list appears; each property is allowed in some of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Context {
    Connect,
    Will,
    ConnAck,
    Publish,
    /// PUBACK, PUBREC, PUBREL, PUBCOMP.
    Ack,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

/// Every MQTT 5.0 property; absent ones are `None` or empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    pub payload_format_indicator: Option<u8>,
    pub message_expiry_interval: Option<u32>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    pub subscription_identifiers: Vec<u32>,
    pub session_expiry_interval: Option<u32>,
    pub assigned_client_identifier: Option<String>,
    pub server_keep_alive: Option<u16>,
    pub authentication_method: Option<String>,
    pub authentication_data: Option<Bytes>,
    pub request_problem_information: Option<u8>,
    pub will_delay_interval: Option<u32>,
    pub request_response_information: Option<u8>,
    pub response_information: Option<String>,
    pub server_reference: Option<String>,
    pub reason_string: Option<String>,
    pub receive_maximum: Option<u16>,
    pub topic_alias_maximum: Option<u16>,
    pub topic_alias: Option<u16>,
    pub maximum_qos: Option<u8>,
    pub retain_available: Option<u8>,
    pub user_properties: Vec<(String, String)>,
    pub maximum_packet_size: Option<u32>,
    pub wildcard_subscription_available: Option<u8>,
    pub subscription_identifier_available: Option<u8>,
    pub shared_subscription_available: Option<u8>,
}

use Context::*;

/// Where each property identifier may appear.
fn allowed(id: u8, ctx: Context) -> bool {
    match id {
        0x01..=0x03 | 0x08 | 0x09 => matches!(ctx, Publish | Will),
        0x0B => matches!(ctx, Publish | Subscribe),
        0x11 => matches!(ctx, Connect | ConnAck | Disconnect),
        0x12 | 0x13 | 0x1A | 0x24 | 0x25 | 0x28..=0x2A => ctx == ConnAck,
        0x15 | 0x16 => matches!(ctx, Connect | ConnAck | Auth),
        0x17 | 0x19 => ctx == Connect,
        0x18 => ctx == Will,
        0x1C => matches!(ctx, ConnAck | Disconnect),
        0x1F => matches!(ctx, ConnAck | Ack | SubAck | UnsubAck | Disconnect | Auth),
        0x21 | 0x22 | 0x27 => matches!(ctx, Connect | ConnAck),
        0x23 => ctx == Publish,
        0x26 => true,
        _ => false,
    }
}

fn once<T>(slot: &mut Option<T>, v: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::Protocol("a property appears twice"));
    }
    *slot = Some(v);
    Ok(())
}

fn flag(v: u8) -> Result<u8, DecodeError> {
    if v > 1 {
        return Err(DecodeError::Protocol(
            "a property that is 0 or 1 has another value",
        ));
    }
    Ok(v)
}

fn nonzero_u16(v: u16) -> Result<u16, DecodeError> {
    if v == 0 {
        return Err(DecodeError::Protocol("a property that must not be 0 is 0"));
    }
    Ok(v)
}

impl Properties {
    /// Reads a property length and the properties it covers.
    pub(crate) fn decode(r: &mut Reader, ctx: Context) -> Result<Properties, DecodeError> {
        let len = r.varint()? as usize;
        let mut r = Reader(r.bytes(len)?);
        let mut p = Properties::default();
        while r.remaining() > 0 {
            let id = r.varint()?;
            let id = u8::try_from(id).map_err(|_| DecodeError::Malformed("unknown property"))?;
            if !allowed(id, ctx) {
                // An identifier that exists but not here is a protocol error; one that does
                // not exist at all is malformed.
                return Err(
                    if allowed(id, Publish)
                        || allowed(id, Connect)
                        || allowed(id, ConnAck)
                        || allowed(id, Will)
                        || allowed(id, Subscribe)
                        || allowed(id, Ack)
                    {
                        DecodeError::Protocol("a property not allowed in this packet")
                    } else {
                        DecodeError::Malformed("unknown property")
                    },
                );
            }
            match id {
                0x01 => once(&mut p.payload_format_indicator, flag(r.u8()?)?)?,
                0x02 => once(&mut p.message_expiry_interval, r.u32()?)?,
                0x03 => once(&mut p.content_type, r.string()?)?,
                0x08 => once(&mut p.response_topic, r.string()?)?,
                0x09 => once(&mut p.correlation_data, r.binary()?)?,
                0x0B => {
                    let v = r.varint()?;
                    if v == 0 {
                        return Err(DecodeError::Protocol("subscription identifier 0"));
                    }
                    if ctx == Subscribe && !p.subscription_identifiers.is_empty() {
                        return Err(DecodeError::Protocol("a property appears twice"));
                    }
                    p.subscription_identifiers.push(v);
                }
                0x11 => once(&mut p.session_expiry_interval, r.u32()?)?,
                0x12 => once(&mut p.assigned_client_identifier, r.string()?)?,
                0x13 => once(&mut p.server_keep_alive, r.u16()?)?,
                0x15 => once(&mut p.authentication_method, r.string()?)?,
                0x16 => once(&mut p.authentication_data, r.binary()?)?,
                0x17 => once(&mut p.request_problem_information, flag(r.u8()?)?)?,
                0x18 => once(&mut p.will_delay_interval, r.u32()?)?,
                0x19 => once(&mut p.request_response_information, flag(r.u8()?)?)?,
                0x1A => once(&mut p.response_information, r.string()?)?,
                0x1C => once(&mut p.server_reference, r.string()?)?,
                0x1F => once(&mut p.reason_string, r.string()?)?,
                0x21 => once(&mut p.receive_maximum, nonzero_u16(r.u16()?)?)?,
                0x22 => once(&mut p.topic_alias_maximum, r.u16()?)?,
                0x23 => once(&mut p.topic_alias, nonzero_u16(r.u16()?)?)?,
                0x24 => once(&mut p.maximum_qos, flag(r.u8()?)?)?,
                0x25 => once(&mut p.retain_available, flag(r.u8()?)?)?,
                0x26 => {
                    let k = r.string()?;
                    let v = r.string()?;
                    p.user_properties.push((k, v));
                }
                0x27 => {
                    let v = r.u32()?;
                    if v == 0 {
                        return Err(DecodeError::Protocol("maximum packet size 0"));
                    }
                    once(&mut p.maximum_packet_size, v)?
                }
                0x28 => once(&mut p.wildcard_subscription_available, flag(r.u8()?)?)?,
                0x29 => once(&mut p.subscription_identifier_available, flag(r.u8()?)?)?,
                0x2A => once(&mut p.shared_subscription_available, flag(r.u8()?)?)?,
                _ => return Err(DecodeError::Malformed("unknown property")),
            }
        }
        Ok(p)
    }

    /// Size of the properties, without their length prefix.
    pub(crate) fn body_len(&self) -> usize {
        let s = |v: &Option<String>| v.as_ref().map_or(0, |s| 1 + binary_len(s.as_bytes()));
        let b = |v: &Option<Bytes>| v.as_ref().map_or(0, |b| 1 + binary_len(b));
        let n = |v: Option<usize>, size: usize| v.map_or(0, |_| 1 + size);
        n(self.payload_format_indicator.map(|_| 0), 1)
            + n(self.message_expiry_interval.map(|_| 0), 4)
            + s(&self.content_type)
            + s(&self.response_topic)
            + b(&self.correlation_data)
            + self
                .subscription_identifiers
                .iter()
                .map(|v| 1 + varint_len(*v))
                .sum::<usize>()
            + n(self.session_expiry_interval.map(|_| 0), 4)
            + s(&self.assigned_client_identifier)
            + n(self.server_keep_alive.map(|_| 0), 2)
            + s(&self.authentication_method)
            + b(&self.authentication_data)
            + n(self.request_problem_information.map(|_| 0), 1)
            + n(self.will_delay_interval.map(|_| 0), 4)
            + n(self.request_response_information.map(|_| 0), 1)
            + s(&self.response_information)
            + s(&self.server_reference)
            + s(&self.reason_string)
            + n(self.receive_maximum.map(|_| 0), 2)
            + n(self.topic_alias_maximum.map(|_| 0), 2)
            + n(self.topic_alias.map(|_| 0), 2)
            + n(self.maximum_qos.map(|_| 0), 1)
            + n(self.retain_available.map(|_| 0), 1)
            + self
                .user_properties
                .iter()
                .map(|(k, v)| 1 + binary_len(k.as_bytes()) + binary_len(v.as_bytes()))
                .sum::<usize>()
            + n(self.maximum_packet_size.map(|_| 0), 4)
            + n(self.wildcard_subscription_available.map(|_| 0), 1)
            + n(self.subscription_identifier_available.map(|_| 0), 1)
            + n(self.shared_subscription_available.map(|_| 0), 1)
    }

    pub(crate) fn encode(&self, buf: &mut BytesMut) {
        put_varint(buf, self.body_len() as u32);
        let put_u8 = |buf: &mut BytesMut, id: u8, v: Option<u8>| {
            if let Some(v) = v {
                buf.put_u8(id);
                buf.put_u8(v);
            }
        };
        let put_u16 = |buf: &mut BytesMut, id: u8, v: Option<u16>| {
            if let Some(v) = v {
                buf.put_u8(id);
                buf.put_u16(v);
            }
        };
        let put_u32 = |buf: &mut BytesMut, id: u8, v: Option<u32>| {
            if let Some(v) = v {
                buf.put_u8(id);
                buf.put_u32(v);
            }
        };
        let put_str = |buf: &mut BytesMut, id: u8, v: &Option<String>| {
            if let Some(v) = v {
                buf.put_u8(id);
                put_string(buf, v);
            }
        };
        let put_bin = |buf: &mut BytesMut, id: u8, v: &Option<Bytes>| {
            if let Some(v) = v {
                buf.put_u8(id);
                put_binary(buf, v);
            }
        };
        put_u8(buf, 0x01, self.payload_format_indicator);
        put_u32(buf, 0x02, self.message_expiry_interval);
        put_str(buf, 0x03, &self.content_type);
        put_str(buf, 0x08, &self.response_topic);
        put_bin(buf, 0x09, &self.correlation_data);
        for v in &self.subscription_identifiers {
            buf.put_u8(0x0B);
            put_varint(buf, *v);
        }
        put_u32(buf, 0x11, self.session_expiry_interval);
        put_str(buf, 0x12, &self.assigned_client_identifier);
        put_u16(buf, 0x13, self.server_keep_alive);
        put_str(buf, 0x15, &self.authentication_method);
        put_bin(buf, 0x16, &self.authentication_data);
        put_u8(buf, 0x17, self.request_problem_information);
        put_u32(buf, 0x18, self.will_delay_interval);
        put_u8(buf, 0x19, self.request_response_information);
        put_str(buf, 0x1A, &self.response_information);
        put_str(buf, 0x1C, &self.server_reference);
        put_str(buf, 0x1F, &self.reason_string);
        put_u16(buf, 0x21, self.receive_maximum);
        put_u16(buf, 0x22, self.topic_alias_maximum);
        put_u16(buf, 0x23, self.topic_alias);
        put_u8(buf, 0x24, self.maximum_qos);
        put_u8(buf, 0x25, self.retain_available);
        for (k, v) in &self.user_properties {
            buf.put_u8(0x26);
            put_string(buf, k);
            put_string(buf, v);
        }
        put_u32(buf, 0x27, self.maximum_packet_size);
        put_u8(buf, 0x28, self.wildcard_subscription_available);
        put_u8(buf, 0x29, self.subscription_identifier_available);
        put_u8(buf, 0x2A, self.shared_subscription_available);
    }
}
