//! How MQTT messages and Kafka records map onto each other.
//!
//! A PUBLISH becomes one record in the log topic its MQTT topic maps to (the first rule
//! whose filter matches, else the default topic):
//!
//! - key: the MQTT topic name; value: the payload; timestamp: the time of arrival;
//! - headers: `mqtt.client_id` (the publisher), `mqtt.qos` (`0`, `1`, `2`), `mqtt.retain`
//!   (`1`, only when set), and for MQTT
//!   5.0 `mqtt.payload_format` (`0`/`1`), `mqtt.message_expiry` (seconds, decimal),
//!   `mqtt.content_type`, `mqtt.response_topic`, `mqtt.correlation_data` (raw bytes);
//!   user properties become headers of their own name and value, in order (a name that
//!   starts with `mqtt.` is carried as `mqtt.user.<name>`, keeping that namespace ours).
//!
//! A record read back for MQTT subscribers becomes a PUBLISH on the topic in its key, with
//! the payload, the QoS it was published with (capped by each subscription), and the
//! properties above; any header outside the `mqtt.` namespace becomes a user property, so
//! records produced by Kafka clients reach MQTT 5.0 subscribers with their headers.

use bytes::Bytes;
use sluice_protocols::kafka::records::{Header, Record};
use sluice_protocols::mqtt::topic;
use sluice_protocols::mqtt::{Properties, Publish, QoS};

const CLIENT_ID: &str = "mqtt.client_id";
const QOS: &str = "mqtt.qos";
const RETAIN: &str = "mqtt.retain";
const PAYLOAD_FORMAT: &str = "mqtt.payload_format";
const MESSAGE_EXPIRY: &str = "mqtt.message_expiry";
const CONTENT_TYPE: &str = "mqtt.content_type";
const RESPONSE_TOPIC: &str = "mqtt.response_topic";
const CORRELATION_DATA: &str = "mqtt.correlation_data";
const NAMESPACE: &str = "mqtt.";
const USER_ESCAPE: &str = "mqtt.user.";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("topic map entry '{0}': expected FILTER=TOPIC")]
    Syntax(String),
    #[error("topic map filter '{filter}': {reason}")]
    Filter { filter: String, reason: String },
}

/// Ordered rules from MQTT topic filters to log topics, and a default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMap {
    rules: Vec<(String, String)>,
    default: Option<String>,
}

impl TopicMap {
    /// `spec`: `FILTER=TOPIC` entries separated by commas, first match wins (e.g.
    /// `sensors/#=sensors,devices/+/status=device-status`). `default`: where everything
    /// else goes; `None` refuses publishes no rule matches.
    pub fn parse(spec: &str, default: Option<&str>) -> Result<TopicMap, MapError> {
        let mut rules = Vec::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (filter, log_topic) = entry
                .rsplit_once('=')
                .filter(|(f, t)| !f.is_empty() && !t.is_empty())
                .ok_or_else(|| MapError::Syntax(entry.to_string()))?;
            topic::validate_filter(filter).map_err(|e| MapError::Filter {
                filter: filter.to_string(),
                reason: e.to_string(),
            })?;
            rules.push((filter.to_string(), log_topic.to_string()));
        }
        Ok(TopicMap {
            rules,
            default: default.map(str::to_string),
        })
    }

    /// The log topic for a message published on `mqtt_topic`.
    pub fn log_topic(&self, mqtt_topic: &str) -> Option<&str> {
        self.rules
            .iter()
            .find(|(f, _)| topic::matches(f, mqtt_topic))
            .map(|(_, t)| t.as_str())
            .or(self.default.as_deref())
    }

    /// The log topics messages matching subscription `filter` may be in: those of the
    /// rules whose filters share a topic with it, and the default unless one rule takes
    /// every topic the filter matches.
    pub fn log_topics_of(&self, filter: &str) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .rules
            .iter()
            .filter(|(f, _)| overlap(f, filter))
            .map(|(_, t)| t.as_str())
            .collect();
        let covered = self
            .rules
            .iter()
            .any(|(f, _)| super::auth::covers(f, filter));
        if !covered && let Some(d) = &self.default {
            out.push(d);
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Every log topic MQTT messages may go to (what MQTT subscribers read from).
    pub fn log_topics(&self) -> impl Iterator<Item = &str> {
        self.rules
            .iter()
            .map(|(_, t)| t.as_str())
            .chain(self.default.as_deref())
    }
}

/// Whether some topic name matches both filters.
fn overlap(a: &str, b: &str) -> bool {
    let mut a = a.split('/');
    let mut b = b.split('/');
    loop {
        match (a.next(), b.next()) {
            (Some("#"), _) | (_, Some("#")) | (None, None) => return true,
            (Some(x), Some(y)) if x == y || x == "+" || y == "+" => {}
            _ => return false,
        }
    }
}

fn text(v: impl ToString) -> Option<Bytes> {
    Some(Bytes::from(v.to_string()))
}

fn header(name: &'static str, value: Option<Bytes>) -> Header {
    Header {
        key: Bytes::from_static(name.as_bytes()),
        value,
    }
}

/// What the messages of one PUBLISH group share: the record key (the topic name) and the
/// publisher's id, made once and shared by every record of the group.
#[derive(Debug, Clone)]
pub struct Origin {
    pub topic: Bytes,
    pub client_id: Bytes,
}

impl Origin {
    /// `topic` is the resolved topic name (a topic alias already replaced).
    pub fn new(topic: &str, client_id: &str) -> Self {
        Self {
            topic: Bytes::copy_from_slice(topic.as_bytes()),
            client_id: Bytes::copy_from_slice(client_id.as_bytes()),
        }
    }
}

/// The record a PUBLISH becomes, `offset_delta` into its batch (timestamp: the batch's).
pub fn record_of(p: &Publish, origin: &Origin, offset_delta: i32) -> Record {
    let qos: &'static [u8] = match p.qos {
        QoS::AtMostOnce => b"0",
        QoS::AtLeastOnce => b"1",
        QoS::ExactlyOnce => b"2",
    };
    let props = &p.properties;
    let mut headers = Vec::with_capacity(2 + usize::from(p.retain) + props.user_properties.len());
    headers.push(header(CLIENT_ID, Some(origin.client_id.clone())));
    headers.push(header(QOS, Some(Bytes::from_static(qos))));
    if p.retain {
        headers.push(header(RETAIN, Some(Bytes::from_static(b"1"))));
    }
    if let Some(v) = props.payload_format_indicator {
        headers.push(header(PAYLOAD_FORMAT, text(v)));
    }
    if let Some(v) = props.message_expiry_interval {
        headers.push(header(MESSAGE_EXPIRY, text(v)));
    }
    if let Some(v) = &props.content_type {
        headers.push(header(CONTENT_TYPE, text(v)));
    }
    if let Some(v) = &props.response_topic {
        headers.push(header(RESPONSE_TOPIC, text(v)));
    }
    if let Some(v) = &props.correlation_data {
        headers.push(header(CORRELATION_DATA, Some(v.clone())));
    }
    for (k, v) in &props.user_properties {
        let name = if k.starts_with(NAMESPACE) {
            format!("{USER_ESCAPE}{k}")
        } else {
            k.clone()
        };
        headers.push(Header {
            key: Bytes::from(name),
            value: text(v),
        });
    }
    Record {
        attributes: 0,
        timestamp_delta: 0,
        offset_delta,
        key: Some(origin.topic.clone()),
        value: Some(p.payload.clone()),
        headers,
    }
}

fn parse<T: std::str::FromStr>(v: &Option<Bytes>) -> Option<T> {
    std::str::from_utf8(v.as_deref()?).ok()?.parse().ok()
}

fn string(v: &Option<Bytes>) -> Option<String> {
    Some(String::from_utf8_lossy(v.as_deref()?).into_owned())
}

/// The message a record carries to MQTT subscribers, `None` if its key is not a valid
/// MQTT topic name (records produced by Kafka clients may have any key). The QoS is the
/// one it was published with (0 for records without one); the packet id, DUP and RETAIN
/// flags are for the sender to set per subscriber.
pub fn publish_of(
    key: Option<&[u8]>,
    value: Option<&Bytes>,
    headers: &[Header],
) -> Option<Publish> {
    let topic = std::str::from_utf8(key?).ok()?;
    topic::validate_name(topic).ok()?;
    if topic.contains('\0') {
        return None;
    }
    let mut qos = QoS::AtMostOnce;
    let mut props = Properties::default();
    for Header { key: k, value: v } in headers {
        let Ok(k) = std::str::from_utf8(k) else {
            continue;
        };
        match k {
            QOS => {
                qos = parse::<u8>(v)
                    .and_then(QoS::from_u8)
                    .unwrap_or(QoS::AtMostOnce)
            }
            RETAIN => {}
            PAYLOAD_FORMAT => props.payload_format_indicator = parse::<u8>(v).filter(|f| *f <= 1),
            MESSAGE_EXPIRY => props.message_expiry_interval = parse(v),
            CONTENT_TYPE => props.content_type = string(v),
            RESPONSE_TOPIC => props.response_topic = string(v),
            CORRELATION_DATA => props.correlation_data = v.clone(),
            _ => {
                let name = match k.strip_prefix(USER_ESCAPE) {
                    Some(escaped) => escaped,
                    None if k.starts_with(NAMESPACE) => continue,
                    None => k,
                };
                props
                    .user_properties
                    .push((name.to_string(), string(v).unwrap_or_default()));
            }
        }
    }
    Some(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.to_string(),
        packet_id: None,
        properties: props,
        payload: value.cloned().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_topics_a_subscription_reads() {
        let m =
            TopicMap::parse("sensors/#=sensors,alerts/+/high=alerts", Some("mqtt")).expect("map");
        assert_eq!(m.log_topics_of("sensors/a/b"), ["sensors"]);
        assert_eq!(m.log_topics_of("sensors/#"), ["sensors"]);
        assert_eq!(m.log_topics_of("alerts/x/high"), ["alerts"]);
        assert_eq!(m.log_topics_of("alerts/#"), ["alerts", "mqtt"]);
        assert_eq!(m.log_topics_of("#"), ["alerts", "mqtt", "sensors"]);
        assert_eq!(m.log_topics_of("other/+"), ["mqtt"]);
        assert!(overlap("a/+/c", "a/b/#") && !overlap("a/b", "a/c") && overlap("a/#", "a"));
        assert!(!overlap("a/b/c", "a/b"));
    }

    #[test]
    fn rules_pick_the_first_matching_filter_then_the_default() {
        let m = TopicMap::parse(
            "sensors/+/temp=temps, sensors/#=sensors ,$SYS/#=sys",
            Some("mqtt"),
        )
        .expect("parse");
        assert_eq!(m.log_topic("sensors/a/temp"), Some("temps"));
        assert_eq!(m.log_topic("sensors/a/humidity"), Some("sensors"));
        assert_eq!(m.log_topic("sensors"), Some("sensors"));
        assert_eq!(m.log_topic("other"), Some("mqtt"));
        assert_eq!(
            m.log_topics().collect::<Vec<_>>(),
            ["temps", "sensors", "sys", "mqtt"]
        );
        let strict = TopicMap::parse("a/#=a", None).expect("parse");
        assert_eq!(strict.log_topic("b"), None);
        assert!(matches!(
            TopicMap::parse("a/#", None),
            Err(MapError::Syntax(_))
        ));
        assert!(matches!(
            TopicMap::parse("a/#b=x", None),
            Err(MapError::Filter { .. })
        ));
    }

    #[test]
    fn a_5_0_publish_round_trips_through_a_record() {
        let p = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: String::new(),
            packet_id: Some(9),
            properties: Properties {
                payload_format_indicator: Some(1),
                message_expiry_interval: Some(60),
                content_type: Some("application/json".into()),
                response_topic: Some("replies/1".into()),
                correlation_data: Some(Bytes::from_static(b"\x00\x01")),
                user_properties: vec![
                    ("site".into(), "north".into()),
                    ("site".into(), "south".into()),
                    ("mqtt.qos".into(), "sneaky".into()),
                ],
                ..Default::default()
            },
            payload: Bytes::from_static(b"{\"t\":21.5}"),
        };
        let r = record_of(&p, &Origin::new("sensors/a/temp", "dev-1"), 0);
        assert_eq!(r.key.as_deref(), Some(&b"sensors/a/temp"[..]));
        let names: Vec<&str> = r
            .headers
            .iter()
            .map(|h| std::str::from_utf8(&h.key).expect("utf-8"))
            .collect();
        assert_eq!(
            names,
            [
                "mqtt.client_id",
                "mqtt.qos",
                "mqtt.retain",
                "mqtt.payload_format",
                "mqtt.message_expiry",
                "mqtt.content_type",
                "mqtt.response_topic",
                "mqtt.correlation_data",
                "site",
                "site",
                "mqtt.user.mqtt.qos"
            ]
        );
        assert_eq!(r.headers[0].value.as_deref(), Some(&b"dev-1"[..]));
        assert_eq!(r.headers[1].value.as_deref(), Some(&b"1"[..]));
        let back = publish_of(r.key.as_deref(), r.value.as_ref(), &r.headers).expect("a message");
        assert_eq!(back.topic, "sensors/a/temp");
        assert_eq!(back.qos, QoS::AtLeastOnce);
        assert_eq!(back.payload, p.payload);
        assert_eq!(back.properties, p.properties);
    }

    #[test]
    fn kafka_records_become_messages_when_their_key_is_a_topic_name() {
        let headers = vec![Header {
            key: Bytes::from_static(b"trace"),
            value: Some(Bytes::from_static(b"abc")),
        }];
        let m = publish_of(
            Some(b"orders/eu"),
            Some(&Bytes::from_static(b"x")),
            &headers,
        )
        .expect("a message");
        assert_eq!((m.topic.as_str(), m.qos), ("orders/eu", QoS::AtMostOnce));
        assert_eq!(
            m.properties.user_properties,
            vec![("trace".to_string(), "abc".to_string())]
        );
        assert_eq!(publish_of(None, None, &[]), None);
        assert_eq!(publish_of(Some(b"a/+"), None, &[]), None);
        assert_eq!(publish_of(Some(b"\xff"), None, &[]), None);
        assert_eq!(publish_of(Some(b""), None, &[]), None);
    }
}
