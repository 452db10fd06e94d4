//! The key layout, in one place. All keys are relative to the store's namespace.

/// Everything the commit log applies, in revision order: topics, commits, segments, log
/// starts. Every transaction writes at most one key under it, so a revision names one
/// log event and a checkpoint "as of revision R" is exact.
pub const LOG_PREFIX: &str = "log/";
pub const TOPICS_PREFIX: &str = "log/topics/";
pub const COMMITS_PREFIX: &str = "log/commits/";
/// Compacted segments: `log/segments/<topic id>/<partition>/<base offset>`.
pub const SEGMENTS_PREFIX: &str = "log/segments/";
/// Log start offsets: `log/starts/<topic id>/<partition>`.
pub const STARTS_PREFIX: &str = "log/starts/";
/// Barriers: a process that needs its log to have caught up writes
/// `log/barriers/<node>` and waits until it sees it.
pub const BARRIERS_PREFIX: &str = "log/barriers/";
/// The pointer to the latest checkpoint of the log state.
pub const CHECKPOINT: &str = "log/checkpoint";
/// Per partition, the offset compaction has reached: `compaction/<topic id>/<partition>`.
/// Every segment commit compares it, so two compactors never commit the same range.
pub const COMPACTION_PREFIX: &str = "compaction/";
/// MQTT retained messages: `mqtt/retained/<topic name>`.
pub const MQTT_RETAINED_PREFIX: &str = "mqtt/retained/";
/// MQTT sessions: `mqtt/sessions/<client id>`, who holds each and, for sessions that
/// outlive their connection, their state.
pub const MQTT_SESSIONS_PREFIX: &str = "mqtt/sessions/";
/// Gateways with members of MQTT shared subscriptions:
/// `mqtt/shared/<group>/<node id>/<filter>` (a group name holds no '/').
pub const MQTT_SHARED_PREFIX: &str = "mqtt/shared/";
/// Gateways that deliver MQTT messages, with the address others forward WAL objects to:
/// `mqtt/peers/<node id>`.
pub const MQTT_PEERS_PREFIX: &str = "mqtt/peers/";
/// Live compactors, one lease-bound key each.
pub const COMPACTORS_PREFIX: &str = "compactors/";
/// The cluster id, created once.
pub const CLUSTER_ID: &str = "cluster/id";

pub fn topic(name: &str) -> String {
    format!("{TOPICS_PREFIX}{name}")
}

pub fn commit(object_id: &str) -> String {
    format!("{COMMITS_PREFIX}{object_id}")
}

pub fn segment(topic_id: &uuid::Uuid, partition: u32, base_offset: i64) -> String {
    format!(
        "{SEGMENTS_PREFIX}{}/{partition}/{base_offset:020}",
        topic_id.simple()
    )
}

pub fn log_start(topic_id: &uuid::Uuid, partition: u32) -> String {
    format!("{STARTS_PREFIX}{}/{partition}", topic_id.simple())
}

pub fn compaction(topic_id: &uuid::Uuid, partition: u32) -> String {
    format!("{COMPACTION_PREFIX}{}/{partition}", topic_id.simple())
}

pub fn mqtt_retained(topic: &str) -> String {
    format!("{MQTT_RETAINED_PREFIX}{topic}")
}

pub fn mqtt_session(client_id: &str) -> String {
    format!("{MQTT_SESSIONS_PREFIX}{client_id}")
}

pub fn mqtt_shared(group: &str, node: i32, filter: &str) -> String {
    format!("{MQTT_SHARED_PREFIX}{group}/{node}/{filter}")
}

/// (group, node id, filter) of a key under [`MQTT_SHARED_PREFIX`], without the prefix.
pub fn parse_mqtt_shared(rest: &str) -> Option<(String, i32, String)> {
    let (group, rest) = rest.split_once('/')?;
    let (node, filter) = rest.split_once('/')?;
    Some((group.to_string(), node.parse().ok()?, filter.to_string()))
}

pub fn mqtt_peer(node: i32) -> String {
    format!("{MQTT_PEERS_PREFIX}{node}")
}

pub fn barrier(node: &str) -> String {
    format!("{BARRIERS_PREFIX}{node}")
}

pub fn compactor(node: &str) -> String {
    format!("{COMPACTORS_PREFIX}{node}")
}

/// Consumer groups: `groups/<group>/coordinator` (the claiming gateway, lease-bound),
/// `groups/<group>/state`, `groups/<group>/offsets/<topic>`.
pub const GROUPS_PREFIX: &str = "groups/";
/// Live gateways, one lease-bound key each.
pub const GATEWAYS_PREFIX: &str = "gateways/";
/// `load/<node id>`: a gateway's open connections, under its lease (JSON, versioned).
pub const LOAD_PREFIX: &str = "load/";

/// Group ids may hold any character; '/' would split keys, so it (and '%') is escaped.
pub fn escape_group(group: &str) -> String {
    group.replace('%', "%25").replace('/', "%2F")
}

pub fn unescape_group(key_part: &str) -> String {
    key_part.replace("%2F", "/").replace("%25", "%")
}

pub fn group_prefix(group: &str) -> String {
    format!("{GROUPS_PREFIX}{}/", escape_group(group))
}

pub fn group_coordinator(group: &str) -> String {
    format!("{}coordinator", group_prefix(group))
}

pub fn group_state(group: &str) -> String {
    format!("{}state", group_prefix(group))
}

pub fn group_offsets_prefix(group: &str) -> String {
    format!("{}offsets/", group_prefix(group))
}

pub fn group_offsets(group: &str, topic: &str) -> String {
    format!("{}{topic}", group_offsets_prefix(group))
}

pub const USERS_PREFIX: &str = "users/";

/// A user's record; names are escaped like group ids, so no name reaches another's key.
pub fn user(name: &str) -> String {
    format!("{USERS_PREFIX}{}", escape_group(name))
}

pub const ACLS_PREFIX: &str = "acls/";

/// An ACL binding's key: `acls/` and a digest of the binding, so one is stored once.
pub fn acl(digest: &str) -> String {
    format!("{ACLS_PREFIX}{digest}")
}

pub const QUOTAS_PREFIX: &str = "quotas/";

/// A client quota entity's key: its components in order (`user`, then `client-id`), each
/// `u:NAME` or `c:NAME` (names escaped like group ids), or `u*` or `c*` for the type's
/// default; so a name never collides with a default.
pub fn quota(user: Option<Option<&str>>, client_id: Option<Option<&str>>) -> String {
    let mut parts = Vec::new();
    for (tag, component) in [("u", user), ("c", client_id)] {
        match component {
            Some(Some(name)) => parts.push(format!("{tag}:{}", escape_group(name))),
            Some(None) => parts.push(format!("{tag}*")),
            None => {}
        }
    }
    format!("{QUOTAS_PREFIX}{}", parts.join("/"))
}

pub fn gateway(node_id: i32) -> String {
    format!("{GATEWAYS_PREFIX}{node_id}")
}

/// The node id of a `gateways/<node id>` key.
pub fn parse_gateway(key: &[u8]) -> Option<i32> {
    std::str::from_utf8(key.strip_prefix(GATEWAYS_PREFIX.as_bytes())?)
        .ok()?
        .parse()
        .ok()
}

pub fn load(node_id: i32) -> String {
    format!("{LOAD_PREFIX}{node_id}")
}

/// The node id of a `load/<node id>` key.
pub fn parse_load(key: &[u8]) -> Option<i32> {
    std::str::from_utf8(key.strip_prefix(LOAD_PREFIX.as_bytes())?)
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ids_cannot_reach_other_groups_keys() {
        assert_eq!(group_state("a/b"), "groups/a%2Fb/state");
        assert!(!group_state("a/b").starts_with(&group_prefix("a")));
        let k = mqtt_shared("g1", -4, "a/+/#");
        let rest = k.strip_prefix(MQTT_SHARED_PREFIX).expect("prefix");
        assert_eq!(
            parse_mqtt_shared(rest),
            Some(("g1".into(), -4, "a/+/#".into()))
        );
        for g in ["a/b", "50%", "x%2Fy", "plain"] {
            assert_eq!(unescape_group(&escape_group(g)), g);
        }
    }
}
