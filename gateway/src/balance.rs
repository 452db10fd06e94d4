//! Connections per gateway, and moving some to other gateways when this one has more than
//! its share.
//!
//! Every gateway counts its open Kafka and MQTT connections and publishes the counts under
//! `load/<node id>` (under its lease, so the record goes with it) each round in which they
//! changed, and once a minute; every gateway follows that prefix. (Publishing only larger
//! changes was tried: gateways then judged their share from counts a tenth out of date,
//! and moved too many connections, back and forth.) After a scale-out the new
//! gateways start with none: long-lived connections (MQTT devices above all) would stay
//! where they are for ever. So every round (`--rebalance-interval`, 5 s) a gateway whose connections of a protocol
//! exceed the fair share (the total over the live gateways, divided evenly) by more than a
//! tolerance asks a few of them to go, at most a twentieth of them per round, so that
//! clients come back through the load balancer gradually:
//!
//! - an MQTT connection ends as a drain ends it (DISCONNECT 0x9C, Use another server, to a
//!   5.0 client, with `--mqtt-server-reference` if set; the will held back as in a drain);
//! - a Kafka connection is closed between requests, with nothing in flight: the client
//!   reconnects (through its bootstrap address, or to the same broker) and refreshes its
//!   metadata, where partition leaders are already spread over the new gateways.
//!
//! `--rebalance-connections false` turns the shedding off; counts are published either way.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sluice_metadata::keys;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::server::Ctx;

/// Connections that left this gateway this long ago (or two rounds, if longer) are taken
/// to be on their way still, in no other gateway's published count.
const IN_TRANSIT: Duration = Duration::from_secs(5);
/// Counts are published in every round they changed, and at least this often.
const REPUBLISH: Duration = Duration::from_secs(60);
/// At most 1/SHED_FRACTION of a gateway's connections are asked to go per round.
const SHED_FRACTION: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Kafka = 0,
    Mqtt = 1,
}

impl Protocol {
    const ALL: [Protocol; 2] = [Protocol::Kafka, Protocol::Mqtt];

    fn name(self) -> &'static str {
        match self {
            Protocol::Kafka => "kafka",
            Protocol::Mqtt => "mqtt",
        }
    }
}

/// What a gateway publishes under `load/<node id>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Load {
    pub version: u32,
    pub kafka: usize,
    pub mqtt: usize,
}

const LOAD_VERSION: u32 = 1;

impl Load {
    fn get(&self, p: Protocol) -> usize {
        match p {
            Protocol::Kafka => self.kafka,
            Protocol::Mqtt => self.mqtt,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("invariant: a load record serializes")
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice::<Load>(bytes)
            .ok()
            .filter(|l| l.version == LOAD_VERSION)
    }
}

/// This gateway's open connections, the others' as published, and the connections asked
/// to go.
#[derive(Default)]
pub struct Balance {
    open: [AtomicUsize; 2],
    /// Connections of each protocol still to be asked to go this round.
    shed: [AtomicUsize; 2],
    /// Connections that went since the last round (on their way, in no count yet).
    taken: [AtomicUsize; 2],
    /// Woken when connections of a protocol are asked to go.
    asked: [Notify; 2],
    others: Mutex<HashMap<i32, Load>>,
}

/// An open connection, counted until dropped.
pub struct Open {
    balance: Arc<Balance>,
    protocol: Protocol,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.balance.open[self.protocol as usize].fetch_sub(1, Ordering::Relaxed);
        gauge(self.protocol).dec();
    }
}

fn gauge(p: Protocol) -> &'static prometheus::IntGauge {
    match p {
        Protocol::Kafka => &crate::metrics::KAFKA_CONNECTIONS,
        Protocol::Mqtt => &crate::metrics::MQTT_CONNECTIONS,
    }
}

impl Balance {
    /// Counts a connection of `protocol` until the returned guard is dropped.
    pub fn open(self: &Arc<Self>, protocol: Protocol) -> Open {
        self.open[protocol as usize].fetch_add(1, Ordering::Relaxed);
        gauge(protocol).inc();
        Open {
            balance: self.clone(),
            protocol,
        }
    }

    pub fn load(&self) -> Load {
        Load {
            version: LOAD_VERSION,
            kafka: self.open[0].load(Ordering::Relaxed),
            mqtt: self.open[1].load(Ordering::Relaxed),
        }
    }

    /// Resolves when connections of `protocol` are asked to go (then check
    /// [`Self::take`]).
    pub async fn asked(&self, protocol: Protocol) {
        self.asked[protocol as usize].notified().await
    }

    /// Whether this connection is one of those asked to go (and so should close).
    pub fn take(&self, protocol: Protocol) -> bool {
        let taken = self.shed[protocol as usize]
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if taken {
            self.taken[protocol as usize].fetch_add(1, Ordering::Relaxed);
            crate::metrics::CONNECTIONS_SHED
                .with_label_values(&[protocol.name()])
                .inc();
        }
        taken
    }

    /// Asks `count` connections of `protocol` to go (replacing what the last round
    /// asked); returns how many went since the last round.
    fn ask(&self, protocol: Protocol, count: usize) -> usize {
        self.shed[protocol as usize].store(count, Ordering::Relaxed);
        if count > 0 {
            self.asked[protocol as usize].notify_waiters();
        }
        self.taken[protocol as usize].swap(0, Ordering::Relaxed)
    }

    fn written(&self, key: &[u8], value: &[u8], present: bool) {
        let Some(id) = keys::parse_load(key) else {
            return;
        };
        let mut others = self.others.lock().unwrap_or_else(|e| e.into_inner());
        match Load::decode(value).filter(|_| present) {
            Some(l) => others.insert(id, l),
            None => others.remove(&id),
        };
    }

    /// Follows `load/` and publishes this gateway's counts; sheds connections above the
    /// fair share if `rebalance`.
    pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) {
        let rebalance = ctx.config.rebalance_connections;
        let follow = {
            let ctx = ctx.clone();
            let cancel = cancel.clone();
            async move {
                let reset: fn(&Ctx) = |c| {
                    c.balance
                        .others
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clear()
                };
                let apply = |c: &Ctx, kv: &sluice_metadata::KeyValue, put: bool| {
                    c.balance.written(&kv.key, &kv.value, put)
                };
                crate::watch::follow(&ctx, keys::LOAD_PREFIX, Some(reset), &cancel, apply).await
            }
        };
        let rounds = async {
            let mut published: Option<(Load, Instant)> = None;
            let mut before = ctx.balance.load();
            // What left this gateway lately, per protocol: the others may not have
            // published them yet (a busy gateway's counts are seconds late).
            let mut recent: [std::collections::VecDeque<(Instant, usize)>; 2] = Default::default();
            let window = (ctx.config.rebalance_interval * 2).max(IN_TRANSIT);
            let mut tick = tokio::time::interval(ctx.config.rebalance_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = cancel.cancelled() => return,
                }
                let mine = ctx.balance.load();
                if published.is_none_or(|(last, at)| last != mine || at.elapsed() >= REPUBLISH) {
                    match ctx
                        .groups
                        .put_leased(keys::load(ctx.node_id), mine.encode())
                        .await
                    {
                        Ok(()) => published = Some((mine, Instant::now())),
                        Err(e) => {
                            tracing::debug!(error = %e, "publishing connection counts failed")
                        }
                    }
                }
                if !rebalance {
                    continue;
                }
                let nodes = ctx.cluster.nodes();
                let others = ctx
                    .balance
                    .others
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                let last = std::mem::replace(&mut before, mine);
                let grew = |p: Protocol| mine.get(p) > last.get(p);
                for p in Protocol::ALL {
                    // A gateway taking connections in is not one to send them away: the
                    // counts it judges by may not show the others' losses yet.
                    let recent = &mut recent[p as usize];
                    while recent.front().is_some_and(|(at, _)| at.elapsed() > window) {
                        recent.pop_front();
                    }
                    let in_transit: usize = recent.iter().map(|(_, n)| n).sum();
                    if grew(p) {
                        recent.push_back((Instant::now(), ctx.balance.ask(p, 0)));
                        continue;
                    }
                    let counts = nodes.iter().map(|n| {
                        if n.id == ctx.node_id {
                            mine.get(p)
                        } else {
                            others.get(&n.id).map_or(0, |l| l.get(p))
                        }
                    });
                    let shed = to_shed(mine.get(p), counts, in_transit);
                    if shed > 0 {
                        tracing::info!(
                            protocol = p.name(),
                            open = mine.get(p),
                            shed,
                            gateways = nodes.len(),
                            "above its share of connections: asking some to reconnect elsewhere"
                        );
                    }
                    recent.push_back((Instant::now(), ctx.balance.ask(p, shed)));
                }
            }
        };
        tokio::join!(follow, rounds);
    }
}

/// How many of its `mine` connections a gateway asks to go this round, given every live
/// gateway's count (its own included): once above the fair share by more than a tenth
/// (and two), half the excess, a twentieth of its connections at most: the counts of the
/// others are late, and connections on their way (`in_transit`: those that left this
/// gateway lately) are in no count.
fn to_shed(mine: usize, counts: impl Iterator<Item = usize>, in_transit: usize) -> usize {
    let (mut total, mut gateways) = (in_transit, 0usize);
    for c in counts {
        total += c;
        gateways += 1;
    }
    if gateways <= 1 {
        return 0;
    }
    let fair = total.div_ceil(gateways);
    let tolerance = (fair / 10).max(2);
    if mine <= fair + tolerance {
        return 0;
    }
    (mine - fair).div_ceil(2).min((mine / SHED_FRACTION).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_records_golden() {
        let l = Load {
            version: 1,
            kafka: 12,
            mqtt: 3400,
        };
        let golden = br#"{"version":1,"kafka":12,"mqtt":3400}"#;
        assert_eq!(l.encode(), golden);
        assert_eq!(Load::decode(golden), Some(l));
        assert_eq!(Load::decode(br#"{"version":2,"kafka":1,"mqtt":1}"#), None);
        assert_eq!(Load::decode(b"garbage"), None);
    }

    #[test]
    fn only_a_gateway_above_its_share_sheds_and_gradually() {
        // One gateway, or balanced ones: nothing moves.
        assert_eq!(to_shed(1000, [1000].into_iter(), 0), 0);
        assert_eq!(to_shed(260, [260, 240, 250, 250].into_iter(), 0), 0);
        // After 1 -> 4: a twentieth per round, toward 250.
        assert_eq!(to_shed(1000, [1000, 0, 0, 0].into_iter(), 0), 50);
        // Those on their way count: they belong to the total.
        assert_eq!(to_shed(300, [300, 0, 0, 0].into_iter(), 700), 15);
        assert_eq!(to_shed(270, [270, 250, 250, 200].into_iter(), 30), 0);
        let mut mine = 1000;
        let mut rounds = 0;
        loop {
            let each = (1000 - mine) / 3;
            let shed = to_shed(mine, [mine, each, each, each].into_iter(), 0);
            if shed == 0 {
                break;
            }
            mine -= shed;
            rounds += 1;
            assert!(rounds < 100);
        }
        assert!((250..=278).contains(&mine), "settled at {mine}");
        assert!(rounds <= 40, "{rounds} rounds");
        // Few connections: at least one goes, never below the share.
        assert_eq!(to_shed(6, [6, 0].into_iter(), 0), 1);
        assert_eq!(to_shed(5, [5, 0].into_iter(), 0), 0);
    }

    #[test]
    fn asked_connections_are_taken_once() {
        let b = Arc::new(Balance::default());
        let _a = b.open(Protocol::Mqtt);
        let _c = b.open(Protocol::Mqtt);
        assert_eq!(b.load().mqtt, 2);
        assert_eq!(b.ask(Protocol::Mqtt, 1), 0);
        assert!(!b.take(Protocol::Kafka));
        assert!(b.take(Protocol::Mqtt));
        assert!(!b.take(Protocol::Mqtt));
        assert_eq!(b.ask(Protocol::Mqtt, 0), 1, "one went since the last round");
        drop(_a);
        assert_eq!(b.load().mqtt, 1);
    }
}
