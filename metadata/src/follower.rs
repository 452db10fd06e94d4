//! A process's copy of the commit log: it starts from the latest checkpoint, applies every
//! later log event from metadata in revision order, and wakes whoever waits on them
//! (producers waiting for their offsets, long-polling fetches, admin requests waiting to
//! see their own writes, the compactor).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::log::{Applied, BatchOutcome, LogState};
use crate::records::CheckpointPointer;
use crate::{EventKind, KeyValue, MetaError, MetaResult, Revision, SharedStore, WatchEvent, keys};

/// Reads checkpoint objects (they live in the object store, which this crate does not
/// know).
#[async_trait]
pub trait CheckpointReader: Send + Sync {
    async fn read(&self, path: &str) -> Result<Bytes, String>;
}

pub type SharedCheckpointReader = Arc<dyn CheckpointReader>;

/// Where each batch of each chunk of a commit went, as the log decided.
pub type CommitOffsets = Vec<Vec<BatchOutcome>>;

/// Called with each commit's WAL object path and digest as the commit is applied, before
/// anyone waiting on the log is woken.
pub type CommitHook = Box<dyn Fn(&str, Option<&[u8; 32]>) + Send + Sync>;

pub struct Log {
    state: RwLock<LogState>,
    /// The revision applied so far; receivers wake on every change.
    applied: watch::Sender<Revision>,
    /// Flushes waiting for their commit to be applied, by commit (object) id.
    waiters: Mutex<HashMap<String, oneshot::Sender<CommitOffsets>>>,
    /// False while the watch is broken and being re-established.
    following: AtomicBool,
    on_commit: std::sync::OnceLock<CommitHook>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log").finish_non_exhaustive()
    }
}

impl Log {
    /// Loads the log as of now and follows it until `cancel`.
    pub async fn start(
        store: SharedStore,
        checkpoints: SharedCheckpointReader,
        cancel: CancellationToken,
    ) -> MetaResult<Arc<Self>> {
        // A checkpoint can be replaced and deleted between reading its pointer and reading
        // it (two checkpoints in that instant); reading the pointer again finds the new one.
        let mut attempt = 0;
        let (state, revision) = loop {
            match load(&store, &*checkpoints).await {
                Err(MetaError::Unavailable(e)) if attempt < 5 => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "loading the log failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                r => break r?,
            }
        };
        let (applied, _) = watch::channel(revision);
        let log = Arc::new(Self {
            state: RwLock::new(state),
            applied,
            waiters: Mutex::new(HashMap::new()),
            following: AtomicBool::new(true),
            on_commit: std::sync::OnceLock::new(),
        });
        tokio::spawn(follow(log.clone(), store, checkpoints, revision, cancel));
        Ok(log)
    }

    pub fn read<R>(&self, f: impl FnOnce(&LogState) -> R) -> R {
        // A poisoned lock means a panic while applying, which `apply` cannot do; recover
        // the data rather than take the gateway down.
        let g = self.state.read().unwrap_or_else(|e| e.into_inner());
        f(&g)
    }

    pub fn is_following(&self) -> bool {
        self.following.load(Ordering::Relaxed)
    }

    pub fn subscribe(&self) -> watch::Receiver<Revision> {
        self.applied.subscribe()
    }

    /// Registers interest in a commit before it is written, so its application cannot be
    /// missed.
    pub fn expect_commit(&self, id: &str) -> oneshot::Receiver<CommitOffsets> {
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), tx);
        rx
    }

    /// Sets the hook every applied commit is handed to (once; later calls are ignored).
    pub fn on_commit(&self, hook: CommitHook) {
        let _ = self.on_commit.set(hook);
    }

    pub fn forget_commit(&self, id: &str) {
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Waits until the log has applied `revision`; false on timeout.
    pub async fn wait_for(&self, revision: Revision, timeout: Duration) -> bool {
        let mut rx = self.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r >= revision))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    fn apply(&self, event: &WatchEvent) {
        let applied = {
            let mut g = self.state.write().unwrap_or_else(|e| e.into_inner());
            g.apply(event)
        };
        match applied {
            Ok(Applied::Commit {
                id,
                outcomes,
                object,
                digest,
                ..
            }) => {
                if let Some(hook) = self.on_commit.get() {
                    hook(&object, digest.as_ref());
                }
                let waiter = self
                    .waiters
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                if let Some(tx) = waiter {
                    let _ = tx.send(outcomes);
                }
            }
            Ok(_) => {}
            // A record this build cannot read: skipping it would make this gateway's
            // offsets differ from others', so make it loud. It can only come from a newer
            // build writing a format this one does not know.
            Err(e) => {
                tracing::error!(key = %String::from_utf8_lossy(&event.kv.key), error = %e, "unreadable log record")
            }
        }
        self.applied.send_replace(event.kv.mod_revision);
    }

    fn replace(&self, state: LogState, revision: Revision) {
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = state;
        self.applied.send_replace(revision);
    }
}

/// Reads every log key at one revision, starts from the checkpoint they point to, and
/// applies the keys written after it in revision order.
async fn load(
    store: &SharedStore,
    checkpoints: &dyn CheckpointReader,
) -> MetaResult<(LogState, Revision)> {
    let range = store.range(keys::LOG_PREFIX.as_bytes(), None).await?;
    let mut kvs: Vec<KeyValue> = range.kvs;
    let mut state = LogState::default();
    let mut base = 0;
    if let Some(kv) = kvs
        .iter()
        .find(|kv| kv.key.as_ref() == keys::CHECKPOINT.as_bytes())
    {
        let pointer =
            CheckpointPointer::decode(&kv.value).map_err(|e| MetaError::Corrupt(e.to_string()))?;
        let bytes = checkpoints
            .read(&pointer.path)
            .await
            .map_err(|e| MetaError::Unavailable(format!("checkpoint {}: {e}", pointer.path)))?;
        state = LogState::decode_checkpoint(&bytes)
            .map_err(|e| MetaError::Corrupt(format!("checkpoint {}: {e}", pointer.path)))?;
        base = pointer.revision;
    }
    // Topics deleted after the checkpoint have no key left to say so.
    let live_topics: std::collections::HashSet<String> = kvs
        .iter()
        .filter_map(|kv| {
            let key = std::str::from_utf8(&kv.key).ok()?;
            Some(key.strip_prefix(keys::TOPICS_PREFIX)?.to_string())
        })
        .collect();
    state.retain_topics(|name| live_topics.contains(name));
    kvs.retain(|kv| kv.mod_revision > base);
    kvs.sort_by_key(|kv| kv.mod_revision);
    for kv in kvs {
        let event = WatchEvent {
            kind: EventKind::Put,
            kv,
        };
        if let Err(e) = state.apply(&event) {
            tracing::error!(key = %String::from_utf8_lossy(&event.kv.key), error = %e, "unreadable log record");
        }
    }
    Ok((state, range.revision))
}

async fn follow(
    log: Arc<Log>,
    store: SharedStore,
    checkpoints: SharedCheckpointReader,
    mut revision: Revision,
    cancel: CancellationToken,
) {
    let retry = Duration::from_millis(200);
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => return,
            s = store.watch(keys::LOG_PREFIX.as_bytes(), revision + 1) => s,
        };
        let mut reload = false;
        match stream {
            Ok(mut stream) => {
                log.following.store(true, Ordering::Relaxed);
                loop {
                    let next = tokio::select! {
                        _ = cancel.cancelled() => return,
                        n = stream.next() => n,
                    };
                    match next {
                        Some(Ok(event)) => {
                            revision = revision.max(event.kv.mod_revision);
                            log.apply(&event);
                        }
                        Some(Err(MetaError::Compacted { .. })) => {
                            reload = true;
                            break;
                        }
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "log watch failed; re-establishing");
                            break;
                        }
                        None => {
                            tracing::warn!("log watch ended; re-establishing");
                            break;
                        }
                    }
                }
            }
            Err(MetaError::Compacted { .. }) => reload = true,
            Err(e) => tracing::warn!(error = %e, "cannot watch the log; retrying"),
        }
        log.following.store(false, Ordering::Relaxed);
        if reload {
            tracing::warn!(
                revision,
                "log history compacted past this gateway; reloading"
            );
            match load(&store, &*checkpoints).await {
                Ok((state, rev)) => {
                    log.replace(state, rev);
                    revision = rev;
                    continue;
                }
                Err(e) => tracing::warn!(error = %e, "reloading the log failed; retrying"),
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(retry) => {}
        }
    }
}
