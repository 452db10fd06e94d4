//! The compactor: committed WAL objects into Parquet segments, retention, and removal of
//! what nothing needs any more.
//!
//! Every pass (each interval, and at once when commits take the uncompacted data over its
//! budget): publish segments a crashed compactor committed but did not publish; for each
//! partition this compactor is assigned, compact while a trigger says so, merge runs of
//! small segments, and apply retention. Beside the passes, on its own interval, the leader
//! (the live compactor with the smallest id) sweeps the bucket and checkpoints the log
//! state. Compactors register under a lease; partitions are
//! assigned to the live ones by rendezvous hashing, so each partition usually has one
//! compactor, and the compare on the partition's compaction key makes sure that even when
//! two try, only one commits a range.

mod compact;
mod gc;
mod metrics;
pub mod plan;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use object_store::ObjectStore;
use sluice_cache::RangeCache;
use sluice_metadata::follower::Log;
use sluice_metadata::records::{LOG_START_VERSION, LogStartRecord, SegmentRecord, TopicRecord};
use sluice_metadata::topic_configs::{
    self, RETENTION_BYTES, RETENTION_MS, SEGMENT_BYTES, SEGMENT_MS,
};
use sluice_metadata::{LeaseId, MetaError, Revision, SharedStore, Txn, TxnOp, keys};
use sluice_storage::naming;
use sluice_storage::segment::SegmentOptions;
use tokio_util::sync::CancellationToken;

pub use compact::CompactError;
pub use gc::Swept;

use crate::plan::{Trigger, next_merge, next_segment, relieve, retention_start};

/// How the compactor works. Defaults aim at segments of about 128 MiB on busy
/// partitions, at most ten minutes of uncompacted data on quiet ones, and at most 128 MiB
/// of uncompacted data in all, so that reads of older data find it in segments.
#[derive(Debug, Clone)]
pub struct CompactorConfig {
    /// This compactor's id among the live ones.
    pub node: String,
    /// Compact data once it is this old, even if a segment is not full (a topic's
    /// `segment.ms` can make it shorter).
    pub max_age: Duration,
    /// Compact a partition once this many index entries wait.
    pub max_entries: usize,
    /// WAL bytes per segment; `None`: each topic's `segment.bytes`. Segments under an
    /// eighth of it are small: runs of them are merged.
    pub target_bytes: Option<u64>,
    /// WAL bytes the partitions assigned to this compactor may hold uncompacted: past it,
    /// everything waiting is compacted at once, oldest first, whatever the triggers. Keep
    /// it within half the gateways' cache, which then serves every read of data not yet in
    /// segments.
    pub max_wal_bytes: u64,
    /// How often a pass runs.
    pub interval: Duration,
    /// How often the leader checkpoints the log state.
    pub checkpoint_interval: Duration,
    /// Objects written but never committed are deleted once this old.
    pub orphan_age: Duration,
    /// Objects nothing references are deleted this long after (in-flight reads finish).
    pub delete_delay: Duration,
    pub lease_ttl: Duration,
    pub segment: SegmentOptions,
}

impl Default for CompactorConfig {
    fn default() -> Self {
        Self {
            node: uuid::Uuid::new_v4().simple().to_string(),
            max_age: Duration::from_secs(600),
            max_entries: 10_000,
            target_bytes: None,
            max_wal_bytes: 128 << 20,
            interval: Duration::from_secs(10),
            checkpoint_interval: Duration::from_secs(60),
            orphan_age: Duration::from_secs(900),
            delete_delay: Duration::from_secs(60),
            lease_ttl: Duration::from_secs(10),
            segment: SegmentOptions::default(),
        }
    }
}

pub(crate) struct Inner {
    config: CompactorConfig,
    store: SharedStore,
    objects: Arc<dyn ObjectStore>,
    /// WAL chunks are read through it: in `sluice serve` it is the gateway's, which holds
    /// the tail of the log already.
    cache: Arc<RangeCache>,
    log: Arc<Log>,
    /// One pass at a time.
    running: tokio::sync::Mutex<()>,
    /// One sweep at a time; sweeps run beside compaction passes, so a slow listing of a
    /// large bucket never holds up compaction.
    sweeper: tokio::sync::Mutex<gc::Sweeper>,
    /// WAL objects compaction saw referenced since the last sweep took them.
    referenced: Mutex<Vec<String>>,
    last_checkpoint: Mutex<Option<Instant>>,
    /// The live compactors at the last pass: which partitions are this one's.
    members: Mutex<Vec<String>>,
    lease: Mutex<LeaseId>,
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub segments: u64,
    /// Runs of small segments merged.
    pub merges: u64,
    pub records: u64,
    pub published: u64,
    pub log_starts_moved: u64,
    pub swept: Swept,
    pub checkpoint: Option<Revision>,
}

/// A running compactor.
#[derive(Clone)]
pub struct Compactor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Compactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compactor")
            .field("node", &self.inner.config.node)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn register(store: &SharedStore, node: &str, ttl: Duration) -> Result<LeaseId, MetaError> {
    let lease = store.grant_lease(ttl.as_secs().max(1) as i64).await?;
    store
        .txn(Txn {
            success: vec![TxnOp::Put {
                key: keys::compactor(node).into(),
                value: node.to_string().into(),
                lease: Some(lease),
            }],
            ..Txn::default()
        })
        .await?;
    Ok(lease)
}

impl Compactor {
    /// Registers the compactor and starts its passes; stops at `cancel`.
    pub async fn start(
        config: CompactorConfig,
        store: SharedStore,
        objects: Arc<dyn ObjectStore>,
        cache: Arc<RangeCache>,
        log: Arc<Log>,
        cancel: CancellationToken,
    ) -> Result<Self, MetaError> {
        let lease = register(&store, &config.node, config.lease_ttl).await?;
        let inner = Arc::new(Inner {
            config,
            store,
            objects,
            cache,
            log,
            running: tokio::sync::Mutex::new(()),
            sweeper: tokio::sync::Mutex::new(gc::Sweeper::default()),
            referenced: Mutex::new(Vec::new()),
            last_checkpoint: Mutex::new(None),
            members: Mutex::new(Vec::new()),
            lease: Mutex::new(lease),
        });
        tokio::spawn(keep_alive(inner.clone(), cancel.clone()));
        tokio::spawn(run(inner.clone(), cancel.clone()));
        tokio::spawn(run_sweeps(inner.clone(), cancel));
        tracing::info!(node = %inner.config.node, "compactor started");
        Ok(Self { inner })
    }

    /// Compacts everything committed so far (of `topic`, or of every topic), whatever the
    /// triggers say, applies retention, sweeps and checkpoints; returns when done.
    pub async fn compact_now(&self, topic: Option<&str>) -> Result<Report, CompactError> {
        pass(&self.inner, Some(Force { topic })).await
    }
}

async fn keep_alive(inner: Arc<Inner>, cancel: CancellationToken) {
    let every = inner.config.lease_ttl / 3;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => {
                let lease = *inner.lease.lock().unwrap_or_else(|e| e.into_inner());
                let _ = inner.store.revoke_lease(lease).await;
                return;
            }
            _ = tokio::time::sleep(every) => {}
        }
        let lease = *inner.lease.lock().unwrap_or_else(|e| e.into_inner());
        match inner.store.keep_alive(lease).await {
            Ok(()) => {}
            Err(MetaError::LeaseNotFound(_)) => {
                match register(&inner.store, &inner.config.node, inner.config.lease_ttl).await {
                    Ok(l) => *inner.lease.lock().unwrap_or_else(|e| e.into_inner()) = l,
                    Err(e) => tracing::warn!(error = %e, "re-registering the compactor failed"),
                }
            }
            Err(e) => tracing::warn!(error = %e, "compactor lease keep-alive failed"),
        }
    }
}

async fn run(inner: Arc<Inner>, cancel: CancellationToken) {
    let mut interval = tokio::time::interval(inner.config.interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut applied = inner.log.subscribe();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = interval.tick() => {}
            _ = over_budget(&inner, &mut applied) => {}
        }
        let pass = tokio::select! {
            _ = cancel.cancelled() => return,
            r = pass(&inner, None) => r,
        };
        if let Err(e) = pass {
            metrics::PASS_ERRORS.inc();
            tracing::warn!(error = %e, "compaction pass failed; retrying on the next one");
        }
    }
}

/// How often, at most, commits are looked at for the uncompacted data's size: they come by
/// the thousand per second, and summing it each time would be waste.
const BUDGET_CHECK_EVERY: Duration = Duration::from_millis(200);

/// WAL bytes waiting for compaction in the partitions assigned to this compactor (among
/// the live compactors of its last pass).
fn waiting_bytes(inner: &Inner) -> u64 {
    let members = inner
        .members
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let me = inner.config.node.as_str();
    inner.log.read(|s| {
        let mut total = 0;
        for t in s.topics() {
            for (p, log) in t.partitions.iter().enumerate() {
                if owner(&members, &t.record.id, p as u32) == Some(me) {
                    total += log.wal_bytes();
                }
            }
        }
        metrics::WAITING_BYTES.set(i64::try_from(total).unwrap_or(i64::MAX));
        total
    })
}

/// Returns once commits have taken the uncompacted data past the budget.
async fn over_budget(inner: &Inner, applied: &mut tokio::sync::watch::Receiver<Revision>) {
    loop {
        if applied.changed().await.is_err() {
            // The log stopped following: only the interval starts passes now.
            return std::future::pending().await;
        }
        if waiting_bytes(inner) > inner.config.max_wal_bytes {
            return;
        }
        tokio::time::sleep(BUDGET_CHECK_EVERY).await;
    }
}

/// A pass asked for by an operator: compact everything, not just what is due.
struct Force<'a> {
    topic: Option<&'a str>,
}

/// Live compactors, sorted.
async fn members(inner: &Inner) -> Result<Vec<String>, MetaError> {
    let r = inner
        .store
        .range(keys::COMPACTORS_PREFIX.as_bytes(), None)
        .await?;
    let mut ids: Vec<String> = r
        .kvs
        .iter()
        .filter_map(|kv| {
            let k = std::str::from_utf8(&kv.key).ok()?;
            Some(k.strip_prefix(keys::COMPACTORS_PREFIX)?.to_string())
        })
        .collect();
    ids.sort();
    Ok(ids)
}

/// Rendezvous hashing: the member with the highest score for a partition owns it.
fn owner<'a>(members: &'a [String], topic: &uuid::Uuid, partition: u32) -> Option<&'a str> {
    members
        .iter()
        .max_by_key(|m| crc32c::crc32c(format!("{m}/{topic}/{partition}").as_bytes()))
        .map(String::as_str)
}

/// One unit of work: a partition, and with a forced pass, the offset to compact up to.
struct Work {
    topic: TopicRecord,
    partition: u32,
    force_until: Option<i64>,
}

async fn pass(inner: &Inner, force: Option<Force<'_>>) -> Result<Report, CompactError> {
    let running = inner.running.lock().await;
    gc::sync_log(inner).await?;
    let now = now_ms();
    let members = members(inner).await?;
    members.clone_into(&mut inner.members.lock().unwrap_or_else(|e| e.into_inner()));
    let me = inner.config.node.as_str();
    let mut report = Report::default();

    let pending: Vec<SegmentRecord> = inner.log.read(|s| {
        s.topics()
            .flat_map(|t| t.partitions.iter())
            .flat_map(|p| p.segments.iter())
            .filter(|seg| seg.staging.is_some())
            .cloned()
            .collect()
    });
    for seg in pending {
        compact::publish(inner, &seg).await?;
        report.published += 1;
    }

    let work = inner.log.read(|s| {
        let mut work = Vec::new();
        let mut waiting = Vec::new();
        for t in s.topics() {
            for (p, log) in t.partitions.iter().enumerate() {
                let p = p as u32;
                let force_until = match &force {
                    Some(f) if f.topic.is_none_or(|n| n == t.record.name) => {
                        Some(log.high_watermark)
                    }
                    Some(_) => continue,
                    None if owner(&members, &t.record.id, p) != Some(me) => continue,
                    None => None,
                };
                let oldest = log
                    .entries
                    .first()
                    .and_then(|e| naming::created_ms(&e.object))
                    .unwrap_or(i64::MAX);
                waiting.push(((work.len(), log.high_watermark), oldest, log.wal_bytes()));
                work.push(Work {
                    topic: t.record.clone(),
                    partition: p,
                    force_until,
                });
            }
        }
        // Over budget: every partition compacts everything it holds now.
        for (i, high_watermark) in relieve(waiting, inner.config.max_wal_bytes) {
            let w: &mut Work = &mut work[i];
            w.force_until = w.force_until.or(Some(high_watermark));
        }
        work
    });
    let mut failed = None;
    for w in work {
        // One partition's trouble (an unreadable object, say) must not hold up the others.
        match compact_partition(inner, &w, now, &mut report).await {
            // This compactor saw those objects referenced: the sweep may delete them once
            // nothing references them any more, without waiting for the orphan age.
            Ok(compacted) => inner
                .referenced
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(compacted),
            Err(e) => {
                metrics::PASS_ERRORS.inc();
                tracing::warn!(topic = %w.topic.name, partition = w.partition, error = %e, "compacting a partition failed");
                failed = Some(e);
                continue;
            }
        }
        retain(inner, &w, now, &mut report).await?;
    }
    // The gauge, as this pass leaves it.
    waiting_bytes(inner);
    if let Some(e) = failed
        && force.is_some()
    {
        // Asked to compact everything: say it did not.
        return Err(e);
    }

    drop(running);
    if force.is_some() {
        let (swept, checkpoint) = sweep(inner, true).await?;
        report.swept = swept;
        report.checkpoint = checkpoint;
    }
    Ok(report)
}

/// Sweeps every interval, on the leader (the live compactor with the smallest id).
async fn run_sweeps(inner: Arc<Inner>, cancel: CancellationToken) {
    let mut interval = tokio::time::interval(inner.config.interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = interval.tick() => {}
        }
        let leader = match members(&inner).await {
            Ok(m) => m.first() == Some(&inner.config.node),
            Err(e) => {
                tracing::warn!(error = %e, "listing compactors failed; sweeping on the next tick");
                continue;
            }
        };
        if !leader {
            continue;
        }
        let swept = tokio::select! {
            _ = cancel.cancelled() => return,
            r = sweep(&inner, false) => r,
        };
        if let Err(e) = swept {
            metrics::PASS_ERRORS.inc();
            tracing::warn!(error = %e, "sweep failed; retrying on the next one");
        }
    }
}

/// Sweeps the bucket, and checkpoints the log state when due (or `forced`).
async fn sweep(inner: &Inner, forced: bool) -> Result<(Swept, Option<Revision>), CompactError> {
    let mut sweeper = inner.sweeper.lock().await;
    let seen = std::mem::take(&mut *inner.referenced.lock().unwrap_or_else(|e| e.into_inner()));
    sweeper.saw_referenced(seen);
    let swept = sweeper.sweep(inner, now_ms()).await?;
    let due = inner
        .last_checkpoint
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_none_or(|t| t.elapsed() >= inner.config.checkpoint_interval);
    let mut checkpoint = None;
    if due || forced {
        checkpoint = gc::checkpoint(inner).await?;
        *inner
            .last_checkpoint
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }
    Ok((swept, checkpoint))
}

/// Compacts one partition while a trigger says so; returns the WAL objects it read.
async fn compact_partition(
    inner: &Inner,
    w: &Work,
    now: i64,
    report: &mut Report,
) -> Result<Vec<String>, CompactError> {
    let mut objects = Vec::new();
    let target = inner
        .config
        .target_bytes
        .unwrap_or_else(|| topic_configs::config_i64(&w.topic, SEGMENT_BYTES).max(1) as u64);
    let segment_ms = topic_configs::config_i64(&w.topic, SEGMENT_MS).max(1);
    let trigger = Trigger {
        target_bytes: target,
        max_age_ms: (inner.config.max_age.as_millis() as i64).min(segment_ms),
        max_entries: inner.config.max_entries.max(1),
    };
    loop {
        let plan = inner.log.read(|s| {
            let log = s.partition(&w.topic.id, w.partition)?;
            let n = next_segment(&log.entries, &trigger, now, w.force_until)?;
            Some(log.entries[..n].to_vec())
        });
        let Some(entries) = plan else {
            break;
        };
        let Some(done) = compact::compact_range(inner, &w.topic, w.partition, &entries).await?
        else {
            return Ok(objects);
        };
        objects.extend(entries.iter().map(|e| e.object.to_string()));
        report.segments += 1;
        report.records += done.records;
        if !inner
            .log
            .wait_for(done.revision, Duration::from_secs(30))
            .await
        {
            return Err(CompactError::Lagging(done.revision));
        }
    }
    loop {
        let plan = inner.log.read(|s| {
            let log = s.partition(&w.topic.id, w.partition)?;
            let run = next_merge(&log.segments, target / 8, now)?;
            Some(log.segments[run].to_vec())
        });
        let Some(members) = plan else {
            return Ok(objects);
        };
        let Some(done) = compact::merge_range(inner, &w.topic, w.partition, &members).await? else {
            return Ok(objects);
        };
        report.merges += 1;
        if !inner
            .log
            .wait_for(done.revision, Duration::from_secs(30))
            .await
        {
            return Err(CompactError::Lagging(done.revision));
        }
    }
}

async fn retain(
    inner: &Inner,
    w: &Work,
    now: i64,
    report: &mut Report,
) -> Result<(), CompactError> {
    if !topic_configs::deletes_by_retention(&w.topic) {
        return Ok(());
    }
    let ms = topic_configs::config_i64(&w.topic, RETENTION_MS);
    let bytes = topic_configs::config_i64(&w.topic, RETENTION_BYTES);
    let start = inner.log.read(|s| {
        let log = s.partition(&w.topic.id, w.partition)?;
        retention_start(log, ms, bytes, now)
    });
    let Some(offset) = start else {
        return Ok(());
    };
    let record = LogStartRecord {
        v: LOG_START_VERSION,
        offset,
    };
    inner
        .store
        .txn(Txn {
            success: vec![TxnOp::put(
                keys::log_start(&w.topic.id, w.partition),
                record.encode(),
            )],
            ..Txn::default()
        })
        .await?;
    metrics::RETENTION_MOVES.inc();
    report.log_starts_moved += 1;
    tracing::info!(topic = %w.topic.name, partition = w.partition, offset, "retention moved the log start");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_spread_over_compactors_and_move_only_from_one_that_leaves() {
        let three: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let two: Vec<String> = ["a", "c"].map(String::from).to_vec();
        let topic = uuid::Uuid::from_u128(1);
        let mut counts = std::collections::HashMap::new();
        for p in 0..300 {
            let before = owner(&three, &topic, p).expect("owner");
            *counts.entry(before).or_insert(0) += 1;
            let after = owner(&two, &topic, p).expect("owner");
            if before != "b" {
                assert_eq!(before, after, "partition {p} moved without need");
            }
        }
        assert!(counts.values().all(|n| *n > 50), "{counts:?}");
        assert_eq!(owner(&[], &topic, 0), None);
    }
}
