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
//!
//! Zones: a gateway started with `--zone` registers it, and Metadata lists it as the
//! broker's rack. A client that names its zone (a `zone=NAME` item in its `client.id`, see
//! [`client_zone`]) is given leaders among the gateways of its zone, when there are any,
//! and a new group of its is claimed for one of them; one that names it as `client.rack`
//! (Fetch v11+, KIP-392) is sent to a gateway of its zone as its preferred read replica.
//! Each partition lists as replicas its leader and, per other zone, the gateway a client
//! of that zone would be sent to, since Kafka clients only follow a preferred read replica
//! that the partition lists.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use kafka_protocol::messages::BrokerId;
use sluice_metadata::{LeaseId, keys};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::groups::{Endpoint, Node};
use crate::server::Ctx;

/// The live gateways, sorted by node id; this gateway is always among them.
#[derive(Debug)]
pub struct Cluster {
    me: Node,
    nodes: RwLock<Arc<Vec<Node>>>,
    /// The lease each other gateway registered under (claims made for it live under it).
    leases: RwLock<HashMap<i32, LeaseId>>,
}

impl Cluster {
    pub fn new(me: Node) -> Self {
        Self {
            nodes: RwLock::new(Arc::new(vec![me.clone()])),
            leases: RwLock::new(HashMap::new()),
            me,
        }
    }

    /// Another live gateway and the lease it registered under.
    pub fn with_lease(&self, id: i32) -> Option<(Node, LeaseId)> {
        let lease = *self
            .leases
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)?;
        let node = self.nodes().iter().find(|n| n.id == id)?.clone();
        Some((node, lease))
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
        self.leases
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.update(Vec::clear);
    }

    /// Applies a change under `gateways/`.
    fn written(&self, key: &[u8], value: &[u8], lease: Option<LeaseId>, present: bool) {
        let Some(id) = keys::parse_gateway(key) else {
            return;
        };
        {
            let mut leases = self.leases.write().unwrap_or_else(|e| e.into_inner());
            match lease.filter(|_| present) {
                Some(l) => leases.insert(id, l),
                None => leases.remove(&id),
            };
        }
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
            c.cluster.written(&kv.key, &kv.value, kv.lease, put);
        };
        crate::watch::follow(&ctx, keys::GATEWAYS_PREFIX, Some(reset), &cancel, apply).await;
    }
}

/// The registration record with more than one listener, or a zone.
#[derive(serde::Serialize, serde::Deserialize)]
struct Registration {
    version: u32,
    listeners: Vec<Endpoint>,
    /// Absent in records of gateways without a zone (and of releases before zones, which
    /// read a record with one as if it had none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    zone: Option<String>,
}

const REGISTRATION_VERSION: u32 = 1;

/// What a gateway registers under `gateways/<node id>`.
pub fn registration(me: &Node) -> String {
    if me.listeners.len() <= 1 && me.zone.is_none() {
        return format!("{}:{}", me.host, me.port);
    }
    let listeners = if me.listeners.is_empty() {
        vec![Endpoint {
            name: "PLAINTEXT".into(),
            host: me.host.clone(),
            port: me.port,
        }]
    } else {
        me.listeners.to_vec()
    };
    let r = Registration {
        version: REGISTRATION_VERSION,
        listeners,
        zone: me.zone.as_deref().map(str::to_string),
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
            zone: r.zone.map(Arc::from),
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

/// The gateway among `candidates` that owns `key` (a group id), by the same rendezvous
/// rule as partition leaders.
pub fn chosen_for<'a>(candidates: &'a [Node], key: &[u8]) -> Option<&'a Node> {
    leader(candidates, Uuid::nil(), crc32c::crc32c(key))
}

/// The zone a client names in its `client.id`: the value of a `zone=NAME` item, items
/// being separated by `;`, `,` or spaces (`orders-7;zone=eu-west-1a`). Kafka clients send
/// `client.rack` only with fetches; the client id travels with every request.
pub fn client_zone(client_id: &str) -> Option<&str> {
    client_id
        .split([';', ',', ' '])
        .filter_map(|item| item.strip_prefix("zone="))
        .rfind(|z| !z.is_empty())
}

/// The live gateways of `zone` (none when no gateway there is live).
pub fn zone_members(nodes: &[Node], zone: &str) -> Vec<Node> {
    nodes
        .iter()
        .filter(|n| n.zone.as_deref() == Some(zone))
        .cloned()
        .collect()
}

/// Where a client's partitions are: built once per request from the live gateways and
/// the client's zone, then asked for each partition.
pub struct Placement {
    /// The gateways that may lead for the client: those of its zone, or all of them when
    /// it names none or none runs there.
    leaders: Vec<Node>,
    /// Every zone's gateways, by zone name.
    zones: Vec<(Arc<str>, Vec<Node>)>,
}

impl Placement {
    pub fn new(nodes: &[Node], client_zone: Option<&str>) -> Self {
        let mut names: Vec<Arc<str>> = nodes.iter().filter_map(|n| n.zone.clone()).collect();
        names.sort_unstable();
        names.dedup();
        let zones: Vec<(Arc<str>, Vec<Node>)> = names
            .into_iter()
            .map(|z| {
                let members = zone_members(nodes, &z);
                (z, members)
            })
            .collect();
        let leaders = client_zone
            .and_then(|c| zones.iter().find(|(z, _)| **z == *c))
            .map_or_else(|| nodes.to_vec(), |(_, members)| members.clone());
        Self { leaders, zones }
    }

    /// A partition's leader and its replicas, as Metadata responses carry them: the
    /// leader first, then for every other zone the gateway a client there is sent to
    /// (see [`read_replicas`]), since Kafka clients follow a preferred read replica only
    /// when the partition lists it.
    pub fn place(&self, topic: Uuid, partition: u32) -> (BrokerId, Vec<BrokerId>) {
        let Some(lead) = leader(&self.leaders, topic, partition) else {
            return (BrokerId(-1), vec![BrokerId(-1)]);
        };
        let mut replicas = vec![BrokerId(lead.id)];
        for (zone, members) in &self.zones {
            if lead.zone.as_ref() != Some(zone)
                && let Some(n) = leader(members, topic, partition)
            {
                replicas.push(BrokerId(n.id));
            }
        }
        (BrokerId(lead.id), replicas)
    }
}

/// The gateways a fetch from a client whose `client.rack` is `rack` should go to instead
/// of this gateway (`me`), the partition's own chosen by [`leader`]: those of that zone,
/// when this one is not in it and one is live there; none otherwise.
pub fn read_replicas(nodes: &[Node], me: &Node, rack: &str) -> Vec<Node> {
    if rack.is_empty() || me.zone.as_deref() == Some(rack) {
        return Vec::new();
    }
    zone_members(nodes, rack)
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
            zone: None,
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
        // A zone makes even one listener a record; releases before zones read it too.
        let zoned = Node {
            zone: Some("eu-west-1a".into()),
            listeners: vec![endpoint("PLAINTEXT", "10.0.0.9", 9092)].into(),
            ..Node::new(9, "10.0.0.9".into(), 9092)
        };
        let golden = r#"{"version":1,"listeners":[{"name":"PLAINTEXT","host":"10.0.0.9","port":9092}],"zone":"eu-west-1a"}"#;
        assert_eq!(registration(&zoned), golden);
        assert_eq!(parse_registration(9, golden.as_bytes()), Some(zoned));
    }

    fn zoned(id: i32, zone: &str) -> Node {
        Node {
            zone: Some(zone.into()),
            ..node(id)
        }
    }

    #[test]
    fn a_client_names_its_zone_in_its_client_id() {
        assert_eq!(client_zone("orders;zone=eu-west-1a"), Some("eu-west-1a"));
        assert_eq!(client_zone("zone=b"), Some("b"));
        assert_eq!(client_zone("app,zone=c extra"), Some("c"));
        assert_eq!(client_zone("app zone=a zone=b"), Some("b"));
        assert_eq!(client_zone("rdkafka"), None);
        assert_eq!(client_zone("ozone=a"), None);
        assert_eq!(client_zone("app;zone="), None);
    }

    #[test]
    fn zones_narrow_leaders_and_name_one_replica_per_zone() {
        let nodes = [
            zoned(1, "a"),
            zoned(2, "a"),
            zoned(3, "b"),
            zoned(4, "b"),
            node(5),
        ];
        let topic = Uuid::from_u128(7);
        let ids = |v: &[Node]| v.iter().map(|n| n.id).collect::<Vec<_>>();
        let leaders = |zone| ids(&Placement::new(&nodes, zone).leaders);
        assert_eq!(leaders(Some("a")), [1, 2]);
        assert_eq!(leaders(Some("c")), [1, 2, 3, 4, 5]);
        assert_eq!(leaders(None), [1, 2, 3, 4, 5]);
        let (for_a, for_b, for_any) = (
            Placement::new(&nodes, Some("a")),
            Placement::new(&nodes, Some("b")),
            Placement::new(&nodes, None),
        );
        let raw = |v: Vec<BrokerId>| v.into_iter().map(|b| b.0).collect::<Vec<_>>();
        let me = &nodes[2];
        let preferred = |rack, p| leader(&read_replicas(&nodes, me, rack), topic, p).map(|n| n.id);
        for p in 0..50 {
            let in_a = for_a.place(topic, p).0.0;
            assert!([1, 2].contains(&in_a));
            let in_b = for_b.place(topic, p).0.0;
            // A client of zone a fetching from a gateway of zone b is sent to its zone's
            // gateway for the partition, which the partition lists as a replica.
            assert_eq!(preferred("a", p), Some(in_a));
            assert_eq!(preferred("b", p), None);
            assert_eq!(preferred("", p), None);
            assert_eq!(preferred("nowhere", p), None);
            assert_eq!(raw(for_a.place(topic, p).1), [in_a, in_b]);
            // The leader of a client without a zone may be the zoneless gateway.
            let (any, r) = for_any.place(topic, p);
            let r = raw(r);
            assert_eq!(r[0], any.0);
            assert!(r.contains(&in_a) && r.contains(&in_b));
        }
        // Without zones, a partition lists its leader alone, as before.
        let plain = [node(1), node(2)];
        let (lead, r) = Placement::new(&plain, None).place(topic, 0);
        assert_eq!(raw(r), [lead.0]);
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
        c.written(b"gateways/3", b"127.0.0.1:9003", Some(LeaseId(33)), true);
        c.written(b"gateways/1", b"127.0.0.1:9001", Some(LeaseId(11)), true);
        let ids: Vec<i32> = c.nodes().iter().map(|n| n.id).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(c.with_lease(3), Some((node(3), LeaseId(33))));
        assert_eq!(
            c.with_lease(2),
            None,
            "this gateway's own lease is not tracked here"
        );
        c.written(b"gateways/1", b"", None, false);
        assert_eq!(c.with_lease(1), None);
        c.written(b"gateways/2", b"", None, false);
        let ids: Vec<i32> = c.nodes().iter().map(|n| n.id).collect();
        assert_eq!(ids, [2, 3]);
        c.written(b"gateways/x", b"127.0.0.1:1", None, true);
        c.written(b"gateways/4", b"no port", None, true);
        assert_eq!(c.nodes().len(), 2);
        c.reset();
        assert_eq!(c.nodes().as_slice(), [node(2)]);
        assert_eq!(Cluster::controller(&c.nodes()), 2);
    }
}
