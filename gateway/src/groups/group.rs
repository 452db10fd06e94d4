//! One consumer group's state machine (the classic protocol), as Apache Kafka's group
//! coordinator runs it: Empty -> PreparingRebalance -> CompletingRebalance -> Stable, and
//! back to PreparingRebalance whenever membership or subscriptions change.
//!
//! The assignors run in the clients: the coordinator picks a protocol all members support,
//! hands the leader every member's metadata, and hands each member the assignment the
//! leader sent. Everything here runs under the group's lock; requests that must wait for
//! other members (JoinGroup, a follower's SyncGroup) get a channel to await after it.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use sluice_metadata::records::{GROUP_VERSION, GroupMemberRecord, GroupRecord, OffsetRecord};
use tokio::sync::oneshot;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

/// The JoinGroup answer for one member.
#[derive(Debug, Clone)]
pub struct JoinResult {
    pub error: Option<ResponseError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Every member's `(id, instance id, metadata)`, for the leader only.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinResult {
    fn error(e: ResponseError, member_id: &str) -> Self {
        Self {
            error: Some(e),
            generation: -1,
            protocol_type: None,
            protocol: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SyncResult {
    pub error: Option<ResponseError>,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    fn error(e: ResponseError) -> Self {
        Self {
            error: Some(e),
            protocol_type: None,
            protocol: None,
            assignment: Bytes::new(),
        }
    }
}

pub enum Reply<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

#[derive(Debug)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    /// `(protocol name, metadata)` in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub last_seen: Instant,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<SyncResult>>,
}

impl Member {
    pub fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

/// What a JoinGroup asks.
pub struct JoinArgs {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new member first gets an id and must join again with it.
    pub require_known_member_id: bool,
}

/// Limits from the coordinator's configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub min_session_timeout: Duration,
    pub max_session_timeout: Duration,
    pub initial_rebalance_delay: Duration,
}

pub struct Group {
    pub id: String,
    pub state: State,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Ids handed out with MEMBER_ID_REQUIRED, until they join or time out.
    pending: HashMap<String, Instant>,
    static_members: HashMap<String, String>,
    rebalance_deadline: Option<Instant>,
    /// A new group waits this long for more members before its first generation.
    earliest_completion: Option<Instant>,
    /// Committed offsets: topic -> partition -> offset.
    pub offsets: BTreeMap<String, BTreeMap<i32, OffsetRecord>>,
    /// Set when a generation completed or the group emptied: the state must be persisted.
    pub dirty: bool,
    /// Given up by this gateway (it drains, or lost its lease): a request that reached the
    /// group in the meantime is answered NOT_COORDINATOR, not kept waiting for a rebalance
    /// no one here will complete.
    abandoned: bool,
}

impl Group {
    pub fn new(id: String) -> Self {
        Self {
            id,
            state: State::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            static_members: HashMap::new(),
            rebalance_deadline: None,
            earliest_completion: None,
            offsets: BTreeMap::new(),
            dirty: false,
            abandoned: false,
        }
    }

    /// A group taken over from metadata: members keep their ids and generation, and their
    /// session timers start now.
    pub fn restore(id: String, r: GroupRecord, now: Instant) -> Self {
        let mut g = Self::new(id);
        g.generation = r.generation;
        g.protocol_type = r.protocol_type;
        g.protocol = r.protocol.clone();
        g.leader = r.leader;
        for m in r.members {
            if let Some(i) = &m.instance_id {
                g.static_members.insert(i.clone(), m.member_id.clone());
            }
            let protocol = r.protocol.clone().unwrap_or_default();
            g.members.insert(
                m.member_id.clone(),
                Member {
                    id: m.member_id,
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout: Duration::from_millis(m.session_timeout_ms),
                    rebalance_timeout: Duration::from_millis(m.rebalance_timeout_ms),
                    protocols: vec![(protocol, Bytes::from(m.metadata))],
                    assignment: Bytes::from(m.assignment),
                    last_seen: now,
                    join_waiter: None,
                    sync_waiter: None,
                },
            );
        }
        g.state = if g.members.is_empty() {
            State::Empty
        } else {
            State::Stable
        };
        g
    }

    /// Whether the group has ever formed or holds offsets; otherwise clients see it as
    /// nonexistent ("Dead", GROUP_ID_NOT_FOUND).
    pub fn exists(&self) -> bool {
        self.generation > 0 || !self.members.is_empty() || !self.offsets.is_empty()
    }

    pub fn record(&self) -> GroupRecord {
        let protocol = self.protocol.clone().unwrap_or_default();
        GroupRecord {
            v: GROUP_VERSION,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            generation: self.generation,
            leader: self.leader.clone(),
            state: if self.members.is_empty() {
                "Empty"
            } else {
                "Stable"
            }
            .into(),
            members: self
                .members
                .values()
                .map(|m| GroupMemberRecord {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout.as_millis() as u64,
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis() as u64,
                    metadata: m.metadata_for(&protocol).to_vec(),
                    assignment: m.assignment.to_vec(),
                })
                .collect(),
        }
    }

    /// Protocols every member (and the candidate, if any) supports, best voted first.
    fn common_protocol(&self, candidate: Option<&[(String, Bytes)]>) -> Option<String> {
        let lists: Vec<Vec<&str>> = self
            .members
            .values()
            .map(|m| m.protocols.iter().map(|(n, _)| n.as_str()).collect())
            .chain(candidate.map(|c| c.iter().map(|(n, _)| n.as_str()).collect()))
            .collect();
        let first = lists.first()?;
        let common: Vec<&str> = first
            .iter()
            .copied()
            .filter(|p| lists.iter().all(|l| l.contains(p)))
            .collect();
        // Each member votes for its most preferred common protocol.
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for l in &lists {
            if let Some(p) = l.iter().find(|p| common.contains(p)) {
                *votes.entry(p).or_default() += 1;
            }
        }
        common
            .iter()
            .max_by_key(|p| {
                (
                    votes.get(*p).copied().unwrap_or(0),
                    std::cmp::Reverse(common.iter().position(|q| q == *p)),
                )
            })
            .map(|p| p.to_string())
    }

    fn new_member_id(client_id: &str) -> String {
        format!("{client_id}-{}", uuid::Uuid::new_v4())
    }

    pub fn join(&mut self, a: JoinArgs, limits: &Limits, now: Instant) -> Reply<JoinResult> {
        if self.abandoned {
            return Reply::Now(JoinResult::error(
                ResponseError::NotCoordinator,
                &a.member_id,
            ));
        }
        if a.session_timeout < limits.min_session_timeout
            || a.session_timeout > limits.max_session_timeout
        {
            return Reply::Now(JoinResult::error(
                ResponseError::InvalidSessionTimeout,
                &a.member_id,
            ));
        }
        if a.protocol_type.is_empty() || a.protocols.is_empty() {
            return Reply::Now(JoinResult::error(
                ResponseError::InconsistentGroupProtocol,
                &a.member_id,
            ));
        }
        let others_exist = self.members.keys().any(|k| *k != a.member_id);
        if others_exist
            && (self.protocol_type.as_deref() != Some(&a.protocol_type)
                || self.common_protocol(Some(&a.protocols)).is_none())
        {
            return Reply::Now(JoinResult::error(
                ResponseError::InconsistentGroupProtocol,
                &a.member_id,
            ));
        }
        self.pending
            .retain(|_, t| now.duration_since(*t) < Duration::from_secs(300));

        if a.member_id.is_empty() {
            if let Some(instance) = &a.instance_id {
                if let Some(old) = self.static_members.get(instance).cloned() {
                    return self.rejoin_static(old, a, limits, now);
                }
                let id = Self::new_member_id(&a.client_id);
                self.static_members.insert(instance.clone(), id.clone());
                return self.add_member(id, a, limits, now);
            }
            let id = Self::new_member_id(&a.client_id);
            if a.require_known_member_id {
                self.pending.insert(id.clone(), now);
                return Reply::Now(JoinResult::error(ResponseError::MemberIdRequired, &id));
            }
            return self.add_member(id, a, limits, now);
        }

        if let Some(instance) = &a.instance_id
            && self
                .static_members
                .get(instance)
                .is_some_and(|id| *id != a.member_id)
        {
            return Reply::Now(JoinResult::error(
                ResponseError::FencedInstanceId,
                &a.member_id,
            ));
        }
        if !self.members.contains_key(&a.member_id) {
            if self.pending.remove(&a.member_id).is_some() {
                let id = a.member_id.clone();
                return self.add_member(id, a, limits, now);
            }
            return Reply::Now(JoinResult::error(
                ResponseError::UnknownMemberId,
                &a.member_id,
            ));
        }
        let id = a.member_id.clone();
        let is_leader = self.leader.as_deref() == Some(id.as_str());
        let m = self.members.get_mut(&id).expect("invariant: checked above");
        let unchanged = m.protocols == a.protocols;
        m.last_seen = now;
        m.session_timeout = a.session_timeout;
        m.rebalance_timeout = a.rebalance_timeout;
        m.client_id = a.client_id;
        m.client_host = a.client_host;
        if unchanged
            && (self.state == State::CompletingRebalance
                || (self.state == State::Stable && !is_leader))
        {
            // Nothing changed: answer with the current generation, no rebalance.
            return Reply::Now(self.current_join_result(&id));
        }
        tracing::debug!(group = %self.id, member = %id, state = self.state.name(), is_leader, unchanged, "member rejoins");
        m.protocols = a.protocols;
        let (tx, rx) = oneshot::channel();
        if let Some(old) = m.join_waiter.replace(tx) {
            let _ = old.send(JoinResult::error(ResponseError::UnknownMemberId, &id));
        }
        self.prepare_rebalance(limits, now);
        self.try_complete_join(now);
        Reply::Later(rx)
    }

    fn current_join_result(&self, member_id: &str) -> JoinResult {
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.protocol.clone().unwrap_or_default();
        let members = if leader == member_id {
            self.members
                .values()
                .map(|m| {
                    (
                        m.id.clone(),
                        m.instance_id.clone(),
                        m.metadata_for(&protocol),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResult {
            error: None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader,
            member_id: member_id.to_string(),
            members,
        }
    }

    /// A static member came back without its member id: it takes a new id, the old one is
    /// fenced, and if nothing else changed the group does not rebalance.
    fn rejoin_static(
        &mut self,
        old: String,
        a: JoinArgs,
        limits: &Limits,
        now: Instant,
    ) -> Reply<JoinResult> {
        let new_id = Self::new_member_id(&a.client_id);
        let Some(mut m) = self.members.remove(&old) else {
            // Known instance without a live member (should not happen): join afresh.
            self.static_members
                .remove(a.instance_id.as_deref().unwrap_or_default());
            return Reply::Now(JoinResult::error(ResponseError::UnknownMemberId, ""));
        };
        if let Some(w) = m.join_waiter.take() {
            let _ = w.send(JoinResult::error(ResponseError::FencedInstanceId, &old));
        }
        if let Some(w) = m.sync_waiter.take() {
            let _ = w.send(SyncResult::error(ResponseError::FencedInstanceId));
        }
        let unchanged = m.protocols == a.protocols;
        m.id = new_id.clone();
        m.last_seen = now;
        m.session_timeout = a.session_timeout;
        m.rebalance_timeout = a.rebalance_timeout;
        m.protocols = a.protocols;
        self.members.insert(new_id.clone(), m);
        if let Some(instance) = &a.instance_id {
            self.static_members.insert(instance.clone(), new_id.clone());
        }
        if self.leader.as_deref() == Some(old.as_str()) {
            self.leader = Some(new_id.clone());
        }
        self.dirty = true;
        if unchanged && self.state == State::Stable {
            let mut r = self.current_join_result(&new_id);
            // The leader need not reassign: the group is stable.
            r.members.clear();
            return Reply::Now(r);
        }
        let (tx, rx) = oneshot::channel();
        if let Some(m) = self.members.get_mut(&new_id) {
            m.join_waiter = Some(tx);
        }
        self.prepare_rebalance(limits, now);
        self.try_complete_join(now);
        Reply::Later(rx)
    }

    fn add_member(
        &mut self,
        id: String,
        a: JoinArgs,
        limits: &Limits,
        now: Instant,
    ) -> Reply<JoinResult> {
        if self.members.is_empty() {
            self.protocol_type = Some(a.protocol_type.clone());
        }
        let (tx, rx) = oneshot::channel();
        self.members.insert(
            id.clone(),
            Member {
                id,
                instance_id: a.instance_id,
                client_id: a.client_id,
                client_host: a.client_host,
                session_timeout: a.session_timeout,
                rebalance_timeout: a.rebalance_timeout,
                protocols: a.protocols,
                assignment: Bytes::new(),
                last_seen: now,
                join_waiter: Some(tx),
                sync_waiter: None,
            },
        );
        self.prepare_rebalance(limits, now);
        self.try_complete_join(now);
        Reply::Later(rx)
    }

    fn prepare_rebalance(&mut self, limits: &Limits, now: Instant) {
        if self.state == State::PreparingRebalance {
            return;
        }
        if self.state == State::CompletingRebalance {
            for m in self.members.values_mut() {
                if let Some(w) = m.sync_waiter.take() {
                    let _ = w.send(SyncResult::error(ResponseError::RebalanceInProgress));
                }
            }
        }
        let was_empty = self.state == State::Empty;
        self.state = State::PreparingRebalance;
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::from_secs(60));
        self.rebalance_deadline = Some(now + timeout);
        self.earliest_completion = was_empty.then(|| now + limits.initial_rebalance_delay);
    }

    /// Completes the join phase once every member has rejoined (after a new group's
    /// initial delay), or at the rebalance deadline without those that did not.
    pub fn try_complete_join(&mut self, now: Instant) {
        if self.state != State::PreparingRebalance {
            return;
        }
        let all_joined = self.members.values().all(|m| m.join_waiter.is_some());
        let due = self.rebalance_deadline.is_some_and(|d| d <= now);
        let waiting_for_more = self.earliest_completion.is_some_and(|t| t > now);
        if !due && (!all_joined || waiting_for_more) {
            return;
        }
        if due {
            let gone: Vec<String> = self
                .members
                .values()
                .filter(|m| m.join_waiter.is_none())
                .map(|m| m.id.clone())
                .collect();
            for id in gone {
                self.remove_member(&id);
            }
        }
        self.generation += 1;
        self.dirty = true;
        self.rebalance_deadline = None;
        self.earliest_completion = None;
        if self.members.is_empty() {
            self.state = State::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        }
        self.protocol = self.common_protocol(None);
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = State::CompletingRebalance;
        tracing::debug!(group = %self.id, generation = self.generation, members = ?self.members.keys().collect::<Vec<_>>(), leader = ?self.leader, protocol = ?self.protocol, "join complete");
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let result = self.current_join_result(&id);
            if let Some(m) = self.members.get_mut(&id) {
                m.last_seen = now;
                if let Some(w) = m.join_waiter.take() {
                    let _ = w.send(result);
                }
            }
        }
    }

    fn remove_member(&mut self, id: &str) {
        if let Some(mut m) = self.members.remove(id) {
            if let Some(i) = &m.instance_id
                && self.static_members.get(i).is_some_and(|v| v == id)
            {
                self.static_members.remove(i);
            }
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(JoinResult::error(ResponseError::UnknownMemberId, id));
            }
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(SyncResult::error(ResponseError::UnknownMemberId));
            }
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
    }

    /// Checks a member's identity and generation, as every request after JoinGroup does.
    fn check_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        if let Some(i) = instance_id
            && self.static_members.get(i).is_some_and(|id| id != member_id)
        {
            return Err(ResponseError::FencedInstanceId);
        }
        if !self.members.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        Ok(())
    }

    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> Reply<SyncResult> {
        if self.abandoned {
            return Reply::Now(SyncResult::error(ResponseError::NotCoordinator));
        }
        if let Err(e) = self.check_member(member_id, instance_id, generation) {
            return Reply::Now(SyncResult::error(e));
        }
        match self.state {
            State::Empty => Reply::Now(SyncResult::error(ResponseError::UnknownMemberId)),
            State::PreparingRebalance => {
                Reply::Now(SyncResult::error(ResponseError::RebalanceInProgress))
            }
            State::Stable => {
                let m = &self.members[member_id];
                Reply::Now(self.sync_ok(m.assignment.clone()))
            }
            State::CompletingRebalance => {
                if let Some(m) = self.members.get_mut(member_id) {
                    m.last_seen = now;
                }
                if self.leader.as_deref() != Some(member_id) {
                    let (tx, rx) = oneshot::channel();
                    if let Some(m) = self.members.get_mut(member_id) {
                        m.sync_waiter = Some(tx);
                    }
                    return Reply::Later(rx);
                }
                let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                let ids: Vec<String> = self.members.keys().cloned().collect();
                for id in &ids {
                    let a = given.remove(id).unwrap_or_default();
                    let ok = self.sync_ok(a.clone());
                    if let Some(m) = self.members.get_mut(id) {
                        m.assignment = a;
                        if let Some(w) = m.sync_waiter.take() {
                            let _ = w.send(ok);
                        }
                    }
                }
                self.state = State::Stable;
                self.dirty = true;
                tracing::debug!(group = %self.id, generation = self.generation, unassigned = ?given.keys().collect::<Vec<_>>(), "group stable");
                Reply::Now(self.sync_ok(self.members[member_id].assignment.clone()))
            }
        }
    }

    fn sync_ok(&self, assignment: Bytes) -> SyncResult {
        SyncResult {
            error: None,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            assignment,
        }
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Option<ResponseError> {
        if self.abandoned {
            return Some(ResponseError::NotCoordinator);
        }
        if let Err(e) = self.check_member(member_id, instance_id, generation) {
            return Some(e);
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_seen = now;
        }
        match self.state {
            State::PreparingRebalance => Some(ResponseError::RebalanceInProgress),
            State::Empty => Some(ResponseError::UnknownMemberId),
            State::CompletingRebalance | State::Stable => None,
        }
    }

    /// LeaveGroup for one member, named by id, by instance id, or both.
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        limits: &Limits,
        now: Instant,
    ) -> Option<ResponseError> {
        let id = match instance_id {
            Some(i) => match self.static_members.get(i) {
                Some(id) if member_id.is_empty() || id == member_id => id.clone(),
                Some(_) => return Some(ResponseError::FencedInstanceId),
                None => return Some(ResponseError::UnknownMemberId),
            },
            None => member_id.to_string(),
        };
        if !self.members.contains_key(&id) {
            return Some(ResponseError::UnknownMemberId);
        }
        self.remove_member(&id);
        self.membership_changed(limits, now);
        None
    }

    fn membership_changed(&mut self, limits: &Limits, now: Instant) {
        self.dirty = true;
        if self.members.is_empty() && self.state != State::PreparingRebalance {
            self.state = State::Empty;
            self.generation += 1;
            self.protocol = None;
            self.leader = None;
            return;
        }
        self.prepare_rebalance(limits, now);
        self.try_complete_join(now);
    }

    /// The next moment [`Group::tick`] has something to do: a member's session runs out,
    /// a rebalance reaches its deadline, or a new group's initial delay ends. Members
    /// waiting in a join are kept alive by it, as Kafka keeps them.
    pub fn next_deadline(&self) -> Option<Instant> {
        let sessions = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none())
            .map(|m| m.last_seen + m.session_timeout);
        let rebalance = [self.rebalance_deadline, self.earliest_completion]
            .into_iter()
            .flatten()
            .filter(|_| self.state == State::PreparingRebalance);
        sessions.chain(rebalance).min()
    }

    /// Expires members whose session ran out and moves a rebalance past its deadline.
    pub fn tick(&mut self, limits: &Limits, now: Instant) {
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none() && now >= m.last_seen + m.session_timeout)
            .map(|m| m.id.clone())
            .collect();
        if !expired.is_empty() {
            for id in &expired {
                tracing::info!(group = %self.id, member = %id, "member session expired");
                self.remove_member(id);
            }
            self.membership_changed(limits, now);
        }
        self.try_complete_join(now);
    }

    /// OffsetCommit's membership rules: commits from outside the group only while it is
    /// empty; from members only for the current generation and outside a rebalance's
    /// completion.
    pub fn check_commit(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Option<ResponseError> {
        if self.abandoned {
            return Some(ResponseError::NotCoordinator);
        }
        if generation < 0 && member_id.is_empty() {
            return (!self.members.is_empty()).then_some(ResponseError::UnknownMemberId);
        }
        if let Err(e) = self.check_member(member_id, instance_id, generation) {
            return Some(e);
        }
        (self.state == State::CompletingRebalance).then_some(ResponseError::RebalanceInProgress)
    }

    /// Tells every waiting member the group moved away from this gateway.
    pub fn abandon(&mut self) {
        self.abandoned = true;
        for m in self.members.values_mut() {
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(JoinResult::error(ResponseError::NotCoordinator, &m.id));
            }
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(SyncResult::error(ResponseError::NotCoordinator));
            }
        }
    }
}

#[cfg(test)]
mod tests;
