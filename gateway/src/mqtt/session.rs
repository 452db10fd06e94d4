//! MQTT sessions as kept in metadata, under `mqtt/sessions/<client id>`, so that a client
//! that reconnects to any gateway resumes where it stood.
//!
//! The record says who holds the session now (`owner`: a gateway and one of its
//! connections) and, for a session that outlives its connection, what it is: its
//! subscriptions, its position in every log topic MQTT maps to (every record before it was
//! handed to the session), the QoS 1 and 2 deliveries the client has not acknowledged yet
//! (as references into the log), and the QoS 2 packet ids it sent that await PUBREL.
//!
//! Format: JSON, `"version": 1`, covered by the golden file `tests/golden/session-v1.json`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sluice_metadata::{Compare, MetaError, SharedStore, Txn, TxnOp, keys};
use uuid::Uuid;

pub const VERSION: u32 = 1;

/// 3.1.1's persistent sessions (Clean Session 0) and 5.0's 0xFFFFFFFF never expire.
pub const NEVER: u32 = u32::MAX;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub version: u32,
    /// The protocol level the client last connected with (4: 3.1.1, 5: 5.0).
    pub protocol: u8,
    /// Seconds the session outlives its connection (0: it ends with it).
    pub expiry_secs: u32,
    /// The connection holding the session, if one does.
    pub owner: Option<Owner>,
    /// When the session's last connection ended (milliseconds since the epoch); `None`
    /// while it is connected.
    pub released_at_ms: Option<i64>,
    /// Set on the state a connection wrote when it handed the session over to `owner`.
    pub handed_over_by: Option<Uuid>,
    pub subscriptions: Vec<SubscriptionRecord>,
    pub positions: Vec<TopicPosition>,
    /// Unacknowledged QoS 1 and 2 deliveries, in the order they were sent.
    pub outgoing: Vec<InFlight>,
    /// QoS 2 messages the client sent, stored, whose PUBREL has not come yet.
    pub incoming_qos2: Vec<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The gateway's node id.
    pub node: i32,
    /// The connection, unique across gateways.
    pub conn: Uuid,
    /// The connection asked to resume the session (Clean Start 0): whoever held it hands
    /// its state over.
    pub resume: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    pub filter: String,
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub subscription_id: Option<u32>,
}

/// Where a session stands in one log topic: per partition, the next offset to hand it.
/// Partitions not listed start at their log start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicPosition {
    pub topic: String,
    /// The topic's id when the position was taken: a topic deleted and created again
    /// starts over.
    pub id: Option<Uuid>,
    pub next: BTreeMap<u32, i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    pub packet_id: u16,
    pub qos: u8,
    /// QoS 2: PUBREC came and PUBREL was sent; only PUBCOMP is missing.
    pub released: bool,
    pub retain: bool,
    pub subscription_ids: Vec<u32>,
    /// The record delivered; `None` once released (nothing to resend but PUBREL).
    pub at: Option<LogRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRef {
    /// Shared by every message read from the topic (serialized as a plain string).
    pub topic: Arc<str>,
    pub id: Uuid,
    pub partition: u32,
    pub offset: i64,
}

impl SessionRecord {
    pub fn new(protocol: u8, expiry_secs: u32, owner: Option<Owner>) -> Self {
        Self {
            version: VERSION,
            protocol,
            expiry_secs,
            owner,
            released_at_ms: None,
            handed_over_by: None,
            subscriptions: Vec::new(),
            positions: Vec::new(),
            outgoing: Vec::new(),
            incoming_qos2: Vec::new(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("session records serialize")
    }

    /// `None` for a value that is not a session record of a version this build reads.
    pub fn decode(v: &[u8]) -> Option<Self> {
        let r: Self = serde_json::from_slice(v).ok()?;
        (r.version == VERSION).then_some(r)
    }

    /// Moves positions back to records handed to the session but never sent, so they
    /// are read again from the log.
    pub fn lower_positions<'a>(&mut self, unsent: impl IntoIterator<Item = &'a LogRef>) {
        for at in unsent {
            if let Some(n) = self
                .positions
                .iter_mut()
                .find(|t| *t.topic == *at.topic && t.id == Some(at.id))
                .and_then(|t| t.next.get_mut(&at.partition))
            {
                *n = (*n).min(at.offset);
            }
        }
    }

    /// The session ended its life: released longer ago than its expiry interval.
    pub fn expired(&self, now_ms: i64) -> bool {
        match self.released_at_ms {
            None => false,
            Some(_) if self.expiry_secs == NEVER => false,
            Some(at) => now_ms.saturating_sub(at) >= i64::from(self.expiry_secs) * 1000,
        }
    }
}

/// What one sweep of the session records did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Expired sessions removed.
    pub expired: usize,
    /// Sessions held by gateways that are gone, marked released so their expiry counts.
    pub orphaned: usize,
    /// Registrations (shared subscription members, forwarding peers) of gateways that are
    /// gone, removed.
    pub shares: usize,
}

/// Removes expired sessions, and marks released the sessions whose holding gateway is no
/// longer registered (`live_gateways`). Every change compares the record's revision, so a
/// client connecting meanwhile keeps its session.
pub async fn sweep(
    store: &SharedStore,
    live_gateways: &HashSet<i32>,
    now_ms: i64,
) -> Result<Swept, MetaError> {
    let all = store
        .range(keys::MQTT_SESSIONS_PREFIX.as_bytes(), None)
        .await?;
    let mut swept = Swept::default();
    for kv in all.kvs {
        let Some(mut r) = SessionRecord::decode(&kv.value) else {
            continue;
        };
        let change = if r.expired(now_ms) {
            swept.expired += 1;
            TxnOp::delete(kv.key.clone())
        } else if r.released_at_ms.is_none()
            && r.owner.is_some_and(|o| !live_gateways.contains(&o.node))
        {
            swept.orphaned += 1;
            r.owner = None;
            r.released_at_ms = Some(now_ms);
            if r.expiry_secs == 0 {
                TxnOp::delete(kv.key.clone())
            } else {
                TxnOp::put(kv.key.clone(), r.encode())
            }
        } else {
            continue;
        };
        store
            .txn(Txn {
                compares: vec![Compare::mod_revision(kv.key.clone(), kv.mod_revision)],
                success: vec![change],
                failure: vec![],
            })
            .await?;
    }
    // Registrations (shared subscription members, forwarding peers) of gateways that are
    // gone.
    let mut registrations = store
        .range(keys::MQTT_SHARED_PREFIX.as_bytes(), None)
        .await?
        .kvs;
    registrations.extend(
        store
            .range(keys::MQTT_PEERS_PREFIX.as_bytes(), None)
            .await?
            .kvs,
    );
    for kv in registrations {
        let node = if let Some(rest) = kv.key.strip_prefix(keys::MQTT_SHARED_PREFIX.as_bytes()) {
            keys::parse_mqtt_shared(&String::from_utf8_lossy(rest)).map(|(_, n, _)| n)
        } else {
            kv.key
                .strip_prefix(keys::MQTT_PEERS_PREFIX.as_bytes())
                .and_then(|n| std::str::from_utf8(n).ok())
                .and_then(|n| n.parse().ok())
        };
        if node.is_some_and(|n| !live_gateways.contains(&n)) {
            store
                .txn(Txn {
                    compares: vec![Compare::mod_revision(kv.key.clone(), kv.mod_revision)],
                    success: vec![TxnOp::delete(kv.key.clone())],
                    failure: vec![],
                })
                .await?;
            swept.shares += 1;
        }
    }
    Ok(swept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SessionRecord {
        let id = Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0001);
        SessionRecord {
            version: 1,
            protocol: 5,
            expiry_secs: 3600,
            owner: Some(Owner {
                node: 7,
                conn: Uuid::from_u128(2),
                resume: true,
            }),
            released_at_ms: Some(1_795_000_000_000),
            handed_over_by: Some(Uuid::from_u128(3)),
            subscriptions: vec![SubscriptionRecord {
                filter: "plant/+/temp".into(),
                qos: 2,
                no_local: true,
                retain_as_published: false,
                subscription_id: Some(9),
            }],
            positions: vec![TopicPosition {
                topic: "mqtt".into(),
                id: Some(id),
                next: BTreeMap::from([(0, 41), (1, 0)]),
            }],
            outgoing: vec![
                InFlight {
                    packet_id: 12,
                    qos: 1,
                    released: false,
                    retain: false,
                    subscription_ids: vec![9],
                    at: Some(LogRef {
                        topic: "mqtt".into(),
                        id,
                        partition: 0,
                        offset: 40,
                    }),
                },
                InFlight {
                    packet_id: 13,
                    qos: 2,
                    released: true,
                    retain: false,
                    subscription_ids: vec![],
                    at: None,
                },
            ],
            incoming_qos2: vec![5],
        }
    }

    #[test]
    fn golden_v1() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/session-v1.json");
        let r = sample();
        if std::env::var_os("SLUICE_WRITE_GOLDEN").is_some() {
            std::fs::write(&path, r.encode()).expect("write golden");
        }
        let golden = std::fs::read(&path).expect("golden file");
        assert_eq!(SessionRecord::decode(&golden), Some(r.clone()));
        assert_eq!(r.encode(), golden);
        let mut other = r;
        other.version = 2;
        assert_eq!(SessionRecord::decode(&other.encode()), None);
        assert_eq!(SessionRecord::decode(b"{"), None);
    }

    #[tokio::test]
    async fn sweeping_removes_expired_sessions_and_releases_orphans() {
        use sluice_metadata::{EmbeddedStore, MetaStoreExt};
        let store: SharedStore = std::sync::Arc::new(EmbeddedStore::in_memory());
        let owner = |node| {
            Some(Owner {
                node,
                conn: Uuid::from_u128(1),
                resume: false,
            })
        };
        let mut expired = SessionRecord::new(5, 10, None);
        expired.released_at_ms = Some(1_000);
        let mut fresh = expired.clone();
        fresh.released_at_ms = Some(95_000);
        let connected_here = SessionRecord::new(5, 10, owner(1));
        let orphan = SessionRecord::new(5, 10, owner(2));
        let orphan_clean = SessionRecord::new(5, 0, owner(2));
        for (k, r) in [
            ("expired", &expired),
            ("fresh", &fresh),
            ("here", &connected_here),
            ("orphan", &orphan),
            ("orphan-clean", &orphan_clean),
        ] {
            store
                .put(keys::mqtt_session(k), r.encode())
                .await
                .expect("put");
        }
        store
            .put(keys::mqtt_shared("g", 2, "a/#"), "")
            .await
            .expect("put");
        store
            .put(keys::mqtt_shared("g", 1, "a/#"), "")
            .await
            .expect("put");
        store
            .put(keys::mqtt_peer(2), "127.0.0.1:1")
            .await
            .expect("put");
        let live = HashSet::from([1]);
        let swept = sweep(&store, &live, 100_000).await.expect("sweep");
        assert_eq!(
            swept,
            Swept {
                expired: 1,
                orphaned: 2,
                shares: 2,
            }
        );
        let left = store
            .range(keys::MQTT_SESSIONS_PREFIX.as_bytes(), None)
            .await
            .expect("range");
        let names: Vec<String> = left
            .kvs
            .iter()
            .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "mqtt/sessions/fresh",
                "mqtt/sessions/here",
                "mqtt/sessions/orphan"
            ]
        );
        let released = SessionRecord::decode(&left.kvs[2].value).expect("record");
        assert_eq!(
            (released.owner, released.released_at_ms),
            (None, Some(100_000))
        );
        // Released now, it expires 10 s later.
        let swept = sweep(&store, &live, 110_000).await.expect("sweep");
        assert_eq!(swept.expired, 2);
    }

    #[test]
    fn expiry() {
        let mut r = SessionRecord::new(5, 10, None);
        assert!(!r.expired(i64::MAX), "a connected session never expires");
        r.released_at_ms = Some(1_000);
        assert!(!r.expired(10_999));
        assert!(r.expired(11_000));
        r.expiry_secs = NEVER;
        assert!(!r.expired(i64::MAX));
    }
}
