//! What a gateway's MQTT connections share: the sessions by client id (for takeover), the
//! subscriptions, appending messages to the log, and delivering what the log receives on
//! mapped topics (from any gateway, and from Kafka producers) to matching subscribers.
//!
//! Delivery follows the log: for each log topic MQTT messages map to, one task reads every
//! record committed after the first subscription appeared and hands it to the sessions
//! whose filters match its key.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_metadata::{Compare, Revision, SharedStore, Txn, TxnOp};
use tokio::sync::oneshot;
use uuid::Uuid;

use bytes::{Bytes, BytesMut};
use sluice_metadata::records::BatchMeta;
use sluice_metadata::{MetaStoreExt, keys};
use sluice_protocols::kafka::batch;
use sluice_protocols::kafka::partitioner::{murmur2, partition_for_key};
use sluice_protocols::kafka::records::{BatchHeader, Record, decode_batch, encode_batch};
use sluice_protocols::mqtt::{Publish, QoS, topic};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::batched::Batched;
use super::mapping::{Origin, TopicMap, publish_of, record_of};
use super::retained::{MAX_RETAINED, decode_retained, encode_retained};
use super::session::{LogRef, Owner, SessionRecord, TopicPosition};
use super::subscriptions::Subscriptions;
use crate::batcher::{Append, AppendError};
use crate::kafka::fetch::{Source, read_records};
use crate::kafka::now_ms;
use crate::server::Ctx;
use crate::topics;

/// Deliveries queued for one connection (boxed: an idle connection's queue then costs a
/// block of pointers, not of messages); beyond this, QoS 0 messages are dropped for it
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

/// Keeps a connection's publishes in the log in the order they came: a group is handed
/// to the batcher only after the one before it.
#[derive(Debug, Default)]
pub struct Order {
    /// Resolves (or fails) once the previous group was handed over.
    pub after: Option<oneshot::Receiver<()>>,
    /// Told once this group was handed over.
    pub submitted: Option<oneshot::Sender<()>>,
}

/// A message on its way to one connection.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub publish: Publish,
    /// The log record it comes from (`None` for retained messages).
    pub at: Option<LogRef>,
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
    /// Session records, read and written in batches.
    pub sessions: Batched,
    node: i32,
    next_session: AtomicU64,
    /// Live connections by client id (for takeover) and by session id (for delivery).
    by_client: Mutex<HashMap<String, Arc<Live>>>,
    live: Mutex<HashMap<u64, Arc<Live>>>,
    subscriptions: Mutex<Subscriptions<u64, Granted>>,
    tails: Mutex<HashMap<String, Arc<Tail>>>,
    /// Connections waiting for another gateway to hand them a session, by connection.
    handoffs: Mutex<HashMap<Uuid, oneshot::Sender<SessionRecord>>>,
    /// Shared subscriptions of this gateway's sessions, by their inner filter.
    shared: Mutex<Subscriptions<(Share, u64), Granted>>,
    /// Per shared subscription, its members on this gateway.
    share_local: Mutex<HashMap<Share, usize>>,
    /// Per shared subscription, the gateways with members, as registered in metadata.
    share_nodes: Mutex<HashMap<Share, BTreeSet<i32>>>,
    /// Bumped by every change to who receives what (see [`Broker::changed`]).
    generation: AtomicU64,
}

/// A shared subscription: its group and its filter (`$share/<group>/<filter>`).
type Share = Arc<(String, String)>;

/// One live connection, as the broker sees it.
#[derive(Debug)]
pub struct Live {
    pub session: u64,
    /// Unique across gateways; names the connection in session records.
    pub conn: Uuid,
    pub client_id: String,
    outbox: mpsc::Sender<Box<Delivery>>,
    /// Ends the connection (takeover).
    pub token: CancellationToken,
    /// Who took the session over, once someone did; `ending` once the connection has
    /// asked (a claim made later finds the session in the store once it is `finished`).
    claim: Mutex<ClaimSlot>,
    /// Cancelled once the connection's session is handed over, saved or removed.
    finished: CancellationToken,
    /// The revision of this connection's claim on its session record (0 until written);
    /// claims by others older than it are stale.
    claimed_at: AtomicI64,
    /// A claim seen from another gateway before this connection's own claim was written.
    remote_claim: Mutex<Option<(Owner, Revision)>>,
    /// Log topics where this session is still catching up from its saved position, and
    /// where it stands in them; the live tail skips it there.
    catchup: Mutex<HashMap<String, TopicPosition>>,
    catchup_task: Mutex<Option<tokio::task::AbortHandle>>,
}

#[derive(Debug, Default)]
struct ClaimSlot {
    claim: Option<Claim>,
    ending: bool,
}

/// Who took a session over from a live connection.
#[derive(Debug)]
pub enum Claim {
    /// A connection on this gateway; it wants the session's state if it resumes it.
    Local(Option<oneshot::Sender<SessionRecord>>),
    /// A connection on another gateway, whose claim the session record holds at `revision`.
    Remote { owner: Owner, revision: Revision },
}

impl Live {
    /// Records that this connection's claim was written at `revision`, and acts on a
    /// newer claim seen meanwhile.
    pub fn claimed(&self, revision: Revision) {
        self.claimed_at.fetch_max(revision, Ordering::SeqCst);
        self.check_remote_claim();
    }

    fn check_remote_claim(&self) {
        let claimed_at = self.claimed_at.load(Ordering::SeqCst);
        if claimed_at == 0 {
            return;
        }
        let pending = lock(&self.remote_claim).take();
        if let Some((owner, revision)) = pending
            && revision > claimed_at
        {
            let mut slot = lock(&self.claim);
            if !slot.ending {
                slot.claim.get_or_insert(Claim::Remote { owner, revision });
            }
            drop(slot);
            self.token.cancel();
        }
    }

    /// Who took the session over, if anyone did; asked once, when the connection ends.
    pub fn take_claim(&self) -> Option<Claim> {
        let mut slot = lock(&self.claim);
        slot.ending = true;
        slot.claim.take()
    }

    /// Hands the session to a connection on this gateway, unless this connection has
    /// already begun to end (then its session is in the store once it has `finished`).
    fn offer_claim(&self, claim: Claim) -> bool {
        let mut slot = lock(&self.claim);
        if slot.ending {
            return false;
        }
        slot.claim = Some(claim);
        true
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long a connection resuming a session waits for the connection that held it to hand
/// it over; after that it resumes from the state last saved.
const HANDOFF: Duration = Duration::from_secs(5);
/// How long a publish waits to see a log topic that another request created.
const TOPIC_WAIT: Duration = Duration::from_secs(5);
/// How often expired sessions are removed.
const SESSION_SWEEP: Duration = Duration::from_secs(60);

/// How often deferred wills are looked at (see [`super::wills`]).
const WILL_SWEEP: Duration = Duration::from_secs(2);

/// One log topic followed for delivery: where it stands, per partition.
#[derive(Debug)]
struct Tail {
    /// Held while a round of records is handed out, so a position read under it is exact.
    state: tokio::sync::Mutex<TailState>,
}

#[derive(Debug)]
struct TailState {
    topic_id: Option<Uuid>,
    /// Per partition, the next offset to hand out.
    next: HashMap<u32, i64>,
    /// Who the last message delivered went to (kept while still right).
    targets: Targets,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").finish_non_exhaustive()
    }
}

impl Broker {
    pub fn new(
        map: TopicMap,
        auth: Option<super::auth::Auth>,
        store: SharedStore,
        node: i32,
    ) -> Self {
        Self {
            map,
            auth,
            sessions: Batched::start(store),
            node,
            next_session: AtomicU64::new(1),
            by_client: Mutex::new(HashMap::new()),
            live: Mutex::new(HashMap::new()),
            subscriptions: Mutex::new(Subscriptions::default()),
            tails: Mutex::new(HashMap::new()),
            handoffs: Mutex::new(HashMap::new()),
            shared: Mutex::new(Subscriptions::default()),
            share_local: Mutex::new(HashMap::new()),
            share_nodes: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
        }
    }

    /// Registers a connection for `client_id`. Returns it, the connection that held the
    /// client id on this gateway (to be taken over), and the new one's delivery queue.
    pub fn open(
        &self,
        client_id: &str,
    ) -> (Arc<Live>, Option<Arc<Live>>, mpsc::Receiver<Box<Delivery>>) {
        let (tx, rx) = mpsc::channel(OUTBOX);
        let live = Arc::new(Live {
            session: self.next_session.fetch_add(1, Ordering::Relaxed),
            conn: Uuid::now_v7(),
            client_id: client_id.to_string(),
            outbox: tx,
            token: CancellationToken::new(),
            claim: Mutex::new(ClaimSlot::default()),
            finished: CancellationToken::new(),
            claimed_at: AtomicI64::new(0),
            remote_claim: Mutex::new(None),
            catchup: Mutex::new(HashMap::new()),
            catchup_task: Mutex::new(None),
        });
        let previous = lock(&self.by_client).insert(client_id.to_string(), live.clone());
        lock(&self.live).insert(live.session, live.clone());
        self.changed();
        (live, previous, rx)
    }

    /// Takes the session of `live`'s client id: ends whichever connection holds it (here
    /// or on another gateway) and, when `owner.resume`, gets its state — handed over by
    /// the connection that held it, or as last saved. Writes the claim to the session
    /// record. Returns the state resumed, `None` when there is no session to resume.
    pub async fn claim(
        &self,
        ctx: &Ctx,
        live: &Live,
        previous: Option<Arc<Live>>,
        owner: Owner,
        protocol: u8,
        expiry_secs: u32,
    ) -> Result<Option<SessionRecord>, String> {
        let key = keys::mqtt_session(&live.client_id);
        let mut state = None;
        let mut handed = false;
        if let Some(prev) = previous {
            let (tx, rx) = oneshot::channel();
            handed = prev.offer_claim(Claim::Local(owner.resume.then_some(tx)));
            prev.token.cancel();
            if handed && owner.resume {
                state = tokio::time::timeout(HANDOFF, rx)
                    .await
                    .ok()
                    .and_then(Result::ok);
            } else if !handed {
                // The connection was already ending on its own: its session is saved
                // (or removed) once it has finished.
                let _ = tokio::time::timeout(HANDOFF, prev.finished.cancelled()).await;
            }
        }
        if owner.resume && !handed {
            state = self.load(ctx, &key, owner).await?;
        }
        let state = state.filter(|r| !r.expired(now_ms()));
        let mut record = state
            .clone()
            .unwrap_or_else(|| SessionRecord::new(protocol, expiry_secs, None));
        record.protocol = protocol;
        record.expiry_secs = expiry_secs;
        record.owner = Some(owner);
        record.released_at_ms = None;
        record.handed_over_by = None;
        let revision = self.sessions.put(key, record.encode()).await?;
        live.claimed(revision);
        Ok(state)
    }

    /// The stored session of a client that is not connected to this gateway; if a
    /// connection on another live gateway holds it, claims it there and waits for the
    /// state to be handed over.
    async fn load(
        &self,
        ctx: &Ctx,
        key: &str,
        owner: Owner,
    ) -> Result<Option<SessionRecord>, String> {
        let Some(kv) = self.sessions.get(key.to_string()).await? else {
            return Ok(None);
        };
        let Some(record) = SessionRecord::decode(&kv.value) else {
            tracing::warn!(
                key,
                "unreadable mqtt session record; starting a new session"
            );
            return Ok(None);
        };
        let Some(holder) = record.owner.filter(|o| o.node != self.node) else {
            return Ok(Some(record));
        };
        if record.released_at_ms.is_some() {
            return Ok(Some(record));
        }
        let alive = ctx
            .store
            .get(keys::gateway(holder.node).as_bytes())
            .await
            .map_err(|e| e.to_string())?
            .is_some();
        if !alive {
            return Ok(Some(record)); // its gateway is gone: resume from the last save
        }
        let (tx, rx) = oneshot::channel();
        lock(&self.handoffs).insert(owner.conn, tx);
        let mut claim = record.clone();
        claim.owner = Some(owner);
        let written = ctx
            .store
            .txn(Txn {
                compares: vec![Compare::mod_revision(key.to_string(), kv.mod_revision)],
                success: vec![TxnOp::put(key.to_string(), claim.encode())],
                failure: vec![],
            })
            .await;
        let handed = match written {
            Ok(r) if r.succeeded => tokio::time::timeout(HANDOFF, rx)
                .await
                .ok()
                .and_then(Result::ok),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(key, error = %e, "claiming an mqtt session failed");
                None
            }
        };
        lock(&self.handoffs).remove(&owner.conn);
        if handed.is_none() {
            tracing::info!(
                key,
                holder = holder.node,
                "mqtt session not handed over in time; resuming from its last save"
            );
        }
        Ok(Some(handed.unwrap_or(record)))
    }

    /// Follows the session records every gateway writes: a connection here whose client
    /// id another gateway claimed is ended, and sessions handed over to connections here
    /// reach them.
    pub async fn watch_sessions(ctx: Arc<Ctx>, cancel: CancellationToken) {
        let apply = |c: &Ctx, kv: &sluice_metadata::KeyValue, put: bool| {
            if put {
                c.mqtt.session_written(kv);
            }
        };
        crate::watch::follow(&ctx, keys::MQTT_SESSIONS_PREFIX, None, &cancel, apply).await;
    }

    /// Follows which gateways have members of which shared subscriptions.
    pub async fn watch_shares(ctx: Arc<Ctx>, cancel: CancellationToken) {
        let reset: fn(&Ctx) = |c| {
            lock(&c.mqtt.share_nodes).clear();
            crate::metrics::MQTT_SHARE_GATEWAYS.set(0);
        };
        let apply = |c: &Ctx, kv: &sluice_metadata::KeyValue, put: bool| {
            c.mqtt.share_written(&kv.key, put);
        };
        crate::watch::follow(&ctx, keys::MQTT_SHARED_PREFIX, Some(reset), &cancel, apply).await;
    }

    /// Follows which gateways deliver MQTT messages (and so get WAL objects forwarded).
    pub async fn watch_peers(ctx: Arc<Ctx>, cancel: CancellationToken) {
        let reset: fn(&Ctx) = |c| c.peers.forget_all();
        let apply = |c: &Ctx, kv: &sluice_metadata::KeyValue, put: bool| {
            c.peers.written(&kv.key, &kv.value, put);
        };
        crate::watch::follow(&ctx, keys::MQTT_PEERS_PREFIX, Some(reset), &cancel, apply).await;
    }

    /// Every [`SESSION_SWEEP`], the gateway with the smallest node id removes expired
    /// sessions and releases those whose gateway is gone.
    pub async fn sweep_sessions(ctx: Arc<Ctx>, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(SESSION_SWEEP) => {}
                _ = cancel.cancelled() => return,
            }
            let gateways = match ctx
                .store
                .range(keys::GATEWAYS_PREFIX.as_bytes(), None)
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "mqtt session sweep: store unavailable");
                    continue;
                }
            };
            let live: std::collections::HashSet<i32> = gateways
                .kvs
                .iter()
                .filter_map(|kv| keys::parse_gateway(&kv.key))
                .collect();
            // Only the smallest registered gateway sweeps (and only while registered).
            if live.iter().min() != Some(&ctx.node_id) {
                continue;
            }
            match super::session::sweep(&ctx.store, &live, now_ms()).await {
                Ok(s) if s.expired + s.orphaned > 0 => {
                    tracing::info!(
                        expired = s.expired,
                        orphaned = s.orphaned,
                        "mqtt sessions swept"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "mqtt session sweep failed"),
            }
        }
    }

    /// Every [`WILL_SWEEP`], the gateway with the smallest node id goes through the wills
    /// a drain deferred: one whose client connected again since is dropped, a due one is
    /// published; each is removed first, so it is published once.
    pub async fn sweep_wills(ctx: Arc<Ctx>, cancel: CancellationToken) {
        use super::wills::{DeferredWill, PREFIX};
        loop {
            tokio::select! {
                _ = tokio::time::sleep(WILL_SWEEP) => {}
                _ = cancel.cancelled() => return,
            }
            if crate::cluster::Cluster::controller(&ctx.cluster.nodes()) != ctx.node_id {
                continue;
            }
            let wills = match ctx.store.range(PREFIX.as_bytes(), None).await {
                Ok(r) => r.kvs,
                Err(e) => {
                    tracing::warn!(error = %e, "mqtt will sweep: store unavailable");
                    continue;
                }
            };
            let now = now_ms();
            for kv in wills {
                let key = String::from_utf8_lossy(&kv.key).into_owned();
                let client_id = key[PREFIX.len()..].to_string();
                let will = DeferredWill::decode(&kv.value);
                if will.as_ref().is_some_and(|w| w.due_at_ms > now) {
                    continue;
                }
                let back = match &will {
                    Some(w) => {
                        ctx.mqtt
                            .reconnected(&client_id, w.conn, kv.mod_revision)
                            .await
                    }
                    None => {
                        tracing::warn!(key, "unreadable deferred will; removed");
                        true
                    }
                };
                let removed = ctx
                    .store
                    .txn(Txn {
                        compares: vec![Compare::mod_revision(key.clone(), kv.mod_revision)],
                        success: vec![TxnOp::delete(key.clone())],
                        failure: vec![],
                    })
                    .await;
                if !matches!(removed, Ok(ref r) if r.succeeded) {
                    continue;
                }
                let Some(will) = will.filter(|_| !back) else {
                    crate::metrics::MQTT_WILLS
                        .with_label_values(&["dropped"])
                        .inc();
                    tracing::debug!(client = %client_id, "client back after the drain; its will dropped");
                    continue;
                };
                let order = Order::default();
                match ctx
                    .mqtt
                    .publish(&ctx, std::slice::from_ref(&will.publish), &client_id, order)
                    .await
                {
                    Ok(_) => crate::metrics::MQTT_WILLS
                        .with_label_values(&["published"])
                        .inc(),
                    Err(e) => {
                        tracing::warn!(client = %client_id, error = %e, "publishing a deferred will failed")
                    }
                }
            }
        }
    }

    fn session_written(&self, kv: &sluice_metadata::KeyValue) {
        let Some(client) = kv.key.strip_prefix(keys::MQTT_SESSIONS_PREFIX.as_bytes()) else {
            return;
        };
        let Some(record) = SessionRecord::decode(&kv.value) else {
            return;
        };
        let Some(owner) = record.owner else {
            return;
        };
        if record.handed_over_by.is_some() {
            if let Some(tx) = lock(&self.handoffs).remove(&owner.conn) {
                let _ = tx.send(record);
            }
            return;
        }
        if owner.node == self.node {
            return; // takeovers on this gateway are handled when the connection opens
        }
        let client = String::from_utf8_lossy(client);
        let Some(live) = lock(&self.by_client).get(client.as_ref()).cloned() else {
            return;
        };
        if live.conn == owner.conn {
            return;
        }
        {
            let mut pending = lock(&live.remote_claim);
            if pending.as_ref().is_none_or(|(_, r)| *r < kv.mod_revision) {
                *pending = Some((owner, kv.mod_revision));
            }
        }
        live.check_remote_claim();
    }

    /// Ends a connection's part in delivery: it stops receiving, its subscriptions go
    /// and, with `positions`, returns where it stands in every followed log topic and
    /// what was queued for it but not taken (every record before a position was handed
    /// to it, or is among those). The client id stays this connection's until
    /// [`Broker::finished`].
    pub async fn detach(
        &self,
        live: &Live,
        filters: &[String],
        outbox: &mut mpsc::Receiver<Box<Delivery>>,
        positions: bool,
    ) -> (Vec<TopicPosition>, Vec<Delivery>) {
        let mut drained = Vec::new();
        // Every followed tail is held still (a round in progress may wait on this
        // connection's queue: keep taking) before the session leaves delivery, and its
        // positions are read before they move again: a record is then either queued for
        // it or at or after its position. A round that ran between the two would read
        // records for others only and move the positions past them.
        let mut tails = if positions {
            self.followed()
        } else {
            Vec::new()
        };
        tails.sort_by(|a, b| a.0.cmp(&b.0));
        let mut held = Vec::with_capacity(tails.len());
        for (name, tail) in &tails {
            let state = loop {
                tokio::select! {
                    s = tail.state.lock() => break s,
                    Some(d) = outbox.recv() => drained.push(*d),
                }
            };
            held.push((name, state));
        }
        lock(&self.live).remove(&live.session);
        self.changed();
        if let Some(task) = lock(&live.catchup_task).take() {
            task.abort();
        }
        for f in filters {
            self.unsubscribe(live.session, f);
        }
        let out: Vec<TopicPosition> = held
            .iter()
            .map(|(name, state)| Self::position(live, name, state))
            .collect();
        drop(held);
        while let Ok(d) = outbox.try_recv() {
            drained.push(*d);
        }
        tracing::debug!(client = %live.client_id, positions = ?out, queued = drained.len(), "mqtt session detached");
        (out, drained)
    }

    /// The log topics followed for delivery, and their tails.
    fn followed(&self) -> Vec<(String, Arc<Tail>)> {
        lock(&self.tails)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Where a live session stands in every followed log topic, for a save.
    pub async fn positions(&self, live: &Live) -> Vec<TopicPosition> {
        let tails = self.followed();
        let mut out = Vec::with_capacity(tails.len());
        for (name, tail) in tails {
            let state = tail.state.lock().await;
            out.push(Self::position(live, &name, &state));
        }
        out
    }

    fn position(live: &Live, name: &str, state: &TailState) -> TopicPosition {
        lock(&live.catchup)
            .get(name)
            .cloned()
            .unwrap_or_else(|| TopicPosition {
                topic: name.to_string(),
                id: state.topic_id,
                next: state.next.iter().map(|(p, o)| (*p, *o)).collect(),
            })
    }

    /// The connection's session is handed over, saved or removed: a connection of the
    /// same client id that arrived meanwhile may go on.
    pub fn finished(&self, live: &Live) {
        let mut by_client = lock(&self.by_client);
        if by_client
            .get(&live.client_id)
            .is_some_and(|l| l.session == live.session)
        {
            by_client.remove(&live.client_id);
        }
        drop(by_client);
        live.finished.cancel();
    }

    /// Whether a client whose connection `conn` ended, and whose will was deferred at
    /// metadata revision `deferred_at`, has connected again since, here or on another
    /// gateway.
    pub async fn reconnected(&self, client_id: &str, conn: Uuid, deferred_at: i64) -> bool {
        if lock(&self.by_client).contains_key(client_id) {
            return true;
        }
        match self.sessions.get(keys::mqtt_session(client_id)).await {
            // Written since the will was (connection `conn` wrote it last before that): a
            // later connection held the session, even if it is between connections again
            // now (moved once more by a rebalance, say).
            Ok(Some(kv)) if kv.mod_revision > deferred_at => true,
            Ok(Some(kv)) => SessionRecord::decode(&kv.value)
                .and_then(|r| r.owner)
                .is_some_and(|o| o.conn != conn),
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(client_id, error = %e, "cannot tell whether a client is back; publishing its will");
                false
            }
        }
    }

    /// The delivery queue of a live session.
    fn outbox(&self, session: u64) -> Option<mpsc::Sender<Box<Delivery>>> {
        lock(&self.live).get(&session).map(|l| l.outbox.clone())
    }

    /// The tail following `log_topic`, started if there is none yet.
    fn tail(&self, ctx: &Arc<Ctx>, log_topic: &str) -> Arc<Tail> {
        let mut tails = lock(&self.tails);
        if let Some(t) = tails.get(log_topic) {
            return t.clone();
        }
        // Partitions that exist now start at their end (live delivery), ones that appear
        // later at their start.
        let (topic_id, next) = ctx
            .log
            .read(|s| {
                s.topic(log_topic).map(|t| {
                    (
                        Some(t.record.id),
                        t.partitions
                            .iter()
                            .enumerate()
                            .map(|(i, p)| (i as u32, p.high_watermark))
                            .collect(),
                    )
                })
            })
            .unwrap_or_default();
        let t = Arc::new(Tail {
            state: tokio::sync::Mutex::new(TailState {
                topic_id,
                next,
                targets: Targets::default(),
            }),
        });
        tails.insert(log_topic.to_string(), t.clone());
        if ctx.config.mqtt_forward {
            ctx.peers.register(ctx);
        }
        tokio::spawn(tail(ctx.clone(), log_topic.to_string(), t.clone()));
        t
    }

    /// Adds a subscription (`$share/<group>/<filter>` for a shared one); true if the
    /// session had none to this filter before.
    pub fn subscribe(&self, ctx: &Arc<Ctx>, id: u64, filter: &str, granted: Granted) -> bool {
        let new = match topic::parse_shared(filter) {
            Ok(Some((group, inner))) => {
                let share: Share = Arc::new((group.to_string(), inner.to_string()));
                let new = lock(&self.shared)
                    .insert(inner, (share.clone(), id), granted)
                    .is_none();
                if new {
                    let first = {
                        let mut local = lock(&self.share_local);
                        let n = local.entry(share.clone()).or_insert(0);
                        *n += 1;
                        *n == 1
                    };
                    if first {
                        self.register_share(&share, true);
                    }
                }
                new
            }
            _ => lock(&self.subscriptions)
                .insert(filter, id, granted)
                .is_none(),
        };
        self.changed();
        for t in self.map.log_topics() {
            self.tail(ctx, t);
        }
        new
    }

    pub fn unsubscribe(&self, id: u64, filter: &str) -> bool {
        let Ok(Some((group, inner))) = topic::parse_shared(filter) else {
            let removed = lock(&self.subscriptions).remove(filter, &id).is_some();
            self.changed();
            return removed;
        };
        let share: Share = Arc::new((group.to_string(), inner.to_string()));
        let removed = lock(&self.shared).remove(inner, &(share.clone(), id));
        self.changed();
        if removed.is_none() {
            return false;
        }
        let last = {
            let mut local = lock(&self.share_local);
            let n = local.entry(share.clone()).or_insert(1);
            *n -= 1;
            let last = *n == 0;
            if last {
                local.remove(&share);
            }
            last
        };
        if last {
            self.register_share(&share, false);
        }
        true
    }

    /// Tells the other gateways that this one has (or no longer has) members of `share`.
    fn register_share(&self, share: &Share, member: bool) {
        let key = keys::mqtt_shared(&share.0, self.node, &share.1);
        let sessions = self.sessions.clone();
        tokio::spawn(async move {
            let done = if member {
                sessions.put(key, Bytes::new()).await
            } else {
                sessions.delete(key).await
            };
            if let Err(e) = done {
                tracing::warn!(error = %e, "registering a shared mqtt subscription failed");
            }
        });
    }

    /// Applies a change to the shared subscription registry (`None` value: deleted).
    fn share_written(&self, key: &[u8], present: bool) {
        let Some(rest) = key.strip_prefix(keys::MQTT_SHARED_PREFIX.as_bytes()) else {
            return;
        };
        let Some((group, node, filter)) = keys::parse_mqtt_shared(&String::from_utf8_lossy(rest))
        else {
            return;
        };
        let share: Share = Arc::new((group, filter));
        let mut nodes = lock(&self.share_nodes);
        if present {
            nodes.entry(share).or_default().insert(node);
        } else if let Some(set) = nodes.get_mut(&share) {
            set.remove(&node);
            if set.is_empty() {
                nodes.remove(&share);
            }
        }
        crate::metrics::MQTT_SHARE_GATEWAYS.set(nodes.values().map(|s| s.len() as i64).sum());
    }

    /// Resumes a stored session's subscriptions: what the log received since its saved
    /// positions is delivered first, then it joins live delivery.
    pub fn resume(
        &self,
        ctx: &Arc<Ctx>,
        live: &Arc<Live>,
        subscriptions: &[(String, Granted)],
        positions: Vec<TopicPosition>,
    ) {
        if subscriptions.is_empty() {
            return;
        }
        let mut saved: HashMap<String, TopicPosition> = positions
            .into_iter()
            .map(|p| (p.topic.clone(), p))
            .collect();
        let topics: Vec<String> = self.map.log_topics().map(str::to_string).collect();
        {
            let mut catchup = lock(&live.catchup);
            for t in &topics {
                let p = saved.remove(t).unwrap_or_else(|| TopicPosition {
                    topic: t.clone(),
                    id: None,
                    next: Default::default(),
                });
                catchup.insert(t.clone(), p);
            }
        }
        self.changed();
        for (filter, granted) in subscriptions {
            self.subscribe(ctx, live.session, filter, *granted);
        }
        let tails: Vec<(String, Arc<Tail>)> = topics
            .iter()
            .map(|t| (t.clone(), self.tail(ctx, t)))
            .collect();
        let task = tokio::spawn(catch_up(ctx.clone(), live.clone(), tails));
        *lock(&live.catchup_task) = Some(task.abort_handle());
    }

    /// The message a log record holds, as delivered to subscribers; `None` if it is gone.
    pub async fn read_at(&self, ctx: &Ctx, at: &LogRef) -> Option<Publish> {
        let mut records = read_from(ctx, &at.id, at.partition, at.offset, &at.topic)
            .await
            .ok()?;
        records
            .find_map(|r| r.ok().filter(|(m, _)| m.at.offset == at.offset))
            .and_then(|(_, p)| p)
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
            if outbox
                .send(Box::new(Delivery {
                    publish: p,
                    at: None,
                }))
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// Appends a message `client_id` published to the log; resolves once it is durable and
    /// committed.
    /// With the retain flag set, the message also becomes (or, with an empty payload,
    /// stops being) the topic's retained message once it is in the log.
    ///
    /// `ps` (not empty) share one topic and are appended as one record batch, in order.
    /// `order` keeps one connection's groups in the log in the order they came.
    pub async fn publish(
        &self,
        ctx: &Ctx,
        ps: &[Publish],
        client_id: &str,
        order: Order,
    ) -> Result<i64, PublishError> {
        let Some(first) = ps.first() else {
            return Err(PublishError::Encode("no message".into()));
        };
        // After the previous group, so that one creating the log topic goes first too.
        if let Some(previous) = order.after {
            let _ = previous.await; // handed over, or failed before it could be
        }
        let topic = first.topic.as_str();
        let log_topic = self
            .map
            .log_topic(topic)
            .ok_or_else(|| PublishError::Unmapped(topic.to_string()))?;
        let find = || {
            ctx.log.read(|s| {
                s.topic(log_topic).map(|t| {
                    (
                        t.record.id,
                        t.partitions.len() as u32,
                        topics::codec(&t.record),
                    )
                })
            })
        };
        let (topic_id, partitions, codec) = match find() {
            Some(f) => f,
            None if ctx.config.auto_create_topics => {
                match topics::create(ctx, log_topic, -1, -1, BTreeMap::new(), false).await {
                    // Ours is applied by now; one created by another request meanwhile
                    // may not be yet.
                    Ok(_) | Err(topics::TopicError::Exists(_)) => {
                        let mut applied = ctx.log.subscribe();
                        let appeared = tokio::time::timeout(TOPIC_WAIT, async {
                            loop {
                                if let Some(f) = find() {
                                    return Some(f);
                                }
                                if applied.changed().await.is_err() {
                                    return None;
                                }
                            }
                        })
                        .await;
                        appeared.ok().flatten().ok_or_else(|| {
                            PublishError::Topic(log_topic.into(), "not seen after creation".into())
                        })?
                    }
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
        let now = now_ms();
        let origin = Origin::new(topic, client_id);
        let mut retains = false;
        let records: Vec<Record> = ps
            .iter()
            .enumerate()
            .map(|(i, p)| {
                retains |= p.retain;
                record_of(p, &origin, i as i32)
            })
            .collect();
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
        encode_batch(&header, &records, &mut out)
            .map_err(|e| PublishError::Encode(e.to_string()))?;
        let mut batch = out.freeze();
        // The log topic's compression.type, as for Kafka producers.
        if let Some(codec) = codec
            && let Some(b) = sluice_protocols::kafka::recompress::recompress(&batch, codec)
                .map_err(|e| PublishError::Encode(e.to_string()))?
        {
            crate::metrics::RECOMPRESSED_BATCHES.inc();
            batch = b;
        }
        // The record key is the topic, shared by the whole group.
        let partition = partition_for_key(topic.as_bytes(), partitions);
        let append = Append {
            topic_id,
            partition,
            meta: BatchMeta {
                size: batch.len() as u32,
                records: records.len() as u32,
                max_timestamp: now,
                producer_id: -1,
                producer_epoch: -1,
                base_sequence: -1,
            },
            batch,
        };
        let pending = ctx.batcher.submit(append).await;
        if let Some(done) = order.submitted {
            let _ = done.send(());
        }
        let offset = pending.await?;
        if retains {
            for p in ps.iter().filter(|p| p.retain) {
                self.retain(ctx, p, topic).await?;
            }
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

    /// Who receives a message published on `topic` by `client`: every session with a
    /// matching subscription, once, at the highest QoS its matching subscriptions grant,
    /// with the identifiers of all of them. With `only`, that session alone (catching
    /// up); otherwise the sessions live in log topic `log_topic`. Also whether a shared
    /// subscription matches (its member is picked per message).
    fn targets(
        &self,
        topic: &str,
        client: Option<&[u8]>,
        log_topic: &str,
        only: Option<u64>,
    ) -> (Vec<Target>, bool) {
        let live = lock(&self.live);
        let subs = lock(&self.subscriptions);
        let mut matched: Vec<(u64, Granted)> = Vec::new();
        for (id, g) in subs.matching(topic) {
            if only.is_some_and(|o| o != *id) {
                continue;
            }
            let Some(l) = live.get(id) else {
                continue;
            };
            if g.no_local && client == Some(l.client_id.as_bytes()) {
                continue;
            }
            matched.push((*id, *g));
        }
        // One entry per session: the highest QoS granted, every identifier.
        matched.sort_by_key(|(id, _)| *id);
        let mut by_session: Vec<(u64, Granted, Vec<u32>)> = Vec::new();
        for (id, g) in matched {
            match by_session.last_mut() {
                Some((last, granted, ids)) if *last == id => {
                    granted.qos = granted.qos.max(g.qos);
                    granted.retain_as_published |= g.retain_as_published;
                    ids.extend(g.subscription_id);
                }
                _ => by_session.push((id, g, g.subscription_id.into_iter().collect())),
            }
        }
        let targets = by_session
            .into_iter()
            .filter_map(|(id, g, ids)| {
                let l = live.get(&id)?;
                if only.is_none() && lock(&l.catchup).contains_key(log_topic) {
                    return None; // still catching up there: it reads this itself
                }
                Some((l.outbox.clone(), g, ids))
            })
            .collect();
        let shared = only.is_none() && !lock(&self.shared).matching(topic).is_empty();
        (targets, shared)
    }

    /// Hands a record from the log to the sessions [`Broker::targets`] names, and to the
    /// chosen member of each matching shared subscription. `cache` holds the targets of
    /// the caller's previous message (for the same `only`), reused while the topic, the
    /// publisher and the broker's generation stay the same.
    async fn deliver(&self, mut p: Publish, m: &Message, only: Option<u64>, cache: &mut Targets) {
        if let Some(expiry) = p.properties.message_expiry_interval {
            let age = (now_ms() - m.timestamp).max(0) / 1000;
            if age >= i64::from(expiry) {
                return; // expired while waiting in the log
            }
            p.properties.message_expiry_interval = Some(expiry - age as u32);
        }
        let generation = self.generation.load(Ordering::Acquire);
        if cache.generation != Some(generation)
            || cache.topic != p.topic
            || cache.client != m.client
        {
            let (list, shared) = self.targets(&p.topic, m.client.as_deref(), &m.at.topic, only);
            *cache = Targets {
                generation: Some(generation),
                topic: p.topic.clone(),
                client: m.client.clone(),
                list,
                shared,
            };
        }
        let targets = &cache.list;
        let picked = if cache.shared {
            self.shared_targets(&p.topic, &m.at)
        } else {
            Vec::new()
        };
        let count = targets.len() + picked.len();
        crate::metrics::MQTT_DELIVERIES.inc_by(count as u64);
        // The last target takes the message itself; the others a copy.
        for i in 0..count {
            let target = match targets.get(i) {
                Some(t) => t,
                None => &picked[i - targets.len()],
            };
            if i + 1 == count {
                hand_over(p, target, m, only).await;
                break;
            }
            hand_over(p.clone(), target, m, only).await;
        }
    }

    /// Notes that who receives what may have changed (subscriptions, live sessions,
    /// catch-up), so that targets kept by the live tail are worked out again.
    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }
}

/// A session's outbox, what its subscriptions grant, and their identifiers.
type Target = (mpsc::Sender<Box<Delivery>>, Granted, Vec<u32>);

/// The targets of the last message delivered by one caller (the live tail of a log
/// topic, or one session's catch-up), and what they were worked out for.
#[derive(Debug, Default)]
struct Targets {
    /// `Broker::generation` when worked out; `None`: never.
    generation: Option<u64>,
    topic: String,
    client: Option<Bytes>,
    list: Vec<Target>,
    shared: bool,
}

/// Puts one delivery in a session's outbox, as its subscription grants it. A full outbox
/// drops a live QoS 0 message (QoS 0 allows it; the message stays in the log); anything
/// else waits for room.
async fn hand_over(
    mut publish: Publish,
    (outbox, g, ids): &Target,
    m: &Message,
    only: Option<u64>,
) {
    publish.qos = publish.qos.min(g.qos);
    publish.properties.subscription_identifiers.clone_from(ids);
    publish.retain = m.retain && g.retain_as_published;
    let d = Box::new(Delivery {
        publish,
        at: Some(m.at.clone()),
    });
    if d.publish.qos == QoS::AtMostOnce && only.is_none() {
        if outbox.try_send(d).is_err() {
            tracing::debug!("mqtt outbox full; QoS 0 message dropped");
        }
    } else {
        let _ = outbox.send(d).await;
    }
}

impl Broker {
    /// For each shared subscription matching `topic`, the one member this message goes to
    /// if that member is on this gateway. Every gateway makes the same choice: the gateway
    /// with the highest rendezvous score among those with members, then, there, a member
    /// picked by the message's place in the log.
    fn shared_targets(
        &self,
        topic: &str,
        at: &LogRef,
    ) -> Vec<(mpsc::Sender<Box<Delivery>>, Granted, Vec<u32>)> {
        let mut by_share: HashMap<Share, Vec<(u64, Granted)>> = HashMap::new();
        for ((share, id), g) in lock(&self.shared).matching(topic) {
            by_share.entry(share.clone()).or_default().push((*id, *g));
        }
        if by_share.is_empty() {
            return Vec::new();
        }
        let place = format!("{}/{}/{}", at.id.simple(), at.partition, at.offset);
        let nodes = lock(&self.share_nodes);
        let live = lock(&self.live);
        let mut out = Vec::new();
        for (share, mut members) in by_share {
            let score = |n: i32| murmur2(format!("{n}/{}/{}/{place}", share.0, share.1).as_bytes());
            let chosen = nodes
                .get(&share)
                .into_iter()
                .flatten()
                .copied()
                .chain([self.node])
                .max_by_key(|n| (score(*n), *n));
            if chosen != Some(self.node) {
                continue;
            }
            members.retain(|(id, _)| live.contains_key(id));
            members.sort_by_key(|(id, _)| *id);
            if members.is_empty() {
                continue;
            }
            let (id, g) = members[murmur2(place.as_bytes()) as usize % members.len()];
            if let Some(l) = live.get(&id) {
                out.push((l.outbox.clone(), g, g.subscription_id.into_iter().collect()));
            }
        }
        out
    }
}

/// Follows one log topic from the moment it is first needed, delivering every new record.
async fn tail(ctx: Arc<Ctx>, log_topic: String, t: Arc<Tail>) {
    let shared_name: Arc<str> = log_topic.as_str().into();
    let mut applied = ctx.log.subscribe();
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
        let mut state = t.state.lock().await;
        let state = &mut *state;
        if state.topic_id.is_some_and(|t| t != id) {
            state.next.clear(); // deleted and created again
        }
        state.topic_id = Some(id);
        for (p, (start, hwm)) in partitions.into_iter().enumerate() {
            let p = p as u32;
            let from = state.next.entry(p).or_insert(start);
            while *from < hwm {
                let read = read_from(&ctx, &id, p, *from, &shared_name).await;
                let failed = |e: &str| {
                    tracing::warn!(topic = %log_topic, partition = p, error = %e, "mqtt delivery read failed");
                };
                let records = match read {
                    Ok(r) => r,
                    Err(e) => {
                        failed(&e);
                        break;
                    }
                };
                let before = *from;
                for record in records {
                    let (m, publish) = match record {
                        Ok(r) => r,
                        Err(e) => {
                            failed(&e);
                            break;
                        }
                    };
                    let offset = m.at.offset;
                    if offset >= *from {
                        if let Some(publish) = publish {
                            ctx.mqtt
                                .deliver(publish, &m, None, &mut state.targets)
                                .await;
                        }
                        *from = offset + 1;
                    }
                }
                if *from == before {
                    break; // nothing (more) readable
                }
            }
        }
    }
}

/// Delivers to a resumed session what each log topic received since its saved position,
/// then, holding the tail still, hands the session to live delivery there.
async fn catch_up(ctx: Arc<Ctx>, live: Arc<Live>, tails: Vec<(String, Arc<Tail>)>) {
    for (name, tail) in tails {
        let shared_name: Arc<str> = name.as_str().into();
        let mut targets = Targets::default();
        loop {
            let pending: Vec<(Uuid, u32, i64, i64)> = {
                let state = tail.state.lock().await;
                let mut catchup = lock(&live.catchup);
                let Some(pos) = catchup.get_mut(&name) else {
                    break;
                };
                if pos.id != state.topic_id {
                    pos.id = state.topic_id;
                    pos.next.clear();
                }
                let pending: Vec<(Uuid, u32, i64, i64)> = state
                    .topic_id
                    .map(|id| {
                        state
                            .next
                            .iter()
                            .filter_map(|(p, to)| {
                                let start = ctx
                                    .log
                                    .read(|s| s.partition(&id, *p).map(|l| l.log_start_offset))
                                    .unwrap_or(*to);
                                let from = pos.next.get(p).copied().unwrap_or(start).max(start);
                                (from < *to).then_some((id, *p, from, *to))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                tracing::debug!(client = %live.client_id, topic = %name, saved = ?pos.next, tail = ?state.next, "mqtt catch-up round");
                if pending.is_empty() {
                    catchup.remove(&name); // live from here, atomically with the tail
                    ctx.mqtt.changed();
                    break;
                }
                pending
            };
            for (id, p, mut from, to) in pending {
                while from < to {
                    let failed = |e: &str| {
                        tracing::warn!(topic = %name, partition = p, error = %e, "mqtt catch-up read failed");
                    };
                    let records = match read_from(&ctx, &id, p, from, &shared_name).await {
                        Ok(r) => r,
                        Err(e) => return failed(&e),
                    };
                    let before = from;
                    for record in records {
                        let (m, publish) = match record {
                            Ok(r) => r,
                            Err(e) => return failed(&e),
                        };
                        let offset = m.at.offset;
                        if offset < from || offset >= to {
                            continue;
                        }
                        if let Some(publish) = publish {
                            ctx.mqtt
                                .deliver(publish, &m, Some(live.session), &mut targets)
                                .await;
                        }
                        from = offset + 1;
                        if let Some(pos) = lock(&live.catchup).get_mut(&name) {
                            pos.next.insert(p, from);
                        }
                    }
                    if from == before {
                        break; // nothing (more) readable
                    }
                }
                if from < to {
                    // Nothing readable below `to` (deleted meanwhile): skip to it.
                    if let Some(pos) = lock(&live.catchup).get_mut(&name) {
                        pos.next.insert(p, to);
                    }
                }
            }
        }
    }
}

/// Where a record came from in the log, and what delivery needs to know of it.
#[derive(Debug, Clone)]
struct Message {
    at: LogRef,
    timestamp: i64,
    retain: bool,
    /// The MQTT client that published it, if one did.
    client: Option<Bytes>,
}

/// The records of a read from the log, decoded one batch at a time as they are taken (a
/// read holds up to `TAIL_READ` bytes; the messages are not all built up front). The
/// message is `None` for records whose key is not an MQTT topic name.
struct Messages {
    bytes: Bytes,
    /// Where the next batch starts in `bytes`.
    at: usize,
    batch: Option<(BatchHeader, std::vec::IntoIter<Record>)>,
    topic: Arc<str>,
    id: Uuid,
    partition: u32,
}

impl Iterator for Messages {
    type Item = Result<(Message, Option<Publish>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((h, records)) = &mut self.batch {
                if let Some(r) = records.next() {
                    let at = LogRef {
                        topic: self.topic.clone(),
                        id: self.id,
                        partition: self.partition,
                        offset: h.base_offset + i64::from(r.offset_delta),
                    };
                    return Some(Ok(message(at, h, r)));
                }
                self.batch = None;
            }
            if self.at >= self.bytes.len() {
                return None;
            }
            let decoded = batch::read_header(&self.bytes, self.at)
                .map_err(|e| e.to_string())
                .and_then(|info| {
                    let raw = self.bytes.slice(self.at..self.at + info.size);
                    self.at += info.size;
                    decode_batch(&raw).map_err(|e| e.to_string())
                });
            match decoded {
                Ok((h, records)) => self.batch = Some((h, records.into_iter())),
                Err(e) => {
                    self.at = self.bytes.len();
                    return Some(Err(e));
                }
            }
        }
    }
}

/// What delivery needs of record `r` of the batch `h`, which is at `at` in the log.
fn message(at: LogRef, h: &BatchHeader, r: Record) -> (Message, Option<Publish>) {
    let timestamp = if h.attributes & 0x08 != 0 {
        h.max_timestamp // log-append time
    } else {
        h.base_timestamp + r.timestamp_delta
    };
    let header = |name: &[u8]| {
        r.headers
            .iter()
            .find(|h| h.key.as_ref() == name)
            .and_then(|h| h.value.clone())
    };
    let m = Message {
        at,
        timestamp,
        retain: header(b"mqtt.retain").as_deref() == Some(b"1"),
        client: header(b"mqtt.client_id"),
    };
    let publish = publish_of(r.key.as_deref(), r.value.as_ref(), &r.headers);
    (m, publish)
}

/// The records of `log_topic` from `offset` on, as far as one read goes.
async fn read_from(
    ctx: &Ctx,
    topic_id: &Uuid,
    partition: u32,
    offset: i64,
    log_topic: &Arc<str>,
) -> Result<Messages, String> {
    let source = ctx.log.read(|s| {
        s.partition(topic_id, partition)
            .map(|log| Source::for_offset(log, offset.max(log.log_start_offset), TAIL_READ))
    });
    let bytes = match source {
        Some(source) => read_records(ctx, &source, offset, TAIL_READ, true)
            .await
            .map_err(|e| e.to_string())?,
        None => Bytes::new(),
    };
    Ok(Messages {
        bytes,
        at: 0,
        batch: None,
        topic: log_topic.clone(),
        id: *topic_id,
        partition,
    })
}
