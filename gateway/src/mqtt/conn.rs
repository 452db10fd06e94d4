//! One MQTT connection: CONNECT, then packets in both directions until DISCONNECT, a
//! protocol violation (answered with its reason code in 5.0), a keep-alive timeout, a
//! takeover by the same client id, or shutdown.
//!
//! What is built so far: MQTT 3.1.1 and 5.0 sessions that live as long as their
//! connection; PUBLISH at QoS 0, 1 and 2 into the log (PUBACK and PUBREC only once the
//! record is durable and committed); subscriptions with wildcards, subscription
//! identifiers and no-local, delivered from the log at QoS 0, 1 and 2 with the remaining
//! message expiry; topic aliases from clients; keep-alive; session takeover; will messages
//! on an unclean close; retained messages. 5.0 clients are told in CONNACK what is not
//! available yet (shared subscriptions).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use sluice_protocols::mqtt::{
    Ack, ConnAck, Connect, DecodeError, Disconnect, Packet, Properties, Publish, QoS, SubAck,
    UnsubAck, Version, decode, encode, encoded_len, reason, topic,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::auth::{Refused, Rules};
use super::broker::{Claim, Delivery, Granted, Live, Order};
use super::session::{
    InFlight, LogRef, NEVER, Owner, SessionRecord, SubscriptionRecord, TopicPosition,
};
use crate::kafka::now_ms;
use crate::server::Ctx;
use sluice_metadata::{Compare, MetaStoreExt, Txn, TxnOp};

/// How long a new connection may take to send CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest packet accepted (also announced to 5.0 clients).
pub const MAX_PACKET: usize = 1 << 20;
/// QoS 1 and 2 publishes a client may have unacknowledged at once (Receive Maximum).
const RECEIVE_MAXIMUM: u16 = 256;
/// Unacknowledged QoS 1 and 2 deliveries to a client that names no Receive Maximum
/// (all 3.1.1 clients); 5.0's default is 65,535, but a smaller window keeps a stalled
/// client from holding much.
const DEFAULT_CLIENT_WINDOW: usize = 1024;
/// Deliveries queued for a client whose window is full; beyond this they are dropped.
const MAX_WAITING: usize = 100_000;
/// How long publishes received before a connection ended may take to be stored.
const STORE_ON_CLOSE: Duration = Duration::from_secs(10);
/// Deliveries taken from the queue for one write to the socket.
const OUTBOX_BATCH: usize = 256;
/// Publishes (of any QoS) a connection may have on their way into the log at once.
const MAX_PENDING: usize = 1024;
/// Topic aliases a 5.0 client may set up (Topic Alias Maximum).
const TOPIC_ALIAS_MAXIMUM: u16 = 64;

/// Groups of publishes being stored, answered in the order the groups came.
type Acks = FuturesOrdered<std::pin::Pin<Box<dyn std::future::Future<Output = Stored> + Send>>>;

/// A group of publishes stored (or not): how many, and for its QoS 1 and 2 ones, in
/// order, the acknowledgement to send (if any) and the QoS 2 packet id to forget (if
/// storing failed).
struct Stored {
    count: usize,
    acked: Vec<(Option<Packet>, Option<u16>)>,
}

/// Consecutive publishes to one topic stored as one record batch, at most this many.
const MAX_GROUP: usize = 256;

/// Why a connection ends.
enum End {
    /// DISCONNECT from the client: `true` asks for its will to be published (5.0 0x04).
    Client(bool),
    /// The client broke a rule: tell a 5.0 client this reason code, then close.
    Violation(u8, String),
    /// The peer went away or the socket failed.
    Gone,
    TakenOver,
    Shutdown,
    KeepAlive,
    /// Asked to reconnect elsewhere (see `balance`): as a drain, for this connection.
    Moved,
}

/// Whether Kafka's ACLs let `p` publish on `topic`: Write on the log topic it maps to.
fn may_write(ctx: &Ctx, p: &crate::acl::Principal, topic: &str) -> bool {
    if !ctx.acl.enabled() {
        return true;
    }
    match ctx.mqtt.map.log_topic(topic) {
        Some(log) => ctx.acl.allows(
            p,
            crate::acl::Operation::Write,
            crate::acl::ResourceType::Topic,
            log,
        ),
        None => true, // refused later: no log topic takes it
    }
}

/// Whether Kafka's ACLs let `p` subscribe to `filter`: Read on every log topic the
/// filter's messages may come from.
fn may_read(ctx: &Ctx, p: &crate::acl::Principal, filter: &str) -> bool {
    !ctx.acl.enabled()
        || ctx.mqtt.map.log_topics_of(filter).iter().all(|log| {
            ctx.acl.allows(
                p,
                crate::acl::Operation::Read,
                crate::acl::ResourceType::Topic,
                log,
            )
        })
}

/// Who a connecting client is and what it may do: `Ok(None)` is everything.
///
/// A user the `--mqtt-auth` file lists is checked against the file, with its rules. With
/// `store` (`--mqtt-user-store`, or a SASL Kafka listener), any other user name is checked
/// against the user store (a SCRAM credential verifies the password), a client without one
/// is known by its verified TLS certificate, and one with neither is refused unless the
/// file lets anonymous clients in. Without it, the file (if any) decides alone, as before
/// the user store existed.
async fn login(
    ctx: &Ctx,
    connect: &Connect,
    principal: Option<&str>,
    store: bool,
) -> Result<Option<Rules>, Refused> {
    let file = ctx.mqtt.auth.as_ref();
    let user = connect.username.as_deref();
    let password = connect.password.as_deref();
    if !store {
        return match file {
            None => Ok(None),
            Some(auth) => auth.authenticate(user, password).map(Some),
        };
    }
    match (user, file) {
        (Some(name), Some(auth)) if auth.has_user(name) => {
            auth.authenticate(user, password).map(Some)
        }
        (Some(name), _) => {
            let password = password.ok_or(Refused::BadCredentials)?.to_vec();
            match crate::users::verify_password(&ctx.store, name, password).await {
                Ok(true) => Ok(None),
                Ok(false) => Err(Refused::BadCredentials),
                Err(e) => {
                    tracing::warn!(user = name, error = %e, "reading the user store failed");
                    Err(Refused::Unavailable)
                }
            }
        }
        (None, _) if principal.is_some() => Ok(None),
        (None, Some(auth)) => auth
            .anonymous()
            .cloned()
            .map(Some)
            .ok_or(Refused::NotAuthorized),
        (None, None) => Err(Refused::NotAuthorized),
    }
}

/// Saves a session whose connection `conn` ended with nobody known to take it over: as
/// released, unless a connection elsewhere claimed it meanwhile (a client told to go that
/// reconnected at once, before this gateway saw the claim): then it is handed over to
/// that one (or left to it, if it starts clean), never overwritten.
async fn release(
    ctx: &Ctx,
    key: String,
    mut record: SessionRecord,
    conn: uuid::Uuid,
    client_id: &str,
) {
    for _ in 0..3 {
        let current = match ctx.store.get(key.as_bytes()).await {
            Ok(kv) => kv,
            Err(e) => {
                tracing::warn!(client = %client_id, error = %e, "saving an mqtt session failed");
                return;
            }
        };
        let claimed = current
            .as_ref()
            .and_then(|kv| SessionRecord::decode(&kv.value))
            .and_then(|r| r.owner)
            .filter(|o| o.conn != conn);
        match claimed {
            Some(owner) if !owner.resume => return,
            Some(owner) => {
                record.owner = Some(owner);
                record.handed_over_by = Some(conn);
                record.released_at_ms = None;
            }
            None => {
                record.owner = None;
                record.released_at_ms = Some(now_ms());
            }
        }
        let compare = match &current {
            Some(kv) => Compare::mod_revision(key.clone(), kv.mod_revision),
            None => Compare::absent(key.clone()),
        };
        let saved = ctx
            .store
            .txn(Txn {
                compares: vec![compare],
                success: vec![TxnOp::put(key.clone(), record.encode())],
                failure: vec![],
            })
            .await;
        match saved {
            Ok(r) if r.succeeded => return,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(client = %client_id, error = %e, "saving an mqtt session failed");
                return;
            }
        }
    }
    tracing::warn!(client = %client_id, "an mqtt session kept changing while it was saved; not saved");
}

/// The byte streams an MQTT connection runs on: TCP, or a WebSocket's payloads.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Serves one MQTT connection over any byte stream.
pub async fn serve_stream(
    ctx: Arc<Ctx>,
    mut socket: impl Stream,
    accepted: crate::server::Accepted,
    cancel: CancellationToken,
) {
    let peer = Some(accepted.peer);
    // Grows for larger packets; idle connections keep little.
    let mut buf = BytesMut::with_capacity(1024);
    let connect = tokio::time::timeout(CONNECT_TIMEOUT, read_connect(&mut socket, &mut buf)).await;
    let connect = match connect {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::warn!(?peer, error = %e, "refusing mqtt connection");
            if let DecodeError::UnsupportedProtocol { level, .. } = &e {
                // Answer in the version the client asked for where we can: 3.1.1's code 1.
                let v = if *level == 5 {
                    Version::V5
                } else {
                    Version::V311
                };
                refuse(&mut socket, reason::UNSUPPORTED_PROTOCOL_VERSION, v).await;
            }
            return;
        }
        Err(_) => {
            tracing::debug!(?peer, "no CONNECT in time; closing");
            return;
        }
    };
    let version = connect.version;
    let mut client_id = connect.client_id.clone();
    let mut assigned = None;
    if client_id.is_empty() {
        if version == Version::V311 && !connect.clean_start {
            refuse(&mut socket, reason::CLIENT_IDENTIFIER_NOT_VALID, version).await;
            return;
        }
        client_id = format!("sluice-{}", uuid::Uuid::new_v4().simple());
        assigned = Some(client_id.clone());
    }
    let store = ctx.config.mqtt_user_store || accepted.sasl;
    let host = Some(accepted.peer.ip());
    // Who the client is, for ACLs: its user name, else its certificate, else anonymous.
    let principal = match (&connect.username, &accepted.principal) {
        (Some(user), _) => crate::acl::Principal::user(user, host),
        (None, Some(subject)) => crate::acl::Principal::user(subject, host),
        (None, None) => crate::acl::Principal::anonymous(host),
    };
    let verdict = login(&ctx, &connect, accepted.principal.as_deref(), store)
        .await
        .and_then(|rules| match (&rules, &connect.will) {
            (Some(r), Some(w)) if !r.may_publish(&w.topic) => Err(Refused::NotAuthorized),
            (_, Some(w)) if !may_write(&ctx, &principal, &w.topic) => Err(Refused::NotAuthorized),
            _ => Ok(rules),
        });
    let rules = match verdict {
        Ok(rules) => {
            if let Some(user) = &connect.username {
                ctx.failed_logins.succeeded(user, Some(accepted.peer.ip()));
            }
            rules
        }
        Err(refused) => {
            let mechanism = if connect.username.is_some() {
                "password"
            } else {
                "anonymous"
            };
            crate::metrics::AUTH_FAILURES
                .with_label_values(&["mqtt", mechanism])
                .inc();
            let delay = match refused {
                Refused::BadCredentials => ctx.failed_logins.failed(
                    connect.username.as_deref().unwrap_or_default(),
                    Some(accepted.peer.ip()),
                ),
                _ => std::time::Duration::ZERO,
            };
            tracing::warn!(?peer, client = %client_id, user = ?connect.username, ?refused, delay_ms = delay.as_millis() as u64, "mqtt connection refused");
            tokio::time::sleep(delay).await;
            let code = match refused {
                Refused::BadCredentials => reason::BAD_USER_NAME_OR_PASSWORD,
                Refused::NotAuthorized => reason::NOT_AUTHORIZED,
                Refused::Unavailable => reason::SERVER_UNAVAILABLE,
            };
            refuse(&mut socket, code, version).await;
            return;
        }
    };
    // 3.1.1: Clean Session 0 keeps the session for good; 5.0: as the client asks.
    let mut expiry = match version {
        Version::V311 if connect.clean_start => 0,
        Version::V311 => NEVER,
        Version::V5 => connect.properties.session_expiry_interval.unwrap_or(0),
    };
    let (live, previous, mut outbox) = ctx.mqtt.open(&client_id);
    let owner = Owner {
        node: ctx.node_id,
        conn: live.conn,
        resume: !connect.clean_start,
    };
    let protocol = if version == Version::V5 { 5 } else { 4 };
    let resumed = match ctx
        .mqtt
        .claim(&ctx, &live, previous, owner, protocol, expiry)
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(?peer, client = %client_id, error = %e, "mqtt session store unavailable; refusing connection");
            ctx.mqtt.detach(&live, &[], &mut outbox, false).await;
            ctx.mqtt.finished(&live);
            refuse(&mut socket, reason::SERVER_UNAVAILABLE, version).await;
            return;
        }
    };
    if resumed.is_some() {
        crate::metrics::MQTT_SESSIONS_RESUMED.inc();
    }
    let open = ctx.balance.open(crate::balance::Protocol::Mqtt);
    let ack = Packet::ConnAck(ConnAck {
        session_present: resumed.is_some(),
        code: reason::SUCCESS,
        properties: Properties {
            assigned_client_identifier: assigned.filter(|_| version == Version::V5),
            receive_maximum: Some(RECEIVE_MAXIMUM),
            maximum_packet_size: Some(MAX_PACKET as u32),
            retain_available: Some(1),
            shared_subscription_available: Some(1),
            subscription_identifier_available: Some(1),
            wildcard_subscription_available: Some(1),
            topic_alias_maximum: Some(TOPIC_ALIAS_MAXIMUM),
            ..Default::default()
        },
    });
    let mut conn = Conn {
        ctx: ctx.clone(),
        version,
        live: live.clone(),
        expiry,
        subscriptions: Vec::new(),
        incoming_qos2: HashSet::new(),
        pending: Vec::new(),
        pending_acked: 0,
        last_submitted: None,
        storing: 0,
        storing_acked: 0,
        outgoing: HashMap::new(),
        sent: 0,
        client_window: connect
            .properties
            .receive_maximum
            .map_or(DEFAULT_CLIENT_WINDOW, usize::from),
        waiting: VecDeque::new(),
        next_packet_id: 1,
        client_max_packet: connect
            .properties
            .maximum_packet_size
            .map_or(usize::MAX, |m| m as usize),
        aliases: HashMap::new(),
        rules,
        principal,
        client_id: client_id.clone(),
        out: BytesMut::new(),
    };
    conn.send(&ack);
    if let Some(r) = resumed {
        conn.resume(r).await;
    }
    let end = match conn.flush(&mut socket).await {
        Ok(()) => {
            conn.run(&mut socket, &mut buf, &mut outbox, &connect, &cancel)
                .await
        }
        Err(_) => End::Gone,
    };
    let drained = matches!(end, End::Shutdown | End::Moved);
    let (will, code) = match &end {
        End::Client(with_will) => (*with_will, None),
        End::Violation(code, why) => {
            tracing::warn!(?peer, client = %client_id, reason = why.as_str(), "closing mqtt connection");
            (true, Some(*code))
        }
        End::Gone => (true, None),
        End::TakenOver => (true, Some(reason::SESSION_TAKEN_OVER)),
        // A drain: "use another server" where one is named, else "shutting down".
        End::Shutdown => (
            true,
            Some(match ctx.config.mqtt_server_reference {
                Some(_) => reason::USE_ANOTHER_SERVER,
                None => reason::SERVER_SHUTTING_DOWN,
            }),
        ),
        End::KeepAlive => (true, Some(reason::KEEP_ALIVE_TIMEOUT)),
        // Asked to go, this gateway having more than its share of connections.
        End::Moved => (true, Some(reason::USE_ANOTHER_SERVER)),
    };
    if let (Some(code), Version::V5) = (code, version) {
        let server_reference = ctx
            .config
            .mqtt_server_reference
            .clone()
            .filter(|_| code == reason::USE_ANOTHER_SERVER);
        conn.send(&Packet::Disconnect(Disconnect {
            reason: code,
            properties: Properties {
                server_reference,
                ..Properties::default()
            },
        }));
        let _ = conn.flush(&mut socket).await;
    }
    let _ = socket.shutdown().await;
    expiry = conn.expiry;
    conn.end(&mut outbox).await;
    drop(open);
    if let (true, Some(w)) = (will, &connect.will) {
        let p = Publish {
            dup: false,
            qos: w.qos,
            retain: w.retain,
            topic: w.topic.clone(),
            packet_id: None,
            properties: w.properties.clone(),
            payload: w.payload.clone(),
        };
        // Will Delay: the will waits as long as asked (at most as long as the session
        // lives) and is dropped if the client connects again meanwhile.
        let delay = w.properties.will_delay_interval.unwrap_or(0).min(expiry);
        // A drain is not the client's going away: its will waits in metadata, at least
        // the drain's delay, for the client to connect again elsewhere (see `wills`).
        let grace = ctx.config.mqtt_drain_will_delay;
        if drained && !grace.is_zero() {
            let wait = Duration::from_secs(u64::from(delay)).max(grace);
            let deferred = super::wills::DeferredWill {
                conn: live.conn,
                due_at_ms: now_ms() + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX),
                publish: p.clone(),
            };
            match ctx
                .store
                .put(super::wills::key(&client_id), deferred.encode())
                .await
            {
                Ok(_) => {
                    crate::metrics::MQTT_WILLS
                        .with_label_values(&["deferred"])
                        .inc();
                    return;
                }
                Err(e) => {
                    tracing::warn!(client = %client_id, error = %e, "cannot defer a will during the drain; publishing it now");
                }
            }
        }
        let ctx = ctx.clone();
        let conn_id = live.conn;
        let publish = async move {
            if delay > 0 {
                tokio::time::sleep(Duration::from_secs(u64::from(delay))).await;
                // (Only a connection holding the session now counts here.)
                if ctx.mqtt.reconnected(&client_id, conn_id, i64::MAX).await {
                    tracing::debug!(client = %client_id, "client back before its will delay; will dropped");
                    return;
                }
            }
            let order = Order::default();
            if let Err(e) = ctx
                .mqtt
                .publish(&ctx, std::slice::from_ref(&p), &client_id, order)
                .await
            {
                tracing::warn!(client = %client_id, error = %e, "publishing a will failed");
            }
        };
        if delay > 0 {
            tokio::spawn(publish);
        } else {
            publish.await;
        }
    }
}

/// Answers a CONNECT with a refusal; the caller then closes the connection.
async fn refuse(socket: &mut impl Stream, code: u8, version: Version) {
    let mut out = BytesMut::new();
    let nack = Packet::ConnAck(ConnAck {
        session_present: false,
        code,
        properties: Properties::default(),
    });
    encode(&nack, version, &mut out);
    let _ = socket.write_all(&out).await;
    let _ = socket.flush().await;
}

async fn read_connect(
    socket: &mut impl Stream,
    buf: &mut BytesMut,
) -> Result<Connect, DecodeError> {
    loop {
        if let Some(p) = decode(buf, None, MAX_PACKET)? {
            let Packet::Connect(c) = p else {
                return Err(DecodeError::Protocol("the first packet must be CONNECT"));
            };
            if let Some(w) = &c.will {
                topic::validate_name(&w.topic)
                    .map_err(|_| DecodeError::Protocol("will topic is not a topic name"))?;
            }
            return Ok(*c);
        }
        match socket.read_buf(buf).await {
            Ok(0) | Err(_) => {
                return Err(DecodeError::Malformed("connection closed before CONNECT"));
            }
            Ok(_) => {}
        }
    }
}

struct Conn {
    ctx: Arc<Ctx>,
    version: Version,
    live: Arc<Live>,
    /// Seconds the session outlives the connection (0: it ends with it).
    expiry: u32,
    /// The session's subscriptions, in the order made.
    subscriptions: Vec<(String, Granted)>,
    /// QoS 2 packet ids received and stored, awaiting PUBREL.
    incoming_qos2: HashSet<u16>,
    /// Publishes received and not yet handed to the log: consecutive ones to one topic.
    pending: Vec<Publish>,
    /// How many of `pending` are QoS 1 or 2.
    pending_acked: usize,
    /// Resolves once the last group of publishes was handed to the log.
    last_submitted: Option<tokio::sync::oneshot::Receiver<()>>,
    /// Publishes on their way into the log, of any QoS and of QoS 1 and 2.
    storing: usize,
    storing_acked: usize,
    /// QoS 1 and 2 deliveries sent and not yet acknowledged (PUBACK, or PUBCOMP).
    outgoing: HashMap<u16, Out>,
    /// Deliveries sent so far; orders `outgoing`.
    sent: u64,
    /// QoS 1 and 2 deliveries the client may have unacknowledged (its Receive Maximum).
    client_window: usize,
    /// Deliveries waiting for a place in that window.
    waiting: VecDeque<Delivery>,
    next_packet_id: u16,
    client_max_packet: usize,
    /// Topic aliases the client set up (5.0).
    aliases: HashMap<u16, String>,
    /// What the client may publish and subscribe to; `None`: everything.
    rules: Option<Rules>,
    /// Who the client is, for Kafka's ACLs on the log topics.
    principal: crate::acl::Principal,
    client_id: String,
    out: BytesMut,
}

/// A QoS 1 or 2 delivery the client has not acknowledged yet.
#[derive(Debug, Clone)]
struct Out {
    seq: u64,
    qos: QoS,
    /// QoS 2: PUBREL sent, PUBCOMP awaited.
    released: bool,
    retain: bool,
    subscription_ids: Vec<u32>,
    at: Option<LogRef>,
}

impl Out {
    fn record(&self, packet_id: u16) -> InFlight {
        InFlight {
            packet_id,
            qos: self.qos as u8,
            released: self.released,
            retain: self.retain,
            subscription_ids: self.subscription_ids.clone(),
            at: self.at.clone().filter(|_| !self.released),
        }
    }
}

impl Conn {
    fn send(&mut self, p: &Packet) {
        encode(p, self.version, &mut self.out);
    }

    async fn flush(&mut self, socket: &mut impl Stream) -> std::io::Result<()> {
        if !self.out.is_empty() {
            socket.write_all(&self.out).await?;
            self.out.clear();
            // TLS keeps what the socket did not take until flushed.
            socket.flush().await?;
        }
        Ok(())
    }

    fn v5(&self) -> bool {
        self.version == Version::V5
    }

    async fn run(
        &mut self,
        socket: &mut impl Stream,
        buf: &mut BytesMut,
        outbox: &mut tokio::sync::mpsc::Receiver<Box<Delivery>>,
        connect: &Connect,
        cancel: &CancellationToken,
    ) -> End {
        let keep_alive = (connect.keep_alive > 0)
            .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
        let mut deadline = keep_alive.map(|k| tokio::time::Instant::now() + k);
        let mut acks: Acks = FuturesOrdered::new();
        let taken_over = self.live.token.clone();
        loop {
            // Whatever complete packets are buffered first, while the publishes being
            // stored leave room.
            while self.storing + self.pending.len() < MAX_PENDING {
                match decode(buf, Some(self.version), MAX_PACKET) {
                    Ok(Some(p)) => {
                        if let Some(k) = keep_alive {
                            deadline = Some(tokio::time::Instant::now() + k);
                        }
                        if let Some(end) = self.handle(p, &mut acks) {
                            return self.finish_publishes(socket, &mut acks, end).await;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let end = End::Violation(e.reason_code(), e.to_string());
                        return self.finish_publishes(socket, &mut acks, end).await;
                    }
                }
            }
            // QoS 0 publishes arriving while a group is being stored wait for it and go
            // as the next group (a full group goes at once, see `handle`): under load,
            // larger groups instead of one per read, each costing a record batch, an
            // index entry and a round through the batcher. Publishes a client waits to
            // have acknowledged go at once.
            if acks.is_empty() || self.pending_acked > 0 {
                self.store_pending(&mut acks);
            }
            if self.flush(socket).await.is_err() {
                return self.finish_publishes(socket, &mut acks, End::Gone).await;
            }
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            // With MAX_PENDING publishes being stored or waiting to be, the socket is not
            // read: the client is slowed down by TCP rather than the gateway buffering
            // without end.
            let room = self.storing + self.pending.len() < MAX_PENDING;
            let end = tokio::select! {
                n = socket.read_buf(buf), if room => match n {
                    Ok(0) | Err(_) => Some(End::Gone),
                    Ok(_) => None,
                },
                Some(group) = acks.next(), if !acks.is_empty() => {
                    self.stored(group);
                    None
                }
                Some(d) = outbox.recv() => {
                    // Whatever else is queued goes out in the same write.
                    self.deliver(*d);
                    for _ in 0..OUTBOX_BATCH {
                        match outbox.try_recv() {
                            Ok(d) => self.deliver(*d),
                            Err(_) => break,
                        }
                    }
                    None
                }
                _ = sleep => Some(End::KeepAlive),
                _ = taken_over.cancelled() => Some(End::TakenOver),
                _ = cancel.cancelled() => Some(End::Shutdown),
                _ = self.ctx.balance.asked(crate::balance::Protocol::Mqtt) => {
                    self.ctx.balance.take(crate::balance::Protocol::Mqtt).then_some(End::Moved)
                }
            };
            if let Some(end) = end {
                return self.finish_publishes(socket, &mut acks, end).await;
            }
        }
    }

    /// Publishes already received are still stored when the connection ends (a QoS 0
    /// publish right before DISCONNECT is not lost), and acknowledged if it can be.
    async fn finish_publishes(
        &mut self,
        socket: &mut impl Stream,
        acks: &mut Acks,
        end: End,
    ) -> End {
        self.store_pending(acks);
        let drained = tokio::time::timeout(STORE_ON_CLOSE, async {
            while let Some(group) = acks.next().await {
                self.stored(group);
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(client = %self.client_id, "publishes still being stored when the connection ended");
        }
        if !matches!(end, End::Gone) {
            let _ = self.flush(socket).await;
        }
        end
    }

    /// A group of publishes is stored (or failed): acknowledgements go out in order.
    fn stored(&mut self, group: Stored) {
        self.storing -= group.count;
        self.storing_acked -= group.acked.len();
        for (ack, forget) in group.acked {
            if let Some(id) = forget {
                self.incoming_qos2.remove(&id);
            }
            if let Some(ack) = ack {
                self.send(&ack);
            }
        }
    }

    /// Hands the publishes received so far to the log, as one record batch.
    fn store_pending(&mut self, acks: &mut Acks) {
        if self.pending.is_empty() {
            return;
        }
        let group = std::mem::take(&mut self.pending);
        self.storing += group.len();
        self.storing_acked += std::mem::take(&mut self.pending_acked);
        let ctx = self.ctx.clone();
        let v5 = self.v5();
        let client_id = self.client_id.clone();
        let (submitted, next) = tokio::sync::oneshot::channel();
        let order = Order {
            after: self.last_submitted.replace(next),
            submitted: Some(submitted),
        };
        acks.push_back(Box::pin(async move {
            let stored = ctx.mqtt.publish(&ctx, &group, &client_id, order).await;
            if let Err(e) = &stored {
                tracing::warn!(topic = %group[0].topic, error = %e, "mqtt publish not stored");
            }
            let acked = group
                .iter()
                .filter_map(|p| {
                    let id = p.packet_id?;
                    let forget = (stored.is_err() && p.qos == QoS::ExactlyOnce).then_some(id);
                    let code = match (&stored, v5) {
                        (Ok(_), _) => reason::SUCCESS,
                        (Err(super::broker::PublishError::Unmapped(_)), true) => {
                            reason::TOPIC_NAME_INVALID
                        }
                        (Err(_), true) => reason::UNSPECIFIED_ERROR,
                        // 3.1.1 has no way to say no: no acknowledgement, the client resends.
                        (Err(_), false) => return Some((None, forget)),
                    };
                    let ack = Ack {
                        packet_id: id,
                        reason: code,
                        properties: Properties::default(),
                    };
                    let packet = match p.qos {
                        QoS::ExactlyOnce => Packet::PubRec(ack),
                        _ => Packet::PubAck(ack),
                    };
                    Some((Some(packet), forget))
                })
                .collect();
            Stored {
                count: group.len(),
                acked,
            }
        }));
    }

    fn deliver(&mut self, d: Delivery) {
        let mut p = d.publish;
        if p.qos != QoS::AtMostOnce {
            if self.outgoing.len() >= self.client_window {
                // The client's Receive Maximum is reached: the message waits its turn.
                if self.waiting.len() >= MAX_WAITING {
                    tracing::warn!(client = %self.client_id, "mqtt client too slow; message dropped");
                    return;
                }
                self.waiting.push_back(Delivery {
                    publish: p,
                    at: d.at,
                });
                return;
            }
            let id = self.packet_id();
            p.packet_id = Some(id);
            self.sent += 1;
            self.outgoing.insert(
                id,
                Out {
                    seq: self.sent,
                    qos: p.qos,
                    released: false,
                    retain: p.retain,
                    subscription_ids: p.properties.subscription_identifiers.clone(),
                    at: d.at,
                },
            );
        }
        let packet_id = p.packet_id;
        let packet = Packet::Publish(p);
        if encoded_len(&packet, self.version) > self.client_max_packet {
            // MQTT 5.0: a message the client cannot take is dropped for it.
            if let Some(id) = packet_id {
                self.outgoing.remove(&id);
            }
            return;
        }
        self.send(&packet);
    }

    /// An acknowledgement freed a place in the client's window: send what waits.
    fn acknowledged(&mut self, packet_id: u16) {
        self.outgoing.remove(&packet_id);
        while self.outgoing.len() < self.client_window
            && let Some(d) = self.waiting.pop_front()
        {
            self.deliver(d);
        }
    }

    fn packet_id(&mut self) -> u16 {
        loop {
            let id = self.next_packet_id;
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            if !self.outgoing.contains_key(&id) {
                return id;
            }
        }
    }

    /// Picks up a stored session: QoS 2 messages awaiting PUBREL, unacknowledged
    /// deliveries sent again (DUP set) in their order, then its subscriptions, which
    /// first deliver what the log received since the session's positions.
    async fn resume(&mut self, r: SessionRecord) {
        self.incoming_qos2 = r.incoming_qos2.into_iter().collect();
        for f in r.outgoing {
            let Some(qos) = QoS::from_u8(f.qos).filter(|q| *q != QoS::AtMostOnce) else {
                continue;
            };
            self.sent += 1;
            let out = Out {
                seq: self.sent,
                qos,
                released: f.released,
                retain: f.retain,
                subscription_ids: f.subscription_ids,
                at: f.at,
            };
            if out.released {
                self.send(&Packet::PubRel(Ack {
                    packet_id: f.packet_id,
                    reason: reason::SUCCESS,
                    properties: Properties::default(),
                }));
            } else {
                let Some(at) = &out.at else { continue };
                let Some(mut p) = self.ctx.mqtt.read_at(&self.ctx, at).await else {
                    tracing::debug!(client = %self.client_id, "an unacknowledged delivery left the log; not sent again");
                    continue;
                };
                p.dup = true;
                p.qos = qos;
                p.retain = out.retain;
                p.packet_id = Some(f.packet_id);
                p.properties.subscription_identifiers = out.subscription_ids.clone();
                self.send(&Packet::Publish(p));
            }
            self.next_packet_id = f.packet_id.checked_add(1).unwrap_or(1);
            self.outgoing.insert(f.packet_id, out);
        }
        self.subscriptions = r
            .subscriptions
            .into_iter()
            .filter_map(|s| {
                Some((
                    s.filter,
                    Granted {
                        qos: QoS::from_u8(s.qos)?,
                        no_local: s.no_local,
                        retain_as_published: s.retain_as_published,
                        subscription_id: s.subscription_id,
                    },
                ))
            })
            .collect();
        self.ctx
            .mqtt
            .resume(&self.ctx, &self.live, &self.subscriptions, r.positions);
    }

    /// The session as it stands, for the record: positions lowered to the deliveries
    /// still waiting, so those are read again from the log.
    fn record(&self, positions: Vec<TopicPosition>, queued: &[Delivery]) -> SessionRecord {
        let mut outgoing: Vec<(&u16, &Out)> = self.outgoing.iter().collect();
        outgoing.sort_by_key(|(_, o)| o.seq);
        let mut incoming: Vec<u16> = self.incoming_qos2.iter().copied().collect();
        incoming.sort_unstable();
        let mut r = SessionRecord::new(
            if self.v5() { 5 } else { 4 },
            self.expiry,
            Some(Owner {
                node: self.ctx.node_id,
                conn: self.live.conn,
                resume: true,
            }),
        );
        r.subscriptions = self
            .subscriptions
            .iter()
            .map(|(filter, g)| SubscriptionRecord {
                filter: filter.clone(),
                qos: g.qos as u8,
                no_local: g.no_local,
                retain_as_published: g.retain_as_published,
                subscription_id: g.subscription_id,
            })
            .collect();
        r.positions = positions;
        r.lower_positions(
            self.waiting
                .iter()
                .chain(queued)
                .filter_map(|d| d.at.as_ref()),
        );
        r.outgoing = outgoing
            .into_iter()
            .filter(|(_, o)| o.released || o.at.is_some())
            .map(|(id, o)| o.record(*id))
            .collect();
        r.incoming_qos2 = incoming;
        r
    }

    /// Saves a session that outlives its connection (after its subscriptions change), so
    /// that it survives this gateway's crash.
    fn save(&self) {
        if self.expiry == 0 {
            return;
        }
        let record = self.record(Vec::new(), &[]);
        let (ctx, live) = (self.ctx.clone(), self.live.clone());
        let waiting: Vec<Delivery> = self.waiting.iter().cloned().collect();
        tokio::spawn(async move {
            let mut record = record;
            let positions = ctx.mqtt.positions(&live).await;
            record.positions = positions;
            record.lower_positions(waiting.iter().filter_map(|d| d.at.as_ref()));
            let key = sluice_metadata::keys::mqtt_session(&live.client_id);
            if let Err(e) = ctx.mqtt.sessions.put(key, record.encode()).await {
                tracing::warn!(client = %live.client_id, error = %e, "saving an mqtt session failed");
            }
        });
    }

    /// The connection is over: the session is handed to whoever took it over, kept for
    /// its expiry interval, or ended.
    async fn end(&mut self, outbox: &mut tokio::sync::mpsc::Receiver<Box<Delivery>>) {
        self.hand_over(outbox).await;
        self.ctx.mqtt.finished(&self.live);
    }

    async fn hand_over(&mut self, outbox: &mut tokio::sync::mpsc::Receiver<Box<Delivery>>) {
        let ctx = self.ctx.clone();
        let live = self.live.clone();
        let claim = live.take_claim();
        let keep = self.expiry > 0;
        let handing = match &claim {
            Some(Claim::Local(tx)) => tx.is_some(),
            Some(Claim::Remote { owner, .. }) => owner.resume,
            None => true,
        };
        let filters: Vec<String> = self.subscriptions.iter().map(|(f, _)| f.clone()).collect();
        let (positions, queued) = ctx
            .mqtt
            .detach(&live, &filters, outbox, keep && handing)
            .await;
        let key = sluice_metadata::keys::mqtt_session(&self.client_id);
        if !(keep && handing) {
            if claim.is_none()
                && let Err(e) = ctx.mqtt.sessions.delete(key).await
            {
                tracing::warn!(client = %self.client_id, error = %e, "removing an mqtt session failed");
            }
            return;
        }
        let mut record = self.record(positions, &queued);
        match claim {
            Some(Claim::Local(Some(tx))) => {
                let _ = tx.send(record);
            }
            Some(Claim::Remote { owner, revision }) => {
                record.owner = Some(owner);
                record.handed_over_by = Some(live.conn);
                let handed = ctx
                    .store
                    .txn(Txn {
                        compares: vec![Compare::mod_revision(key.clone(), revision)],
                        success: vec![TxnOp::put(key, record.encode())],
                        failure: vec![],
                    })
                    .await;
                match handed {
                    Ok(r) if r.succeeded => {}
                    Ok(_) => {
                        tracing::info!(client = %self.client_id, "mqtt session claimed again before it was handed over")
                    }
                    Err(e) => {
                        tracing::warn!(client = %self.client_id, error = %e, "handing over an mqtt session failed")
                    }
                }
            }
            _ => release(&ctx, key, record, live.conn, &self.client_id).await,
        }
    }

    /// Handles one packet from the client; `Some` ends the connection.
    fn handle(&mut self, p: Packet, acks: &mut Acks) -> Option<End> {
        match p {
            Packet::Publish(p) => return self.publish(p, acks),
            Packet::PubAck(a) => {
                if self
                    .outgoing
                    .get(&a.packet_id)
                    .is_some_and(|o| o.qos == QoS::AtLeastOnce)
                {
                    self.acknowledged(a.packet_id);
                }
            }
            Packet::PubRel(a) => {
                let known = self.incoming_qos2.remove(&a.packet_id);
                let code = if known || !self.v5() {
                    reason::SUCCESS
                } else {
                    reason::PACKET_IDENTIFIER_NOT_FOUND
                };
                self.send(&Packet::PubComp(Ack {
                    packet_id: a.packet_id,
                    reason: code,
                    properties: Properties::default(),
                }));
            }
            Packet::Subscribe(s) => {
                let mut reasons = Vec::with_capacity(s.filters.len());
                for (filter, o) in &s.filters {
                    let shared = topic::parse_shared(filter);
                    if matches!(shared, Ok(Some(_))) && o.no_local {
                        return Some(End::Violation(
                            reason::PROTOCOL_ERROR,
                            "No Local on a shared subscription".into(),
                        ));
                    }
                    // What the subscription can match: a shared one's inner filter.
                    let inner = match &shared {
                        Ok(Some((_, inner))) => Some(*inner),
                        Ok(None) if topic::validate_filter(filter).is_ok() => Some(filter.as_str()),
                        _ => None,
                    };
                    let code = match inner {
                        None => reason::TOPIC_FILTER_INVALID,
                        Some(inner)
                            if self.rules.as_ref().is_some_and(|r| !r.may_subscribe(inner))
                                || !may_read(&self.ctx, &self.principal, inner) =>
                        {
                            crate::metrics::MQTT_DENIED
                                .with_label_values(&["subscribe"])
                                .inc();
                            reason::NOT_AUTHORIZED
                        }
                        Some(_) => {
                            let qos = o.qos;
                            let granted = Granted {
                                qos,
                                retain_as_published: o.retain_as_published,
                                no_local: o.no_local,
                                subscription_id: s
                                    .properties
                                    .subscription_identifiers
                                    .first()
                                    .copied(),
                            };
                            let new = self.ctx.mqtt.subscribe(
                                &self.ctx,
                                self.live.session,
                                filter,
                                granted,
                            );
                            // Retain handling: 0 always, 1 for a new subscription, 2 never;
                            // shared subscriptions get no retained messages.
                            let is_shared = matches!(shared, Ok(Some(_)));
                            if !is_shared
                                && (o.retain_handling == 0 || (o.retain_handling == 1 && new))
                            {
                                let (ctx, session, filter) =
                                    (self.ctx.clone(), self.live.session, filter.clone());
                                tokio::spawn(async move {
                                    ctx.mqtt
                                        .send_retained(&ctx, session, &filter, granted)
                                        .await;
                                });
                            }
                            match self.subscriptions.iter_mut().find(|(f, _)| f == filter) {
                                Some(existing) => existing.1 = granted,
                                None => self.subscriptions.push((filter.clone(), granted)),
                            }
                            qos as u8
                        }
                    };
                    reasons.push(code);
                }
                self.save();
                self.send(&Packet::SubAck(SubAck {
                    packet_id: s.packet_id,
                    reasons,
                    properties: Properties::default(),
                }));
            }
            Packet::Unsubscribe(u) => {
                let reasons = u
                    .filters
                    .iter()
                    .map(|f| {
                        self.subscriptions.retain(|(x, _)| x != f);
                        if self.ctx.mqtt.unsubscribe(self.live.session, f) {
                            reason::SUCCESS
                        } else {
                            reason::NO_SUBSCRIPTION_EXISTED
                        }
                    })
                    .collect();
                self.save();
                self.send(&Packet::UnsubAck(UnsubAck {
                    packet_id: u.packet_id,
                    reasons,
                    properties: Properties::default(),
                }));
            }
            Packet::PingReq => self.send(&Packet::PingResp),
            Packet::Disconnect(d) => {
                if let Some(e) = d.properties.session_expiry_interval {
                    if self.expiry == 0 && e != 0 {
                        return Some(End::Violation(
                            reason::PROTOCOL_ERROR,
                            "a session expiry set at DISCONNECT after none at CONNECT".into(),
                        ));
                    }
                    self.expiry = e;
                }
                return Some(End::Client(d.reason == reason::DISCONNECT_WITH_WILL));
            }
            Packet::PubRec(a) => {
                // QoS 2 delivery, second step: the client has the message; release it.
                let known = self.outgoing.contains_key(&a.packet_id);
                if a.reason >= 0x80 {
                    self.acknowledged(a.packet_id);
                } else {
                    if let Some(o) = self.outgoing.get_mut(&a.packet_id) {
                        o.released = true;
                    }
                    self.send(&Packet::PubRel(Ack {
                        packet_id: a.packet_id,
                        reason: if known || !self.v5() {
                            reason::SUCCESS
                        } else {
                            reason::PACKET_IDENTIFIER_NOT_FOUND
                        },
                        properties: Properties::default(),
                    }));
                }
            }
            Packet::PubComp(a) => {
                // QoS 2 delivery done.
                self.acknowledged(a.packet_id);
            }
            Packet::Auth(_) => {
                return Some(End::Violation(
                    reason::BAD_AUTHENTICATION_METHOD,
                    "extended authentication is not available".into(),
                ));
            }
            Packet::Connect(_)
            | Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp => {
                return Some(End::Violation(
                    reason::PROTOCOL_ERROR,
                    "a packet only a server sends".into(),
                ));
            }
        }
        None
    }

    fn publish(&mut self, mut p: Publish, acks: &mut Acks) -> Option<End> {
        if let Some(alias) = p.properties.topic_alias.take() {
            if alias > TOPIC_ALIAS_MAXIMUM {
                return Some(End::Violation(
                    reason::TOPIC_ALIAS_INVALID,
                    format!("topic alias {alias} above the maximum {TOPIC_ALIAS_MAXIMUM}"),
                ));
            }
            if p.topic.is_empty() {
                match self.aliases.get(&alias) {
                    Some(t) => p.topic = t.clone(),
                    None => {
                        return Some(End::Violation(
                            reason::PROTOCOL_ERROR,
                            format!("topic alias {alias} was never set"),
                        ));
                    }
                }
            } else {
                self.aliases.insert(alias, p.topic.clone());
            }
        }
        if topic::validate_name(&p.topic).is_err() {
            return Some(End::Violation(
                reason::TOPIC_NAME_INVALID,
                format!("'{}' is not a topic name", p.topic),
            ));
        }
        if self
            .rules
            .as_ref()
            .is_some_and(|r| !r.may_publish(&p.topic))
            || !may_write(&self.ctx, &self.principal, &p.topic)
        {
            // Not stored. 5.0 says so in the acknowledgement; 3.1.1 has no way to, and the
            // specification allows a positive acknowledgement.
            crate::metrics::MQTT_DENIED
                .with_label_values(&["publish"])
                .inc();
            tracing::warn!(client = %self.client_id, topic = %p.topic, "mqtt publish not authorized");
            if let Some(id) = p.packet_id {
                let ack = Ack {
                    packet_id: id,
                    reason: if self.v5() {
                        reason::NOT_AUTHORIZED
                    } else {
                        reason::SUCCESS
                    },
                    properties: Properties::default(),
                };
                self.send(&match p.qos {
                    QoS::ExactlyOnce => Packet::PubRec(ack),
                    _ => Packet::PubAck(ack),
                });
            }
            return None;
        }
        if p.qos == QoS::ExactlyOnce
            && let Some(id) = p.packet_id
            && self.incoming_qos2.contains(&id)
        {
            // A resend of a message already stored: acknowledge it again, store it once.
            self.send(&Packet::PubRec(Ack {
                packet_id: id,
                reason: reason::SUCCESS,
                properties: Properties::default(),
            }));
            return None;
        }
        if p.qos != QoS::AtMostOnce
            && self.storing_acked + self.pending_acked >= usize::from(RECEIVE_MAXIMUM)
        {
            return Some(End::Violation(
                reason::RECEIVE_MAXIMUM_EXCEEDED,
                "more unacknowledged publishes than Receive Maximum".into(),
            ));
        }
        if let (QoS::ExactlyOnce, Some(id)) = (p.qos, p.packet_id) {
            self.incoming_qos2.insert(id);
        }
        // Consecutive publishes to one topic go to the log together; a retained one alone.
        let joins = self
            .pending
            .first()
            .is_some_and(|first| first.topic == p.topic && !first.retain)
            && !p.retain
            && self.pending.len() < MAX_GROUP;
        if !joins {
            self.store_pending(acks);
        }
        if p.qos != QoS::AtMostOnce {
            self.pending_acked += 1;
        }
        self.pending.push(p);
        None
    }
}
