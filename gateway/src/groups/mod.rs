//! Consumer groups: the classic group protocol, coordinated by one gateway per group.
//!
//! A gateway becomes a group's coordinator by writing `groups/<group>/coordinator` under
//! its lease, if the key is absent (FindCoordinator does this). While its lease lives it
//! alone serves the group; every write of group state or offsets is a transaction that
//! first compares the claim, so a gateway that lost its lease cannot write. When a gateway
//! dies its lease expires, the claim disappears, and the next FindCoordinator moves the
//! group to another gateway, which loads the persisted state and offsets.

pub mod group;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use sluice_metadata::records::{GroupRecord, OFFSETS_VERSION, TopicOffsetsRecord};
use sluice_metadata::{
    Compare, CompareOp, CompareTarget, LeaseId, MetaError, SharedStore, Txn, TxnOp, keys,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use group::{Group, Limits};

/// Where a gateway can be reached: `host:port` is its first listener's advertised
/// address, `listeners` every listener's, by name (empty: only `host:port` is known, and
/// serves whichever listener a client asks about).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: i32,
    pub host: String,
    pub port: u16,
    pub listeners: Arc<[Endpoint]>,
    /// The zone (`--zone`) the gateway runs in, if it names one.
    pub zone: Option<Arc<str>>,
}

/// A listener's advertised address.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Endpoint {
    pub name: String,
    pub host: String,
    pub port: u16,
}

impl Node {
    pub fn new(id: i32, host: String, port: u16) -> Self {
        Self {
            id,
            host,
            port,
            listeners: Arc::new([]),
            zone: None,
        }
    }

    /// The address clients of listener `name` reach this gateway at; `None` if it has no
    /// such listener.
    pub fn endpoint(&self, name: &str) -> Option<(&str, u16)> {
        if self.listeners.is_empty() {
            return Some((&self.host, self.port));
        }
        self.listeners
            .iter()
            .find(|e| e.name == name)
            .map(|e| (e.host.as_str(), e.port))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("this gateway does not coordinate the group")]
    NotCoordinator,
    #[error("metadata store: {0}")]
    Metadata(#[from] MetaError),
}

/// Etcd allows 128 operations per transaction by default; stay well under.
const OPS_PER_TXN: usize = 100;
const TICK: Duration = Duration::from_millis(250);
/// The least time between two ticks, so a deadline that is already due cannot spin.
const MIN_TICK: Duration = Duration::from_millis(1);

pub type SharedGroup = Arc<tokio::sync::Mutex<Group>>;

pub struct Coordinator {
    store: SharedStore,
    me: Node,
    pub limits: Limits,
    lease_ttl: Duration,
    lease: Mutex<LeaseId>,
    groups: Mutex<HashMap<String, SharedGroup>>,
}

impl Coordinator {
    pub async fn start(
        store: SharedStore,
        me: Node,
        limits: Limits,
        lease_ttl: Duration,
        cancel: CancellationToken,
    ) -> Result<Arc<Self>, MetaError> {
        let lease = register(&store, &me, lease_ttl).await?;
        let c = Arc::new(Self {
            store,
            me,
            limits,
            lease_ttl,
            lease: Mutex::new(lease),
            groups: Mutex::new(HashMap::new()),
        });
        tokio::spawn(keep_alive(c.clone(), cancel.clone()));
        tokio::spawn(tick(c.clone(), cancel));
        Ok(c)
    }

    /// Writes `key` under this gateway's lease: it goes when the gateway does.
    pub async fn put_leased(&self, key: String, value: Vec<u8>) -> Result<(), MetaError> {
        self.store
            .txn(Txn {
                success: vec![TxnOp::Put {
                    key: key.into(),
                    value: value.into(),
                    lease: Some(self.lease()),
                }],
                ..Txn::default()
            })
            .await
            .map(|_| ())
    }

    fn lease(&self) -> LeaseId {
        *self.lease.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn claim_value(&self, lease: LeaseId) -> String {
        claim(&self.me, lease)
    }

    fn claim_compare(&self, group: &str) -> Compare {
        Compare {
            key: keys::group_coordinator(group).into(),
            op: CompareOp::Equal,
            target: CompareTarget::Value(Bytes::from(self.claim_value(self.lease()))),
        }
    }

    /// The gateway that coordinates `group`. If nobody does, it is claimed for `prefer`
    /// (another gateway, under the lease it registered with: the claim ends with that
    /// gateway, as its own claims do), or for this gateway when there is no preference or
    /// the preferred gateway's lease has ended.
    pub async fn find(
        &self,
        group: &str,
        mut prefer: Option<(Node, LeaseId)>,
    ) -> Result<Node, GroupError> {
        let key = keys::group_coordinator(group);
        loop {
            if let Some(kv) = self.store.get(key.as_bytes()).await?
                && let Some(node) = parse_claim(&kv.value)
            {
                return Ok(node);
            }
            let (node, lease) = match &prefer {
                Some((node, lease)) => (node.clone(), *lease),
                None => (self.me.clone(), self.lease()),
            };
            let r = self
                .store
                .txn(Txn {
                    compares: vec![Compare::absent(key.clone())],
                    success: vec![TxnOp::Put {
                        key: key.clone().into(),
                        value: claim(&node, lease).into(),
                        lease: Some(lease),
                    }],
                    failure: vec![],
                })
                .await;
            match r {
                Err(MetaError::LeaseNotFound(_)) if prefer.is_some() => prefer = None,
                r => {
                    if r?.succeeded {
                        tracing::info!(group, coordinator = node.id, "group claimed");
                        return Ok(node);
                    }
                }
            }
        }
    }

    /// The group, if this gateway coordinates it; loaded from metadata the first time.
    pub async fn group(&self, id: &str) -> Result<SharedGroup, GroupError> {
        if let Some(g) = self
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
        {
            return Ok(g.clone());
        }
        let claim = self
            .store
            .get(keys::group_coordinator(id).as_bytes())
            .await?;
        if claim.map(|kv| kv.value) != Some(Bytes::from(self.claim_value(self.lease()))) {
            return Err(GroupError::NotCoordinator);
        }
        let state = self.store.get(keys::group_state(id).as_bytes()).await?;
        let now = Instant::now();
        let mut g = match state.map(|kv| GroupRecord::decode(&kv.value)) {
            Some(Ok(r)) => Group::restore(id.to_string(), r, now),
            Some(Err(e)) => {
                tracing::error!(group = id, error = %e, "unreadable group state; starting empty");
                Group::new(id.to_string())
            }
            None => Group::new(id.to_string()),
        };
        let prefix = keys::group_offsets_prefix(id);
        for kv in self.store.range(prefix.as_bytes(), None).await?.kvs {
            let topic = String::from_utf8_lossy(&kv.key[prefix.len()..]).into_owned();
            match TopicOffsetsRecord::decode(&kv.value) {
                Ok(r) => {
                    g.offsets.insert(topic, r.partitions);
                }
                Err(e) => {
                    tracing::error!(group = id, topic, error = %e, "unreadable committed offsets")
                }
            }
        }
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        Ok(groups
            .entry(id.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(g)))
            .clone())
    }

    /// Runs `ops` if this gateway still holds the group's claim; otherwise forgets the group.
    async fn write(&self, group: &str, ops: Vec<TxnOp>) -> Result<(), GroupError> {
        for chunk in ops.chunks(OPS_PER_TXN) {
            let r = self
                .store
                .txn(Txn {
                    compares: vec![self.claim_compare(group)],
                    success: chunk.to_vec(),
                    failure: vec![],
                })
                .await?;
            if !r.succeeded {
                self.forget(group);
                return Err(GroupError::NotCoordinator);
            }
        }
        Ok(())
    }

    /// Persists the group's state if it changed.
    pub async fn persist(&self, g: &mut Group) -> Result<(), GroupError> {
        if !g.dirty {
            return Ok(());
        }
        g.dirty = false;
        self.write(
            &g.id,
            vec![TxnOp::put(keys::group_state(&g.id), g.record().encode())],
        )
        .await
    }

    /// Persists the group's committed offsets of `topics`.
    pub async fn persist_offsets(
        &self,
        g: &Group,
        topics: impl Iterator<Item = &String>,
    ) -> Result<(), GroupError> {
        let ops = topics
            .map(|t| match g.offsets.get(t).filter(|p| !p.is_empty()) {
                Some(partitions) => TxnOp::put(
                    keys::group_offsets(&g.id, t),
                    TopicOffsetsRecord {
                        v: OFFSETS_VERSION,
                        partitions: partitions.clone(),
                    }
                    .encode(),
                ),
                None => TxnOp::delete(keys::group_offsets(&g.id, t)),
            })
            .collect();
        self.write(&g.id, ops).await
    }

    /// Deletes everything the group has in metadata.
    pub async fn delete(&self, group: &str) -> Result<(), GroupError> {
        self.write(
            group,
            vec![TxnOp::DeletePrefix {
                prefix: keys::group_prefix(group).into(),
            }],
        )
        .await?;
        self.forget(group);
        Ok(())
    }

    fn forget(&self, group: &str) {
        let g = self
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(group);
        if let Some(g) = g {
            tokio::spawn(async move { g.lock().await.abandon() });
        }
    }

    /// Groups this gateway coordinates right now.
    pub fn local_groups(&self) -> Vec<SharedGroup> {
        self.groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn forget_all(&self) {
        let all: Vec<String> = self
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        for g in all {
            self.forget(&g);
        }
    }

    /// Gives every group up at once (on shutdown), so they move without waiting for the
    /// lease to expire.
    pub async fn resign(&self) {
        self.forget_all();
        if let Err(e) = self.store.revoke_lease(self.lease()).await {
            tracing::warn!(error = %e, "revoking the gateway lease failed");
        }
    }
}

/// A group's coordinator claim: the gateway and the lease the claim lives under.
fn claim(node: &Node, lease: LeaseId) -> String {
    format!("{}|{}|{}|{}", node.id, node.host, node.port, lease.0)
}

fn parse_claim(v: &[u8]) -> Option<Node> {
    let s = std::str::from_utf8(v).ok()?;
    let mut it = s.split('|');
    Some(Node::new(
        it.next()?.parse().ok()?,
        it.next()?.to_string(),
        it.next()?.parse().ok()?,
    ))
}

/// Grants a lease and registers the gateway under it.
async fn register(store: &SharedStore, me: &Node, ttl: Duration) -> Result<LeaseId, MetaError> {
    let lease = store.grant_lease(ttl.as_secs().max(1) as i64).await?;
    store
        .txn(Txn {
            success: vec![TxnOp::Put {
                key: keys::gateway(me.id).into(),
                value: crate::cluster::registration(me).into(),
                lease: Some(lease),
            }],
            ..Txn::default()
        })
        .await?;
    Ok(lease)
}

async fn keep_alive(c: Arc<Coordinator>, cancel: CancellationToken) {
    let every = c.lease_ttl / 3;
    let mut last_ok = Instant::now();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => {
                c.resign().await;
                return;
            }
            _ = tokio::time::sleep(every) => {}
        }
        match c.store.keep_alive(c.lease()).await {
            Ok(()) => last_ok = Instant::now(),
            Err(e) => {
                let lost =
                    matches!(e, MetaError::LeaseNotFound(_)) || last_ok.elapsed() >= c.lease_ttl;
                tracing::warn!(error = %e, lost, "gateway lease keep-alive failed");
                if lost {
                    // Our claims are gone or about to be: stop coordinating, start afresh.
                    c.forget_all();
                    match register(&c.store, &c.me, c.lease_ttl).await {
                        Ok(l) => {
                            *c.lease.lock().unwrap_or_else(|e| e.into_inner()) = l;
                            last_ok = Instant::now();
                        }
                        Err(e) => tracing::warn!(error = %e, "re-registering the gateway failed"),
                    }
                }
            }
        }
    }
}

/// Expires sessions and moves rebalances on: wakes at the earliest deadline of any group
/// this gateway coordinates (at least every [`TICK`], which also picks up new groups and
/// new members), so a member whose session runs out leaves on time, not up to a tick
/// late. Groups are all ticked before any is persisted: a slow metadata write does not
/// hold up another group's expiry.
async fn tick(c: Arc<Coordinator>, cancel: CancellationToken) {
    let mut next = Instant::now() + TICK;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        let groups = c.local_groups();
        let now = Instant::now();
        next = now + TICK;
        for g in &groups {
            let mut g = g.lock().await;
            g.tick(&c.limits, now);
            if let Some(d) = g.next_deadline() {
                next = next.min(d.max(now + MIN_TICK));
            }
        }
        for g in &groups {
            let mut g = g.lock().await;
            if let Err(e) = c.persist(&mut g).await {
                tracing::warn!(group = %g.id, error = %e, "persisting group state failed");
            }
        }
    }
}
