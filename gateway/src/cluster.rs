//! The cluster as Kafka clients see it: the live gateways, and which one leads each
//! partition.
//!
//! Every gateway registers `gateways/<node id>` under its lease (see [`crate::groups`]):
//! `host:port` when it has one Kafka listener (the format of every release before multiple
//! listeners, which older gateways read), else a versioned JSON record of every listener's
//! advertised address by name. It follows that prefix, so all gateways list the same brokers with the
//! same node ids, and a client that moves from one gateway to another (to its group's
//! coordinator, to a partition's leader) keeps every gateway it knows while that gateway
//! lives. librdkafka forgets brokers that a Metadata response leaves out; when each
//! gateway named only itself, a group member lost the gateway it came from as soon as it
//! asked the coordinator's gateway for metadata.
//!
//! Leadership is nominal: any gateway serves any partition. A partition's leader is chosen
//! by rendezvous hashing over the live gateways, a rule every gateway computes the same way
//! from the same list, which moves only the partitions of a gateway that comes or goes.
//! Candidates are a slice so that a later rule (a client's zone) can narrow them first.

use std::sync::{Arc, RwLock};

use sluice_metadata::keys;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::groups::{Endpoint, Node};
use crate::server::Ctx;

/// The live gateways, sorted by node id; this gateway is always among them.
#[derive(Debug)]
pub struct Cluster {
    me: Node,
    nodes: RwLock<Arc<Vec<Node>>>,
}

impl Cluster {
    pub fn new(me: Node) -> Self {
        Self {
            nodes: RwLock::new(Arc::new(vec![me.clone()])),
            me,
        }
    }

    /// This gateway.
    pub fn me(&self) -> &Node {
        &self.me
    }

    /// The live gateways, sorted by node id.
    pub fn nodes(&self) -> Arc<Vec<Node>> {
        self.nodes.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The live gateways that have listener `name`, each with that listener's address as
    /// its `host:port`: what a client that came through `name` is told (Kafka leaves
    /// brokers without the client's listener out).
    pub fn nodes_on(&self, name: &str) -> Vec<Node> {
        self.nodes()
            .iter()
            .filter_map(|n| {
                let (host, port) = n.endpoint(name)?;
                Some(Node {
                    host: host.to_string(),
                    port,
                    ..n.clone()
                })
            })
            .collect()
    }

    /// The gateway with the smallest node id: Kafka's "controller", which clients only
    /// display.
    pub fn controller(nodes: &[Node]) -> i32 {
        nodes.first().map_or(-1, |n| n.id)
    }

    fn update(&self, f: impl FnOnce(&mut Vec<Node>)) {
        let mut guard = self.nodes.write().unwrap_or_else(|e| e.into_inner());
        let mut nodes = guard.as_ref().clone();
        f(&mut nodes);
        // This gateway is live while it serves, whatever the store says (its registration
        // may be in flight, or being renewed after a lost lease).
        nodes.retain(|n| n.id != self.me.id);
        nodes.push(self.me.clone());
        nodes.sort_by_key(|n| n.id);
        *guard = Arc::new(nodes);
    }

    fn reset(&self) {
        self.update(Vec::clear);
    }

    /// Applies a change under `gateways/`.
    fn written(&self, key: &[u8], value: &[u8], present: bool) {
        let Some(id) = keys::parse_gateway(key) else {
            return;
        };
        let node = if present {
            match parse_registration(id, value) {
                Some(node) => Some(node),
                None => {
                    tracing::warn!(id, value = %String::from_utf8_lossy(value), "unreadable gateway registration");
                    return;
                }
            }
        } else {
            None
        };
        self.update(|nodes| {
            nodes.retain(|n| n.id != id);
            nodes.extend(node);
        });
        tracing::debug!(id, present, "gateway membership changed");
    }

    /// Follows `gateways/` until `cancel`.
    pub async fn watch(ctx: Arc<Ctx>, cancel: CancellationToken) {
        let reset: fn(&Ctx) = |c| c.cluster.reset();
        let apply = |c: &Ctx, kv: &sluice_metadata::KeyValue, put: bool| {
            c.cluster.written(&kv.key, &kv.value, put);
        };
        crate::watch::follow(&ctx, keys::GATEWAYS_PREFIX, Some(reset), &cancel, apply).await;
    }
}

/// The registration record with more than one listener.
#[derive(serde::Serialize, serde::Deserialize)]
struct Registration {
    version: u32,
    listeners: Vec<Endpoint>,
}

const REGISTRATION_VERSION: u32 = 1;

/// What a gateway registers under `gateways/<node id>`.
pub fn registration(me: &Node) -> String {
    if me.listeners.len() <= 1 {
        return format!("{}:{}", me.host, me.port);
    }
    let r = Registration {
        version: REGISTRATION_VERSION,
        listeners: me.listeners.to_vec(),
    };
    serde_json::to_string(&r).expect("invariant: a registration serializes")
}

fn parse_registration(id: i32, value: &[u8]) -> Option<Node> {
    let text = std::str::from_utf8(value).ok()?;
    if text.starts_with('{') {
        let r: Registration = serde_json::from_str(text).ok()?;
        if r.version != REGISTRATION_VERSION {
            return None;
        }
        let first = r.listeners.first()?;
        return Some(Node {
            id,
            host: first.host.clone(),
            port: first.port,
            listeners: r.listeners.into(),
        });
    }
    let (host, port) = text.rsplit_once(':')?;
    Some(Node::new(id, host.to_string(), port.parse().ok()?))
}

/// The leader of a partition among `candidates` (rendezvous hashing: the highest score
/// wins). `None` only when there are no candidates.
pub fn leader(candidates: &[Node], topic: Uuid, partition: u32) -> Option<&Node> {
    let (hi, lo) = topic.as_u64_pair();
    let key = mix(hi ^ mix(lo ^ mix(u64::from(partition))));
    candidates
        .iter()
        .max_by_key(|n| (mix(key ^ (n.id as u32 as u64)), n.id))
}

/// The leader's node id as Kafka responses carry it (-1: no candidates).
pub fn leader_id(candidates: &[Node], topic: Uuid, partition: u32) -> i32 {
    leader(candidates, topic, partition).map_or(-1, |n| n.id)
}

/// MurmurHash3's 64-bit finalizer: a fixed, well-mixed function of its input, the same on
/// every gateway and every release.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: i32) -> Node {
        Node::new(id, "127.0.0.1".into(), 9000 + id as u16)
    }

    #[test]
    fn registrations_golden() {
        // Gateways of different releases read each other's registrations.
        let one = node(7);
        assert_eq!(registration(&one), "127.0.0.1:9007");
        let endpoint = |name: &str, host: &str, port| Endpoint {
            name: name.into(),
            host: host.into(),
            port,
        };
        let two = Node {
            id: 8,
            host: "10.0.0.8".into(),
            port: 9092,
            listeners: vec![
                endpoint("PLAINTEXT", "10.0.0.8", 9092),
                endpoint("SASL_SSL", "kafka-8.example.com", 9093),
            ]
            .into(),
        };
        let golden = r#"{"version":1,"listeners":[{"name":"PLAINTEXT","host":"10.0.0.8","port":9092},{"name":"SASL_SSL","host":"kafka-8.example.com","port":9093}]}"#;
        assert_eq!(registration(&two), golden);
        assert_eq!(parse_registration(8, golden.as_bytes()), Some(two.clone()));
        assert_eq!(
            two.endpoint("SASL_SSL"),
            Some(("kafka-8.example.com", 9093))
        );
        assert_eq!(two.endpoint("SSL"), None);
        let old = parse_registration(7, b"127.0.0.1:9007").expect("host:port");
        assert_eq!(old, one);
        assert_eq!(old.endpoint("SASL_SSL"), Some(("127.0.0.1", 9007)));
        assert_eq!(
            parse_registration(9, br#"{"version":2,"listeners":[]}"#),
            None
        );
    }

    #[test]
    fn leaders_are_spread_and_only_a_leaving_gateway_s_partitions_move() {
        let three = [node(1), node(2), node(3)];
        let topic = Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0);
        let before: Vec<i32> = (0..300)
            .map(|p| leader(&three, topic, p).expect("candidates").id)
            .collect();
        for id in [1, 2, 3] {
            let led = before.iter().filter(|l| **l == id).count();
            assert!((70..130).contains(&led), "gateway {id} leads {led} of 300");
        }
        let two = [node(1), node(3)];
        for (p, was) in before.iter().enumerate() {
            let now = leader(&two, topic, p as u32).expect("candidates").id;
            if *was != 2 {
                assert_eq!(now, *was, "partition {p} moved although its leader stayed");
            }
        }
    }

    #[test]
    fn the_rule_is_fixed() {
        // Gateways of different releases must agree: a change here is a protocol change.
        let nodes = [node(1), node(2), node(3)];
        let topic = Uuid::from_u128(42);
        let leaders: Vec<i32> = (0..8)
            .map(|p| leader(&nodes, topic, p).expect("candidates").id)
            .collect();
        assert_eq!(leaders, GOLDEN_LEADERS);
    }

    const GOLDEN_LEADERS: [i32; 8] = [2, 3, 1, 2, 1, 1, 3, 1];

    #[test]
    fn membership_follows_registrations_and_keeps_this_gateway() {
        let c = Cluster::new(node(2));
        c.written(b"gateways/3", b"127.0.0.1:9003", true);
        c.written(b"gateways/1", b"127.0.0.1:9001", true);
        let ids: Vec<i32> = c.nodes().iter().map(|n| n.id).collect();
        assert_eq!(ids, [1, 2, 3]);
        c.written(b"gateways/1", b"", false);
        c.written(b"gateways/2", b"", false);
        let ids: Vec<i32> = c.nodes().iter().map(|n| n.id).collect();
        assert_eq!(ids, [2, 3]);
        c.written(b"gateways/x", b"127.0.0.1:1", true);
        c.written(b"gateways/4", b"no port", true);
        assert_eq!(c.nodes().len(), 2);
        c.reset();
        assert_eq!(c.nodes().as_slice(), [node(2)]);
        assert_eq!(Cluster::controller(&c.nodes()), 2);
    }
}
