//! The embedded backend: the whole store in process memory, every write appended to a
//! local file and fsynced before it is applied or acknowledged.
//!
//! File format (version 1): the 8 bytes `SLUICEMD`, a `u16` version, then records, each
//! `[u32 payload length][u32 CRC-32C of payload][payload]`. A torn record at the end of
//! the file (a crash mid-append) is cut off on open; a bad record anywhere else is
//! corruption. On open, once the log holds much more than the live data, it is rewritten
//! as one snapshot record (to a temporary file, then renamed).

mod codec;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::store::*;
use codec::{LogRecord, PersistOp};

/// How many events the store keeps for watches that start in the past.
const HISTORY_EVENTS: usize = 200_000;
/// How often expired leases are looked for.
const LEASE_TICK: Duration = Duration::from_millis(200);

/// An etcd-like store inside the process. Cloning shares the same store.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Mutex<Inner>>,
    /// Group commit: one fsync makes every record appended before it durable, so
    /// concurrent writers share fsyncs instead of queueing for one each.
    syncer: Option<Arc<Syncer>>,
}

struct Syncer {
    /// Records known durable; held while fsyncing, so one writer syncs for all.
    synced: Mutex<u64>,
    file: File,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").finish_non_exhaustive()
    }
}

struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: BTreeSet<Bytes>,
}

struct HistoryEntry {
    event: WatchEvent,
    /// The key's value before this event, so ranges at past revisions can undo it.
    prev: Option<KeyValue>,
}

struct Watcher {
    prefix: Bytes,
    /// Events before this revision were already in the state the watcher started from
    /// (they may still be on their way to durability when it registers).
    start: Revision,
    tx: mpsc::UnboundedSender<MetaResult<WatchEvent>>,
}

struct Inner {
    kvs: BTreeMap<Bytes, KeyValue>,
    revision: Revision,
    /// History holds every event with a revision above this one.
    compacted: Revision,
    history: VecDeque<HistoryEntry>,
    watchers: Vec<Watcher>,
    leases: HashMap<i64, Lease>,
    next_lease: i64,
    file: Option<File>,
    /// Records appended to the file so far (not all of them fsynced yet).
    written: u64,
    /// Events of records appended but not yet fsynced, by record number: watchers see an
    /// event only once it is durable.
    pending: VecDeque<(u64, Vec<HistoryEntry>)>,
    /// Set when a write to the file failed: the file and memory may disagree, so the store
    /// refuses everything until it is reopened.
    failed: Option<String>,
}

impl EmbeddedStore {
    /// A store that lives only in memory (tests, and `memory://` metadata).
    pub fn in_memory() -> Self {
        Self::from_inner(Inner::empty(), None)
    }

    /// Opens (or creates) the store persisted in `dir`.
    pub fn open(dir: &Path) -> MetaResult<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("store.log");
        let mut inner = Inner::empty();
        let mut log_bytes = 0u64;
        if path.exists() {
            let (records, valid_len) = codec::read_log(&path)?;
            for record in records {
                inner.replay(record)?;
            }
            log_bytes = valid_len;
            // Cut off a torn tail so appends continue from a clean record boundary.
            let f = OpenOptions::new().write(true).open(&path)?;
            f.set_len(valid_len)?;
            f.sync_all()?;
        }
        let live: usize = inner
            .kvs
            .values()
            .map(|kv| kv.key.len() + kv.value.len() + 48)
            .sum();
        if log_bytes == 0 || log_bytes > 4 * live as u64 + (16 << 20) {
            codec::write_snapshot(&path, &inner.snapshot())?;
        }
        let file = OpenOptions::new().append(true).open(&path)?;
        let syncer = Arc::new(Syncer {
            synced: Mutex::new(0),
            file: file.try_clone()?,
        });
        inner.file = Some(file);
        // The store lives in one process, so whoever held a lease died with the previous
        // one: its leases end now (deleting their keys), instead of lingering for a TTL.
        let stale: Vec<i64> = inner.leases.keys().copied().collect();
        for id in stale {
            inner.persist_and_apply(LogRecord::LeaseRevoke { id })?;
        }
        let store = Self::from_inner(inner, Some(syncer));
        let written = store.lock()?.written;
        store.sync_to(written)?;
        Ok(store)
    }

    fn from_inner(inner: Inner, syncer: Option<Arc<Syncer>>) -> Self {
        let inner = Arc::new(Mutex::new(inner));
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(expire_leases(Arc::downgrade(&inner), syncer.clone()));
        }
        Self { inner, syncer }
    }

    /// Blocks until record `seq` (and every one before it) is fsynced, then lets watchers
    /// see their events. Must not be called with the inner lock held.
    fn sync_to(&self, seq: u64) -> MetaResult<()> {
        sync_to(&self.inner, self.syncer.as_deref(), seq)
    }

    fn lock(&self) -> MetaResult<MutexGuard<'_, Inner>> {
        lock(&self.inner)
    }

    /// Runs a write on a blocking thread: it fsyncs.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Inner) -> MetaResult<T> + Send + 'static,
    ) -> MetaResult<T> {
        let inner = self.inner.clone();
        let syncer = self.syncer.clone();
        tokio::task::spawn_blocking(move || {
            let (value, seq) = {
                let mut g = lock(&inner)?;
                let value = f(&mut g)?;
                (value, g.written)
            };
            sync_to(&inner, syncer.as_deref(), seq)?;
            Ok(value)
        })
        .await
        .map_err(|e| MetaError::Unavailable(format!("metadata write task failed: {e}")))?
    }
}

fn sync_to(inner: &Mutex<Inner>, syncer: Option<&Syncer>, seq: u64) -> MetaResult<()> {
    let Some(syncer) = syncer else { return Ok(()) };
    if seq == 0 {
        return Ok(());
    }
    let mut synced = syncer
        .synced
        .lock()
        .map_err(|_| MetaError::Unavailable("embedded store sync lock poisoned".into()))?;
    if *synced >= seq {
        return Ok(());
    }
    // Everything appended so far becomes durable with this one fsync.
    let target = lock(inner)?.written;
    if let Err(e) = syncer.file.sync_data() {
        lock(inner)?.failed = Some(e.to_string());
        return Err(e.into());
    }
    *synced = target;
    let mut g = lock(inner)?;
    while g.pending.front().is_some_and(|(s, _)| *s <= target) {
        if let Some((_, events)) = g.pending.pop_front() {
            g.publish(events);
        }
    }
    Ok(())
}

fn lock(inner: &Mutex<Inner>) -> MetaResult<MutexGuard<'_, Inner>> {
    let g = inner
        .lock()
        .map_err(|_| MetaError::Unavailable("embedded store lock poisoned".into()))?;
    if let Some(reason) = &g.failed {
        return Err(MetaError::Unavailable(format!(
            "embedded store failed earlier: {reason}"
        )));
    }
    Ok(g)
}

async fn expire_leases(inner: Weak<Mutex<Inner>>, syncer: Option<Arc<Syncer>>) {
    let mut tick = tokio::time::interval(LEASE_TICK);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let now = Instant::now();
        // Revoking fsyncs, so do it off the async threads.
        let syncer = syncer.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut g = lock(&inner)?;
            let expired: Vec<i64> = g
                .leases
                .iter()
                .filter(|(_, l)| l.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            for id in expired {
                tracing::debug!(lease = id, "embedded lease expired");
                g.persist_and_apply(LogRecord::LeaseRevoke { id })?;
            }
            let seq = g.written;
            drop(g);
            sync_to(&inner, syncer.as_deref(), seq)
        })
        .await;
        if let Ok(Err(e)) = result {
            tracing::warn!(error = %e, "expiring leases failed");
        }
    }
}

impl Inner {
    fn empty() -> Self {
        Self {
            kvs: BTreeMap::new(),
            revision: 0,
            compacted: 0,
            history: VecDeque::new(),
            watchers: Vec::new(),
            leases: HashMap::new(),
            next_lease: 1,
            file: None,
            written: 0,
            pending: VecDeque::new(),
            failed: None,
        }
    }

    fn snapshot(&self) -> LogRecord {
        LogRecord::Snapshot {
            revision: self.revision,
            next_lease: self.next_lease,
            kvs: self.kvs.values().cloned().collect(),
            leases: self
                .leases
                .iter()
                .map(|(id, l)| (*id, l.ttl.as_secs() as i64))
                .collect(),
        }
    }

    /// Applies a record read from the file.
    fn replay(&mut self, record: LogRecord) -> MetaResult<()> {
        match record {
            LogRecord::Snapshot {
                revision,
                next_lease,
                kvs,
                leases,
            } => {
                self.revision = revision;
                self.compacted = revision;
                self.next_lease = next_lease;
                self.kvs = kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
                self.leases = leases
                    .into_iter()
                    .map(|(id, ttl)| (id, new_lease(ttl)))
                    .collect();
                for kv in self.kvs.values() {
                    if let Some(l) = kv.lease
                        && let Some(lease) = self.leases.get_mut(&l.0)
                    {
                        lease.keys.insert(kv.key.clone());
                    }
                }
                Ok(())
            }
            other => self.apply(other),
        }
    }

    /// Appends the record to the file and applies it in memory. It is durable, and its
    /// events reach watchers, once [`EmbeddedStore::sync_to`] has fsynced it.
    fn persist_and_apply(&mut self, record: LogRecord) -> MetaResult<()> {
        let seq = match &mut self.file {
            Some(file) => {
                if let Err(e) = file.write_all(&codec::encode_record(&record)) {
                    self.failed = Some(e.to_string());
                    return Err(e.into());
                }
                self.written += 1;
                self.written
            }
            None => 0,
        };
        self.apply_as(record, seq)
    }

    fn apply(&mut self, record: LogRecord) -> MetaResult<()> {
        self.apply_as(record, 0)
    }

    /// Applies a record; its events are published at once (`seq` 0: nothing to wait for)
    /// or held until record `seq` is fsynced.
    fn apply_as(&mut self, record: LogRecord, seq: u64) -> MetaResult<()> {
        match record {
            LogRecord::Write { revision, ops } => {
                if revision != self.revision + 1 {
                    return Err(MetaError::Corrupt(format!(
                        "write at revision {revision} follows revision {}",
                        self.revision
                    )));
                }
                self.revision = revision;
                let mut events = Vec::new();
                for op in ops {
                    match op {
                        PersistOp::Put { key, value, lease } => {
                            self.apply_put(key, value, lease, &mut events)
                        }
                        PersistOp::Delete { key } => self.apply_delete(&key, &mut events),
                    }
                }
                self.release(events, seq);
            }
            LogRecord::LeaseGrant { id, ttl } => {
                self.leases.insert(id, new_lease(ttl));
                self.next_lease = self.next_lease.max(id + 1);
            }
            LogRecord::LeaseRevoke { id } => {
                if let Some(lease) = self.leases.remove(&id)
                    && !lease.keys.is_empty()
                {
                    self.revision += 1;
                    let mut events = Vec::new();
                    for key in lease.keys {
                        self.apply_delete(&key, &mut events);
                    }
                    self.publish(events);
                }
            }
            LogRecord::Snapshot { .. } => {
                return Err(MetaError::Corrupt(
                    "snapshot record after the start of the log".into(),
                ));
            }
        }
        Ok(())
    }

    fn apply_put(
        &mut self,
        key: Bytes,
        value: Bytes,
        lease: Option<LeaseId>,
        events: &mut Vec<HistoryEntry>,
    ) {
        let prev = self.kvs.get(&key).cloned();
        if let Some(old) = prev.as_ref().and_then(|p| p.lease)
            && Some(old) != lease
            && let Some(l) = self.leases.get_mut(&old.0)
        {
            l.keys.remove(&key);
        }
        if let Some(l) = lease.and_then(|l| self.leases.get_mut(&l.0)) {
            l.keys.insert(key.clone());
        }
        let kv = KeyValue {
            key: key.clone(),
            value,
            create_revision: prev.as_ref().map_or(self.revision, |p| p.create_revision),
            mod_revision: self.revision,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            lease,
        };
        self.kvs.insert(key, kv.clone());
        events.push(HistoryEntry {
            event: WatchEvent {
                kind: EventKind::Put,
                kv,
            },
            prev,
        });
    }

    fn apply_delete(&mut self, key: &Bytes, events: &mut Vec<HistoryEntry>) {
        let Some(prev) = self.kvs.remove(key) else {
            return;
        };
        if let Some(l) = prev.lease.and_then(|l| self.leases.get_mut(&l.0)) {
            l.keys.remove(key);
        }
        events.push(HistoryEntry {
            event: WatchEvent {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key: key.clone(),
                    value: Bytes::new(),
                    create_revision: 0,
                    mod_revision: self.revision,
                    version: 0,
                    lease: None,
                },
            },
            prev: Some(prev),
        });
    }

    fn release(&mut self, events: Vec<HistoryEntry>, seq: u64) {
        if seq == 0 {
            self.publish(events);
        } else {
            self.pending.push_back((seq, events));
        }
    }

    fn publish(&mut self, events: Vec<HistoryEntry>) {
        self.watchers.retain(|w| {
            for e in &events {
                let wanted =
                    e.event.kv.mod_revision >= w.start && e.event.kv.key.starts_with(&w.prefix);
                if wanted && w.tx.send(Ok(e.event.clone())).is_err() {
                    return false;
                }
            }
            true
        });
        self.history.extend(events);
        while self.history.len() > HISTORY_EVENTS {
            // Drop whole revisions only, so history never holds half of a transaction.
            let Some(front) = self.history.front() else {
                break;
            };
            let rev = front.event.kv.mod_revision;
            while self
                .history
                .front()
                .is_some_and(|e| e.event.kv.mod_revision == rev)
            {
                self.history.pop_front();
            }
            self.compacted = rev;
        }
    }

    fn compare(&self, c: &Compare) -> bool {
        let kv = self.kvs.get(&c.key);
        let ord = match &c.target {
            CompareTarget::Version(v) => kv.map_or(0, |kv| kv.version).cmp(v),
            CompareTarget::CreateRevision(r) => kv.map_or(0, |kv| kv.create_revision).cmp(r),
            CompareTarget::ModRevision(r) => kv.map_or(0, |kv| kv.mod_revision).cmp(r),
            CompareTarget::Value(v) => match kv {
                // etcd: a value compare on a missing key is false.
                None => return false,
                Some(kv) => kv.value.cmp(v),
            },
        };
        match c.op {
            CompareOp::Equal => ord.is_eq(),
            CompareOp::NotEqual => ord.is_ne(),
            CompareOp::Greater => ord.is_gt(),
            CompareOp::Less => ord.is_lt(),
        }
    }

    fn txn(&mut self, txn: Txn) -> MetaResult<TxnResult> {
        let succeeded = txn.compares.iter().all(|c| self.compare(c));
        let ops = if succeeded { txn.success } else { txn.failure };
        // As etcd does, refuse a transaction that writes one key twice: the order of such
        // writes would be ambiguous.
        let mut written: BTreeSet<&Bytes> = BTreeSet::new();
        for op in &ops {
            if let TxnOp::Put { key, .. } | TxnOp::Delete { key } = op
                && !written.insert(key)
            {
                return Err(MetaError::Rejected(
                    "duplicate key given in txn request".into(),
                ));
            }
        }
        for op in &ops {
            if let TxnOp::DeletePrefix { prefix } = op
                && written.iter().any(|k| k.starts_with(prefix))
            {
                return Err(MetaError::Rejected(
                    "duplicate key given in txn request".into(),
                ));
            }
        }
        let mut gets = Vec::new();
        let mut persist = Vec::new();
        for op in ops {
            match op {
                TxnOp::Get { key } => gets.push(self.kvs.get(&key).cloned()),
                TxnOp::Put { key, value, lease } => {
                    if let Some(l) = lease
                        && !self.leases.contains_key(&l.0)
                    {
                        return Err(MetaError::LeaseNotFound(l));
                    }
                    persist.push(PersistOp::Put { key, value, lease });
                }
                TxnOp::Delete { key } => {
                    if self.kvs.contains_key(&key) {
                        persist.push(PersistOp::Delete { key });
                    }
                }
                TxnOp::DeletePrefix { prefix } => {
                    let keys = self
                        .kvs
                        .range(prefix.clone()..)
                        .take_while(|(k, _)| k.starts_with(&prefix))
                        .map(|(k, _)| k.clone());
                    persist.extend(keys.map(|key| PersistOp::Delete { key }));
                }
            }
        }
        if !persist.is_empty() {
            let revision = self.revision + 1;
            self.persist_and_apply(LogRecord::Write {
                revision,
                ops: persist,
            })?;
        }
        Ok(TxnResult {
            succeeded,
            revision: self.revision,
            gets,
        })
    }

    fn range(&self, prefix: &[u8], revision: Option<Revision>) -> MetaResult<RangeResult> {
        let prefix = Bytes::copy_from_slice(prefix);
        let mut view: BTreeMap<Bytes, KeyValue> = self
            .kvs
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let at = revision.unwrap_or(self.revision);
        if at > self.revision {
            return Err(MetaError::FutureRevision {
                requested: at,
                current: self.revision,
            });
        }
        if at < self.revision {
            if at < self.compacted {
                return Err(MetaError::Compacted {
                    requested: at,
                    compacted: self.compacted,
                });
            }
            // Undo every later event, newest first: those not yet durable, then history.
            let pending = self
                .pending
                .iter()
                .rev()
                .flat_map(|(_, events)| events.iter().rev());
            for e in pending.chain(self.history.iter().rev()) {
                if e.event.kv.mod_revision <= at {
                    break;
                }
                if !e.event.kv.key.starts_with(&prefix) {
                    continue;
                }
                match &e.prev {
                    Some(p) => view.insert(p.key.clone(), p.clone()),
                    None => view.remove(&e.event.kv.key),
                };
            }
        }
        Ok(RangeResult {
            kvs: view.into_values().collect(),
            revision: at,
        })
    }
}

fn new_lease(ttl: i64) -> Lease {
    let ttl = Duration::from_secs(ttl.max(1) as u64);
    Lease {
        ttl,
        deadline: Instant::now() + ttl,
        keys: BTreeSet::new(),
    }
}

#[async_trait::async_trait]
impl MetaStore for EmbeddedStore {
    async fn get(&self, key: &[u8]) -> MetaResult<Option<KeyValue>> {
        Ok(self.lock()?.kvs.get(key).cloned())
    }

    async fn range(&self, prefix: &[u8], revision: Option<Revision>) -> MetaResult<RangeResult> {
        self.lock()?.range(prefix, revision)
    }

    async fn txn(&self, txn: Txn) -> MetaResult<TxnResult> {
        self.write(move |g| g.txn(txn)).await
    }

    async fn watch(&self, prefix: &[u8], start_revision: Revision) -> MetaResult<WatchStream> {
        let (tx, rx) = mpsc::unbounded_channel();
        let prefix = Bytes::copy_from_slice(prefix);
        let mut g = self.lock()?;
        let start = if start_revision <= 0 {
            g.revision + 1
        } else {
            start_revision
        };
        if start <= g.compacted {
            return Err(MetaError::Compacted {
                requested: start,
                compacted: g.compacted,
            });
        }
        for e in g.history.iter() {
            if e.event.kv.mod_revision >= start && e.event.kv.key.starts_with(&prefix) {
                // The receiver is still in scope: this cannot fail.
                let _ = tx.send(Ok(e.event.clone()));
            }
        }
        g.watchers.push(Watcher { prefix, start, tx });
        Ok(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|e| (e, rx))
        })))
    }

    async fn grant_lease(&self, ttl_seconds: i64) -> MetaResult<LeaseId> {
        self.write(move |g| {
            let id = g.next_lease;
            g.persist_and_apply(LogRecord::LeaseGrant {
                id,
                ttl: ttl_seconds,
            })?;
            Ok(LeaseId(id))
        })
        .await
    }

    async fn keep_alive(&self, lease: LeaseId) -> MetaResult<()> {
        let mut g = self.lock()?;
        let l = g
            .leases
            .get_mut(&lease.0)
            .ok_or(MetaError::LeaseNotFound(lease))?;
        l.deadline = Instant::now() + l.ttl;
        Ok(())
    }

    async fn revoke_lease(&self, lease: LeaseId) -> MetaResult<()> {
        self.write(move |g| {
            if !g.leases.contains_key(&lease.0) {
                return Err(MetaError::LeaseNotFound(lease));
            }
            g.persist_and_apply(LogRecord::LeaseRevoke { id: lease.0 })
        })
        .await
    }

    async fn compact(&self, revision: Revision) -> MetaResult<()> {
        let mut g = self.lock()?;
        if revision > g.revision {
            return Err(MetaError::FutureRevision {
                requested: revision,
                current: g.revision,
            });
        }
        while g
            .history
            .front()
            .is_some_and(|e| e.event.kv.mod_revision <= revision)
        {
            g.history.pop_front();
        }
        g.compacted = g.compacted.max(revision);
        Ok(())
    }
}
