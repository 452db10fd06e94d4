//! What a gateway's MQTT connections share: the sessions by client id (for takeover), the
//! subscriptions, appending messages to the log, and delivering what the log receives on
//! mapped topics (from any gateway, and from Kafka producers) to matching subscribers.
//!
//! Delivery follows the log: for each log topic MQTT messages map to, one task reads every
//! record committed after the first subscription appeared and hands it to the sessions
//! whose filters match its key.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use sluice_metadata::records::BatchMeta;
use sluice_metadata::{MetaStoreExt, keys};
use sluice_protocols::kafka::batch;
use sluice_protocols::kafka::partitioner::partition_for_key;
use sluice_protocols::kafka::records::{BatchHeader, Header, Record, decode_batch, encode_batch};
use sluice_protocols::mqtt::{Publish, QoS, topic};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::mapping::{TopicMap, publish_of, record_of};
use super::retained::{MAX_RETAINED, decode_retained, encode_retained};
use super::subscriptions::Subscriptions;
use crate::batcher::{Append, AppendError};
use crate::kafka::fetch::{Source, read_records};
use crate::kafka::now_ms;
use crate::server::Ctx;
use crate::topics;

/// Deliveries queued for one connection; beyond this, QoS 0 messages are dropped for it
/// and QoS 1 messages wait (the log tail slows for everyone, as a full socket would).
const OUTBOX: usize = 4096;
/// Bytes a log tail reads per partition per round.
const TAIL_READ: usize = 1 << 20;

/// What a subscription asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granted {
    pub qos: QoS,
    pub retain_as_published: bool,
    /// MQTT 5.0: messages this session published are not sent back to it.
    pub no_local: bool,
    pub subscription_id: Option<u32>,
}

/// A message on its way to one connection.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub publish: Publish,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("no log topic is mapped for MQTT topic {0}")]
    Unmapped(String),
    #[error("log topic {0} does not exist and cannot be created: {1}")]
    Topic(String, String),
    #[error("{0}")]
    Append(#[from] AppendError),
    #[error("encoding the record: {0}")]
    Encode(String),
    #[error("a retained message of {0} bytes is larger than the {max} kept", max = super::retained::MAX_RETAINED)]
    RetainedTooLarge(usize),
    #[error("storing the retained message: {0}")]
    Retain(#[from] sluice_metadata::MetaError),
}

pub struct Broker {
    pub map: TopicMap,
    /// Who may connect and what they may do; `None`: everyone, everything.
    pub auth: Option<super::auth::Auth>,
    next_session: AtomicU64,
    /// Live sessions by client id: their session id and a token that ends them.
    sessions: Mutex<HashMap<String, (u64, CancellationToken)>>,
    subscriptions: Mutex<Subscriptions<u64, Granted>>,
    outboxes: Mutex<HashMap<u64, mpsc::Sender<Delivery>>>,
    tails: Mutex<HashSet<String>>,
    /// Client ids by session, for no-local subscriptions.
    clients: Mutex<HashMap<u64, String>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").finish_non_exhaustive()
    }
}

impl Broker {
    pub fn new(map: TopicMap, auth: Option<super::auth::Auth>) -> Self {
        Self {
            map,
            auth,
            next_session: AtomicU64::new(1),
            sessions: Mutex::new(HashMap::new()),
            subscriptions: Mutex::new(Subscriptions::default()),
            outboxes: Mutex::new(HashMap::new()),
            tails: Mutex::new(HashSet::new()),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Registers a connection for `client_id`, ending the session that held it (takeover).
    /// Returns the new session's id, its end token and its delivery queue.
    pub fn open(&self, client_id: &str) -> (u64, CancellationToken, mpsc::Receiver<Delivery>) {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let token = CancellationToken::new();
        let previous = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(client_id.to_string(), (id, token.clone()));
        if let Some((_, old)) = previous {
            old.cancel();
        }
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, client_id.to_string());
        let (tx, rx) = mpsc::channel(OUTBOX);
        self.outboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        (id, token, rx)
    }

    /// Ends a session: its subscriptions and queue go (sessions are not kept after the
    /// connection yet).
    pub fn close(&self, client_id: &str, id: u64, filters: &[String]) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if sessions.get(client_id).is_some_and(|(s, _)| *s == id) {
            sessions.remove(client_id);
        }
        drop(sessions);
        let mut subs = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
        for f in filters {
            subs.remove(f, &id);
        }
        drop(subs);
        self.outboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// The delivery queue of a live session.
    fn outbox(&self, session: u64) -> Option<mpsc::Sender<Delivery>> {
        self.outboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&session)
            .cloned()
    }

    /// Adds a subscription; true if the session had none to this filter before.
    pub fn subscribe(&self, ctx: &Arc<Ctx>, id: u64, filter: &str, granted: Granted) -> bool {
        let new = self
            .subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(filter, id, granted)
            .is_none();
        let mut tails = self.tails.lock().unwrap_or_else(|e| e.into_inner());
        for t in self.map.log_topics() {
            if tails.insert(t.to_string()) {
                tokio::spawn(tail(ctx.clone(), t.to_string()));
            }
        }
        new
    }

    /// Sends a new subscription the retained messages its filter matches.
    pub async fn send_retained(&self, ctx: &Ctx, id: u64, filter: &str, granted: Granted) {
        let messages = match self.retained(ctx, filter).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(filter, error = %e, "reading retained messages failed");
                return;
            }
        };
        let Some(outbox) = self.outbox(id) else {
            return;
        };
        for mut p in messages {
            p.qos = p.qos.min(granted.qos);
            p.retain = true;
            p.properties.subscription_identifiers = granted.subscription_id.into_iter().collect();
            if outbox.send(Delivery { publish: p }).await.is_err() {
                return;
            }
        }
    }

    pub fn unsubscribe(&self, id: u64, filter: &str) -> bool {
        self.subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(filter, &id)
            .is_some()
    }

    /// Appends a message `client_id` published to the log; resolves once it is durable and
    /// committed.
    /// With the retain flag set, the message also becomes (or, with an empty payload,
    /// stops being) the topic's retained message once it is in the log.
    pub async fn publish(
        &self,
        ctx: &Ctx,
        p: &Publish,
        topic: &str,
        client_id: &str,
    ) -> Result<i64, PublishError> {
        let log_topic = self
            .map
            .log_topic(topic)
            .ok_or_else(|| PublishError::Unmapped(topic.to_string()))?;
        let find = || {
            ctx.log.read(|s| {
                s.topic(log_topic)
                    .map(|t| (t.record.id, t.partitions.len() as u32))
            })
        };
        let (topic_id, partitions) = match find() {
            Some(f) => f,
            None if ctx.config.auto_create_topics => {
                match topics::create(ctx, log_topic, -1, -1, BTreeMap::new(), false).await {
                    // Created by another request meanwhile: applied by now, like our own.
                    Ok(_) | Err(topics::TopicError::Exists(_)) => find()
                        .ok_or_else(|| PublishError::Topic(log_topic.into(), "vanished".into()))?,
                    Err(e) => return Err(PublishError::Topic(log_topic.into(), e.to_string())),
                }
            }
            None => {
                return Err(PublishError::Topic(
                    log_topic.into(),
                    "auto-creation is off".into(),
                ));
            }
        };
        let mapped = record_of(p, topic, client_id);
        let now = now_ms();
        let record = Record {
            attributes: 0,
            timestamp_delta: 0,
            offset_delta: 0,
            key: Some(mapped.key.clone()),
            value: Some(mapped.value),
            headers: mapped
                .headers
                .into_iter()
                .map(|(k, v)| Header {
                    key: Bytes::from(k),
                    value: v,
                })
                .collect(),
        };
        let header = BatchHeader {
            base_offset: 0,
            partition_leader_epoch: -1,
            attributes: 0,
            base_timestamp: now,
            max_timestamp: now,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        };
        let mut out = BytesMut::new();
        encode_batch(&header, &[record], &mut out)
            .map_err(|e| PublishError::Encode(e.to_string()))?;
        let batch = out.freeze();
        let partition = partition_for_key(&mapped.key, partitions);
        let append = Append {
            topic_id,
            partition,
            meta: BatchMeta {
                size: batch.len() as u32,
                records: 1,
                max_timestamp: now,
                producer_id: -1,
                producer_epoch: -1,
                base_sequence: -1,
            },
            batch,
        };
        let offset = ctx.batcher.submit(append).await.await?;
        if p.retain {
            self.retain(ctx, p, topic).await?;
        }
        Ok(offset)
    }

    /// Keeps `p` as the retained message of `topic` (an empty payload removes it).
    async fn retain(&self, ctx: &Ctx, p: &Publish, topic: &str) -> Result<(), PublishError> {
        let key = keys::mqtt_retained(topic);
        if p.payload.is_empty() {
            ctx.store.delete(key).await?;
            return Ok(());
        }
        let mut p = p.clone();
        p.topic = topic.to_string();
        let value = encode_retained(&p, now_ms());
        if value.len() > MAX_RETAINED {
            return Err(PublishError::RetainedTooLarge(value.len()));
        }
        ctx.store.put(key, value).await?;
        Ok(())
    }

    /// The retained messages whose topics `filter` matches, with the expiry time they have
    /// left; expired ones are left out.
    pub async fn retained(&self, ctx: &Ctx, filter: &str) -> Result<Vec<Publish>, PublishError> {
        let all = ctx
            .store
            .range(keys::MQTT_RETAINED_PREFIX.as_bytes(), None)
            .await?;
        let now = now_ms();
        let mut out = Vec::new();
        for kv in all.kvs {
            let Some((mut p, at)) = decode_retained(&kv.value) else {
                tracing::warn!(key = %String::from_utf8_lossy(&kv.key), "unreadable retained message");
                continue;
            };
            if !topic::matches(filter, &p.topic) {
                continue;
            }
            if let Some(expiry) = p.properties.message_expiry_interval {
                let age = (now - at).max(0) / 1000;
                if age >= i64::from(expiry) {
                    continue;
                }
                p.properties.message_expiry_interval = Some(expiry - age as u32);
            }
            out.push(p);
        }
        Ok(out)
    }

    /// Hands a record from the log to every session with a matching subscription, once
    /// per session at the highest QoS its matching subscriptions grant, with the
    /// identifiers of all of them.
    async fn deliver(&self, mut p: Publish, m: &Message) {
        if let Some(expiry) = p.properties.message_expiry_interval {
            let age = (now_ms() - m.timestamp).max(0) / 1000;
            if age >= i64::from(expiry) {
                return; // expired while waiting in the log
            }
            p.properties.message_expiry_interval = Some(expiry - age as u32);
        }
        let targets: Vec<(u64, Granted, Vec<u32>)> = {
            let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
            let own = |session: &u64| {
                m.client.is_some()
                    && clients.get(session).map(String::as_str) == m.client.as_deref()
            };
            let subs = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
            let mut by_session: HashMap<u64, (Granted, Vec<u32>)> = HashMap::new();
            for (id, g) in subs.matching(&p.topic) {
                if g.no_local && own(id) {
                    continue;
                }
                let entry = by_session.entry(*id).or_insert((*g, Vec::new()));
                entry.0.qos = entry.0.qos.max(g.qos);
                entry.0.retain_as_published |= g.retain_as_published;
                entry.1.extend(g.subscription_id);
            }
            by_session
                .into_iter()
                .map(|(id, (g, ids))| (id, g, ids))
                .collect()
        };
        let retained_flag = m.retain;
        for (id, g, ids) in targets {
            let Some(outbox) = self.outbox(id) else {
                continue;
            };
            let mut publish = p.clone();
            publish.qos = publish.qos.min(g.qos);
            publish.properties.subscription_identifiers = ids;
            publish.retain = retained_flag && g.retain_as_published;
            let d = Delivery { publish };
            if d.publish.qos == QoS::AtMostOnce {
                if outbox.try_send(d).is_err() {
                    tracing::debug!(session = id, "mqtt outbox full; QoS 0 message dropped");
                }
            } else {
                let _ = outbox.send(d).await;
            }
        }
    }
}

/// Follows one log topic from the moment it is first needed, delivering every new record.
async fn tail(ctx: Arc<Ctx>, log_topic: String) {
    let mut applied = ctx.log.subscribe();
    // Where each partition's delivery stands; partitions that exist now start at their
    // end (live delivery), ones that appear later at their start.
    let mut next: HashMap<u32, i64> = ctx
        .log
        .read(|s| {
            s.topic(&log_topic).map(|t| {
                t.partitions
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (i as u32, p.high_watermark))
                    .collect()
            })
        })
        .unwrap_or_default();
    let mut topic_id = None;
    loop {
        if applied.changed().await.is_err() {
            return;
        }
        let view = ctx.log.read(|s| {
            s.topic(&log_topic).map(|t| {
                (
                    t.record.id,
                    t.partitions
                        .iter()
                        .map(|p| (p.log_start_offset, p.high_watermark))
                        .collect::<Vec<_>>(),
                )
            })
        });
        let Some((id, partitions)) = view else {
            continue;
        };
        if topic_id.is_some_and(|t| t != id) {
            next.clear(); // deleted and created again
        }
        topic_id = Some(id);
        for (p, (start, hwm)) in partitions.into_iter().enumerate() {
            let p = p as u32;
            let from = next.entry(p).or_insert(start);
            while *from < hwm {
                match read_from(&ctx, &id, p, *from).await {
                    Ok(records) if !records.is_empty() => {
                        for (m, publish) in records {
                            let offset = m.at.2;
                            if offset >= *from {
                                if let Some(publish) = publish {
                                    ctx.mqtt.deliver(publish, &m).await;
                                }
                                *from = offset + 1;
                            }
                        }
                    }
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(topic = %log_topic, partition = p, error = %e, "mqtt delivery read failed");
                        break;
                    }
                }
            }
        }
    }
}

/// Where a record came from in the log, and what delivery needs to know of it.
#[derive(Debug, Clone)]
struct Message {
    /// (topic id, partition, offset).
    at: (uuid::Uuid, u32, i64),
    timestamp: i64,
    retain: bool,
    /// The MQTT client that published it, if one did.
    client: Option<String>,
}

/// Records from `offset` on; the message is `None` for records whose key is not an MQTT
/// topic name.
type Messages = Vec<(Message, Option<Publish>)>;

async fn read_from(
    ctx: &Ctx,
    topic_id: &uuid::Uuid,
    partition: u32,
    offset: i64,
) -> Result<Messages, String> {
    let source = ctx.log.read(|s| {
        s.partition(topic_id, partition)
            .map(|log| Source::for_offset(log, offset.max(log.log_start_offset), TAIL_READ))
    });
    let Some(source) = source else {
        return Ok(Vec::new());
    };
    let bytes = read_records(ctx, &source, offset, TAIL_READ, true)
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for info in batch::iter_headers(&bytes) {
        let info = info.map_err(|e| e.to_string())?;
        let raw = bytes.slice(info.position..info.position + info.size);
        let (h, records) = decode_batch(&raw).map_err(|e| e.to_string())?;
        let log_append = h.attributes & 0x08 != 0;
        for r in records {
            let at = h.base_offset + i64::from(r.offset_delta);
            let timestamp = if log_append {
                h.max_timestamp
            } else {
                h.base_timestamp + r.timestamp_delta
            };
            let headers: Vec<(Bytes, Option<Bytes>)> =
                r.headers.into_iter().map(|h| (h.key, h.value)).collect();
            let header = |name: &[u8]| {
                headers
                    .iter()
                    .find(|(k, _)| k.as_ref() == name)
                    .and_then(|(_, v)| v.clone())
            };
            let retain = header(b"mqtt.retain").as_deref() == Some(b"1");
            let client =
                header(b"mqtt.client_id").map(|c| String::from_utf8_lossy(&c).into_owned());
            out.push((
                Message {
                    at: (*topic_id, partition, at),
                    timestamp,
                    retain,
                    client,
                },
                publish_of(r.key.as_deref(), r.value.as_ref(), &headers),
            ));
        }
    }
    Ok(out)
}
