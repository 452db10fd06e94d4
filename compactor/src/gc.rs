//! Removing what nothing needs any more, and keeping metadata bounded.
//!
//! - WAL objects no index entry references: deleted `delete_delay` after this compactor
//!   last saw them referenced (fetches that resolved an entry just before the swap are done
//!   by then), or, if never seen referenced (written but never committed, or compacted
//!   before this process started), once older than `orphan_age`.
//! - Staging objects no segment names: orphans of a compaction that never committed,
//!   deleted once older than `orphan_age`.
//! - Files under the table path no segment names (retention, deleted topics): deleted
//!   `delete_delay` after first seen so.
//! - Checkpoints: the log state is written to the object store; then commit and segment
//!   records at or below its revision leave metadata, and metadata history up to the
//!   previous checkpoint is compacted.
//!
//! Objects are listed before the log is synchronised with metadata, so anything listed
//! was committed (if at all) before the state it is compared with.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use sluice_metadata::records::{CHECKPOINT_POINTER_VERSION, CheckpointPointer};
use sluice_metadata::{Compare, KeyValue, MetaError, Revision, Txn, TxnOp, keys};
use sluice_storage::naming;
use uuid::Uuid;

use crate::compact::CompactError;
use crate::{Inner, metrics};

/// Deletions per metadata transaction (etcd allows 128 operations by default).
const DELETES_PER_TXN: usize = 64;
/// Checkpoint objects kept: the one metadata points to and the one before it, which a
/// gateway that read the older pointer may still be loading.
const CHECKPOINTS_KEPT: usize = 2;

#[derive(Debug, Default)]
struct Seen {
    referenced_before: bool,
    unreferenced_since: Option<Instant>,
}

/// What the sweeper remembers between passes.
#[derive(Debug, Default)]
pub(crate) struct Sweeper {
    seen: HashMap<String, Seen>,
}

/// What an unneeded object is.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Wal,
    Staging,
    Segment,
}

/// What one sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub wal_objects: u64,
    pub staging_objects: u64,
    pub segment_files: u64,
    pub metadata_keys: u64,
}

async fn list(inner: &Inner, prefix: &str) -> Result<Vec<Path>, CompactError> {
    let prefix = Path::from(prefix);
    let metas: Vec<_> = inner.objects.list(Some(&prefix)).try_collect().await?;
    Ok(metas.into_iter().map(|m| m.location).collect())
}

/// Waits until this process's log has applied everything metadata holds now: writes a
/// barrier key under the log prefix (bound to the compactor's lease) and waits until the
/// log has applied it. (The store's current revision would not do: it may belong to a
/// key outside the log, which the log never sees.)
pub(crate) async fn sync_log(inner: &Inner) -> Result<(), CompactError> {
    let lease = *inner.lease.lock().unwrap_or_else(|e| e.into_inner());
    let r = inner
        .store
        .txn(Txn {
            success: vec![TxnOp::Put {
                key: keys::barrier(&inner.config.node).into(),
                value: bytes::Bytes::new(),
                lease: Some(lease),
            }],
            ..Txn::default()
        })
        .await?;
    let rev = r.revision;
    if inner.log.wait_for(rev, Duration::from_secs(30)).await {
        Ok(())
    } else {
        Err(CompactError::Lagging(rev))
    }
}

fn older_than(path: &Path, age: Duration, now_ms: i64) -> bool {
    naming::created_ms(path.as_ref()).is_some_and(|t| now_ms - t >= age.as_millis() as i64)
}

impl Sweeper {
    /// Notes objects seen referenced by the index (and so committed).
    pub(crate) fn saw_referenced(&mut self, objects: impl IntoIterator<Item = String>) {
        for o in objects {
            self.seen.entry(o).or_default().referenced_before = true;
        }
    }

    /// One pass over the bucket.
    pub(crate) async fn sweep(
        &mut self,
        inner: &Inner,
        now_ms: i64,
    ) -> Result<Swept, CompactError> {
        let wal = list(inner, naming::WAL_PREFIX).await?;
        let staging = list(inner, naming::STAGING_PREFIX).await?;
        let tables = list(inner, naming::TOPICS_PREFIX).await?;
        sync_log(inner).await?;
        let (wal_refs, staging_refs, table_refs) = inner.log.read(|s| {
            let mut w = HashSet::new();
            let mut st = HashSet::new();
            let mut t = HashSet::new();
            for topic in s.topics() {
                for p in &topic.partitions {
                    w.extend(p.entries.iter().map(|e| e.object.to_string()));
                    for seg in &p.segments {
                        t.insert(seg.path.clone());
                        if let Some(x) = &seg.staging {
                            st.insert(x.clone());
                        }
                    }
                }
            }
            (w, st, t)
        });
        let delay = inner.config.delete_delay;
        let orphan = inner.config.orphan_age;
        let mut out = Swept::default();
        let mut listed = HashSet::new();
        let mut doomed = Vec::new();
        for p in &wal {
            let key = p.to_string();
            listed.insert(key.clone());
            let seen = self.seen.entry(key.clone()).or_default();
            if wal_refs.contains(&key) {
                seen.referenced_before = true;
                seen.unreferenced_since = None;
                continue;
            }
            let since = *seen.unreferenced_since.get_or_insert_with(Instant::now);
            let compacted = seen.referenced_before && since.elapsed() >= delay;
            if compacted || older_than(p, orphan, now_ms) {
                doomed.push((p.clone(), Kind::Wal));
            }
        }
        for p in &staging {
            if !staging_refs.contains(p.as_ref()) && older_than(p, orphan, now_ms) {
                doomed.push((p.clone(), Kind::Staging));
            }
        }
        let starts: HashMap<(String, u32), i64> = inner.log.read(|s| {
            s.topics()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .enumerate()
                        .map(|(i, p)| ((t.record.name.clone(), i as u32), p.log_start_offset))
                })
                .collect()
        });
        for p in &tables {
            let key = p.to_string();
            listed.insert(key.clone());
            if table_refs.contains(&key) {
                self.seen.remove(&key);
                continue;
            }
            // Files of a deleted topic, or of an earlier topic of the same name, can serve
            // no read: they go at once, so readers never see them beside the live ones.
            // Files retention removed may still be read by a fetch that began before: they
            // wait for the delay.
            let expired = table_file(&key)
                .and_then(|(topic, partition, base)| {
                    starts.get(&(topic, partition)).map(|start| base < *start)
                })
                .unwrap_or(false);
            let seen = self.seen.entry(key).or_default();
            let since = *seen.unreferenced_since.get_or_insert_with(Instant::now);
            if !expired || since.elapsed() >= delay {
                doomed.push((p.clone(), Kind::Segment));
            }
        }
        // Forget what is gone from the bucket.
        self.seen.retain(|k, _| listed.contains(k));
        for (p, kind) in doomed {
            match inner.objects.delete(&p).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    tracing::warn!(object = %p, error = %e, "deleting an unneeded object failed");
                    continue;
                }
            }
            self.seen.remove(p.as_ref());
            let (label, count) = match kind {
                Kind::Wal => ("wal", &mut out.wal_objects),
                Kind::Staging => ("staging", &mut out.staging_objects),
                Kind::Segment => ("segment", &mut out.segment_files),
            };
            *count += 1;
            metrics::DELETED.with_label_values(&[label]).inc();
            tracing::debug!(object = %p, kind = label, "deleted");
        }
        out.metadata_keys = forget_deleted_topics(inner).await?;
        Ok(out)
    }
}

/// Topic, partition and first offset of a table file:
/// `topics/<topic>/partition=<n>/date=<day>/<base offset>-<id>.parquet`.
fn table_file(path: &str) -> Option<(String, u32, i64)> {
    let mut parts = path.split('/');
    let _ = parts.next()?;
    let topic = parts.next()?.to_string();
    let partition = parts.next()?.strip_prefix("partition=")?.parse().ok()?;
    let name = path.rsplit('/').next()?;
    let base = name.split('-').next()?.parse().ok()?;
    Some((topic, partition, base))
}

/// The topic id a per-partition key belongs to: `<prefix><topic id>/...`.
fn topic_of(key: &[u8], prefix: &str) -> Option<Uuid> {
    let rest = std::str::from_utf8(key).ok()?.strip_prefix(prefix)?;
    Uuid::try_parse(rest.split('/').next()?).ok()
}

/// Removes the per-partition keys of topics that no longer exist.
async fn forget_deleted_topics(inner: &Inner) -> Result<u64, CompactError> {
    let live: HashSet<Uuid> = inner
        .log
        .read(|s| s.topics().map(|t| t.record.id).collect());
    let mut dead = HashSet::new();
    for prefix in [
        keys::COMPACTION_PREFIX,
        keys::STARTS_PREFIX,
        keys::SEGMENTS_PREFIX,
    ] {
        for kv in inner.store.range(prefix.as_bytes(), None).await?.kvs {
            if let Some(id) = topic_of(&kv.key, prefix).filter(|id| !live.contains(id)) {
                dead.insert((prefix, id));
            }
        }
    }
    let n = dead.len() as u64;
    for (prefix, id) in dead {
        inner
            .store
            .txn(Txn {
                success: vec![TxnOp::DeletePrefix {
                    prefix: format!("{prefix}{}/", id.simple()).into(),
                }],
                ..Txn::default()
            })
            .await?;
    }
    Ok(n)
}

/// Writes a checkpoint of the log state if it moved since the last one, then removes the
/// commit and segment records it holds. Returns the checkpoint's revision.
pub(crate) async fn checkpoint(inner: &Inner) -> Result<Option<Revision>, CompactError> {
    sync_log(inner).await?;
    let current = inner.store.get(keys::CHECKPOINT.as_bytes()).await?;
    let previous = current
        .as_ref()
        .and_then(|kv| CheckpointPointer::decode(&kv.value).ok());
    let (bytes, revision) = inner.log.read(|s| (s.encode_checkpoint(), s.revision()));
    if previous.as_ref().is_some_and(|p| p.revision >= revision) {
        return Ok(None);
    }
    let path = naming::checkpoint_path(revision);
    let size = bytes.len();
    inner.objects.put(&path, bytes.into()).await?;
    let pointer = CheckpointPointer {
        v: CHECKPOINT_POINTER_VERSION,
        revision,
        path: path.to_string(),
    };
    let compare = match &current {
        Some(kv) => Compare::mod_revision(keys::CHECKPOINT, kv.mod_revision),
        None => Compare::absent(keys::CHECKPOINT),
    };
    let r = inner
        .store
        .txn(Txn {
            compares: vec![compare],
            success: vec![TxnOp::put(keys::CHECKPOINT, pointer.encode())],
            failure: vec![],
        })
        .await?;
    if !r.succeeded {
        // Another compactor checkpointed meanwhile; its checkpoint stands.
        let _ = inner.objects.delete(&path).await;
        return Ok(None);
    }
    metrics::CHECKPOINT_BYTES.set(size as i64);
    let removed = remove_checkpointed(inner, revision).await?;
    tracing::info!(
        revision,
        bytes = size,
        removed_keys = removed,
        "checkpoint written"
    );
    // Older checkpoint objects.
    let mut all = list(inner, naming::CHECKPOINTS_PREFIX).await?;
    all.sort();
    let excess = all.len().saturating_sub(CHECKPOINTS_KEPT);
    for p in &all[..excess] {
        let _ = inner.objects.delete(p).await;
    }
    // Metadata history up to the previous checkpoint: a gateway whose watch is older
    // reloads from a checkpoint.
    if let Some(prev) = previous {
        match inner.store.compact(prev.revision).await {
            Ok(()) | Err(MetaError::Compacted { .. }) => {}
            Err(e) => tracing::warn!(error = %e, "compacting metadata history failed"),
        }
    }
    Ok(Some(revision))
}

/// Deletes commit and segment records at or below `revision` (the checkpoint holds them).
async fn remove_checkpointed(inner: &Inner, revision: Revision) -> Result<u64, CompactError> {
    let old = |kvs: Vec<KeyValue>| -> Vec<KeyValue> {
        kvs.into_iter()
            .filter(|kv| kv.mod_revision <= revision)
            .collect()
    };
    let commits = old(inner
        .store
        .range(keys::COMMITS_PREFIX.as_bytes(), None)
        .await?
        .kvs);
    let segments = old(inner
        .store
        .range(keys::SEGMENTS_PREFIX.as_bytes(), None)
        .await?
        .kvs);
    // Commit records are written once: delete them in batches.
    for batch in commits.chunks(DELETES_PER_TXN) {
        inner
            .store
            .txn(Txn {
                success: batch
                    .iter()
                    .map(|kv| TxnOp::delete(kv.key.clone()))
                    .collect(),
                ..Txn::default()
            })
            .await?;
    }
    // A segment record may be written again (published) meanwhile; that one stays.
    for kv in &segments {
        inner
            .store
            .txn(Txn {
                compares: vec![Compare::mod_revision(kv.key.clone(), kv.mod_revision)],
                success: vec![TxnOp::delete(kv.key.clone())],
                failure: vec![],
            })
            .await?;
    }
    Ok((commits.len() + segments.len()) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_files_name_their_topic_partition_and_first_offset() {
        assert_eq!(
            table_file(
                "topics/t.x/partition=3/date=2026-11-22/00000000000000000042-0193ab.parquet"
            ),
            Some(("t.x".to_string(), 3, 42))
        );
        assert_eq!(table_file("topics/t/partition=x/date=d/1-a.parquet"), None);
        assert_eq!(
            table_file("topics/t/partition=0/date=d/stray.parquet"),
            None
        );
        let id = Uuid::from_u128(7);
        assert_eq!(
            topic_of(
                format!("compaction/{}/3", id.simple()).as_bytes(),
                "compaction/"
            ),
            Some(id)
        );
    }
}
