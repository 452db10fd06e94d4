//! The cluster as Kafka clients see it: the live gateways, and which one leads each
//! partition.
//!
//! Every gateway registers `gateways/<node id>` = `host:port` under its lease (see
//! [`crate::groups`]) and follows that prefix, so all gateways list the same brokers with the
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

use crate::groups::Node;
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

    /// The live gateways, sorted by node id.
    pub fn nodes(&self) -> Arc<Vec<Node>> {
        self.nodes.read().unwrap_or_else(|e| e.into_inner()).clone()
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
            match parse_address(value) {
                Some((host, port)) => Some(Node { id, host, port }),
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

fn parse_address(value: &[u8]) -> Option<(String, u16)> {
    let (host, port) = std::str::from_utf8(value).ok()?.rsplit_once(':')?;
    Some((host.to_string(), port.parse().ok()?))
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
        Node {
            id,
            host: "127.0.0.1".into(),
            port: 9000 + id as u16,
        }
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
