//! The WAL batcher: one open buffer for every partition of every topic.
//!
//! Appends accumulate until the buffer reaches the target size, its oldest append reaches
//! the maximum delay, or no flush is in flight (then it flushes at once: low latency at low
//! load, large objects at high load). A flush PUTs one object (create-only, under a new
//! name), places its bytes in the cache, commits its chunk list to metadata, and waits for
//! the log to apply the commit: that assigns the offsets every waiting producer is then
//! answered with.
//!
//! Several flushes may be in flight, but their commits are issued strictly in flush order
//! (each waits until the previous commit call returned), so two requests from one producer
//! to one partition keep their order in the log.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use object_store::{ObjectStore, PutMode, PutOptions};
use sluice_cache::RangeCache;
use sluice_metadata::log::BatchOutcome;
use sluice_metadata::records::{BatchMeta, CommitChunk, CommitRecord};
use sluice_metadata::{Compare, SharedStore, Txn, TxnOp, keys};
use sluice_storage::{naming, wal};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::GatewayConfig;
use crate::metrics;
use sluice_metadata::follower::Log;

/// One producer batch for one partition.
#[derive(Debug)]
pub struct Append {
    pub topic_id: Uuid,
    pub partition: u32,
    pub batch: Bytes,
    /// What the batch header says (its size is `batch.len()`).
    pub meta: BatchMeta,
}

/// Why an append was not acknowledged. Nothing about it is visible in the log unless the
/// error says it may be (a timeout after the commit was written).
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    #[error("writing the WAL object failed: {0}")]
    ObjectStore(String),
    #[error("committing to metadata failed: {0}")]
    Metadata(String),
    #[error("the commit was written but not seen applied in time")]
    Timeout,
    #[error("the topic or partition was deleted before the commit was applied")]
    Gone,
    #[error("the batch's sequence number does not follow the producer's last one")]
    OutOfOrderSequence,
    #[error("the batch's producer epoch is older than the producer's current one")]
    InvalidProducerEpoch,
    #[error("the gateway is shutting down")]
    ShuttingDown,
}

type Reply = oneshot::Sender<Result<i64, AppendError>>;

#[derive(Default)]
struct Buffer {
    chunks: Vec<wal::ChunkInput>,
    /// Per chunk, its batches in order, and who waits for each.
    metas: Vec<Vec<BatchMeta>>,
    waiters: Vec<Vec<Reply>>,
    index: HashMap<(Uuid, u32), usize>,
    bytes: usize,
    oldest: Option<Instant>,
}

impl Buffer {
    fn add(&mut self, a: Append, reply: Reply) {
        let i = *self
            .index
            .entry((a.topic_id, a.partition))
            .or_insert_with(|| {
                self.chunks.push(wal::ChunkInput {
                    topic_id: a.topic_id,
                    partition: a.partition,
                    batches: Vec::new(),
                    records: 0,
                    max_timestamp: -1,
                });
                self.metas.push(Vec::new());
                self.waiters.push(Vec::new());
                self.chunks.len() - 1
            });
        let chunk = &mut self.chunks[i];
        self.waiters[i].push(reply);
        self.metas[i].push(a.meta);
        chunk.records += a.meta.records;
        chunk.max_timestamp = chunk.max_timestamp.max(a.meta.max_timestamp);
        self.bytes += a.batch.len();
        chunk.batches.push(a.batch);
        self.oldest.get_or_insert_with(Instant::now);
    }

    fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
}

#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<(Append, oneshot::Sender<Result<i64, AppendError>>)>,
    /// Cancelled when the flusher has stopped, after its last flush.
    finished: CancellationToken,
    shared: Arc<Shared>,
}

/// Hands WAL objects to other gateways (see `peers`) as they are written, before they are
/// committed.
pub trait FlushHook: Send + Sync {
    /// Whether an object of `size` bytes holding data of `topics` (sorted) is to be handed
    /// over; its digest is then computed while it is written, and committed with it.
    fn wants(&self, size: usize, topics: &[Uuid]) -> bool;
    /// An object `wants` took, once written: its path, bytes and SHA-256.
    fn written(&self, path: &object_store::path::Path, object: &Bytes, digest: [u8; 32]);
}

struct Shared {
    config: GatewayConfig,
    store: SharedStore,
    objects: Arc<dyn ObjectStore>,
    cache: Arc<RangeCache>,
    log: Arc<Log>,
    on_flush: std::sync::OnceLock<Box<dyn FlushHook>>,
}

impl Batcher {
    pub fn start(
        config: GatewayConfig,
        store: SharedStore,
        objects: Arc<dyn ObjectStore>,
        cache: Arc<RangeCache>,
        log: Arc<Log>,
        cancel: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        let shared = Arc::new(Shared {
            config,
            store,
            objects,
            cache,
            log,
            on_flush: std::sync::OnceLock::new(),
        });
        let finished = CancellationToken::new();
        let done = finished.clone();
        let running = shared.clone();
        tokio::spawn(async move {
            run(running, rx, cancel).await;
            done.cancel();
        });
        Self {
            tx,
            finished,
            shared,
        }
    }

    /// Sets what is told of every WAL object written (once; later calls are ignored).
    pub fn on_flush(&self, hook: Box<dyn FlushHook>) {
        let _ = self.shared.on_flush.set(hook);
    }

    /// Waits until the batcher has stopped and every flush has finished.
    pub async fn closed(&self) {
        self.finished.cancelled().await;
    }

    /// Puts one batch in the buffer, in the order calls are made (waiting while the
    /// buffer is full). The returned [`Pending`] resolves to its base offset once it is
    /// durable and committed; submitting several before awaiting any lets them share a
    /// flush, and batches of one partition submitted one after another keep their order
    /// in the log.
    pub async fn submit(&self, a: Append) -> Pending {
        let (tx, rx) = oneshot::channel();
        match self.tx.send((a, tx)).await {
            Ok(()) => Pending(Some(rx)),
            Err(_) => Pending(None),
        }
    }
}

/// A submitted batch: resolves to its base offset once durable and committed.
#[derive(Debug)]
pub struct Pending(Option<oneshot::Receiver<Result<i64, AppendError>>>);

impl std::future::Future for Pending {
    type Output = Result<i64, AppendError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let Some(rx) = self.0.as_mut() else {
            return std::task::Poll::Ready(Err(AppendError::ShuttingDown));
        };
        std::pin::Pin::new(rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(AppendError::ShuttingDown)))
    }
}

async fn run(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<(Append, oneshot::Sender<Result<i64, AppendError>>)>,
    cancel: CancellationToken,
) {
    let max_inflight = shared.config.max_inflight_flushes.max(1);
    let slots = Arc::new(Semaphore::new(max_inflight));
    let finished = Arc::new(Notify::new());
    let mut buf = Buffer::default();
    // Completes when the previous flush's commit call has returned.
    let mut previous_commit: Option<oneshot::Receiver<()>> = None;
    let mut closed = false;
    loop {
        let full = buf.bytes >= shared.config.flush_target_bytes;
        let idle = slots.available_permits() == max_inflight;
        // With no flush in flight, a buffer goes once it has lingered the minimum delay;
        // otherwise once its oldest append reaches the maximum.
        let wait = if idle {
            shared.config.flush_min_delay
        } else {
            shared.config.flush_max_delay
        };
        let due = buf.oldest.map(|t| t + wait);
        if !buf.is_empty()
            && (full || closed || due.is_some_and(|d| d <= Instant::now()))
            && let Ok(permit) = slots.clone().try_acquire_owned()
        {
            let (done_tx, done_rx) = oneshot::channel();
            let prev = previous_commit.replace(done_rx);
            let flush = std::mem::take(&mut buf);
            let shared = shared.clone();
            let finished = finished.clone();
            tokio::spawn(async move {
                flush_buffer(&shared, flush, prev, done_tx).await;
                drop(permit);
                finished.notify_one();
            });
            continue;
        }
        if closed {
            if buf.is_empty() {
                // Wait for flushes in flight, then stop.
                let _ = slots.acquire_many(max_inflight as u32).await;
                return;
            }
            finished.notified().await;
            continue;
        }
        // Stop taking appends while the buffer is full and every flush slot is busy:
        // producers then wait in the channel (backpressure) instead of growing memory.
        let accept = !(full && slots.available_permits() == 0);
        tokio::select! {
            _ = cancel.cancelled() => {
                closed = true;
                rx.close();
            }
            m = rx.recv(), if accept => match m {
                Some((a, reply)) => {
                    buf.add(a, reply);
                    while buf.bytes < shared.config.flush_target_bytes {
                        match rx.try_recv() {
                            Ok((a, reply)) => buf.add(a, reply),
                            Err(_) => break,
                        }
                    }
                }
                None => closed = true,
            },
            _ = sleep_until(due), if due.is_some() => {}
            _ = finished.notified() => {}
        }
    }
}

async fn sleep_until(t: Option<Instant>) {
    if let Some(t) = t {
        tokio::time::sleep_until(t.into()).await;
    }
}

fn fail(buf: Buffer, e: AppendError) {
    for w in buf.waiters.into_iter().flatten() {
        let _ = w.send(Err(e.clone()));
    }
}

async fn flush_buffer(
    shared: &Shared,
    buf: Buffer,
    previous_commit: Option<oneshot::Receiver<()>>,
    commit_done: oneshot::Sender<()>,
) {
    let start = Instant::now();
    let (object, chunks) = wal::encode(&buf.chunks);
    let (id, path) = naming::new_wal_object();
    metrics::FLUSH_BYTES.observe(object.len() as f64);
    // An object to hand to other gateways is hashed (off the async workers) while it is
    // written, so its commit can carry the digest receivers check it against.
    let hook = shared.on_flush.get().filter(|hook| {
        let mut topics: Vec<Uuid> = buf.index.keys().map(|(t, _)| *t).collect();
        topics.sort_unstable();
        topics.dedup();
        hook.wants(object.len(), &topics)
    });
    let digest = hook.map(|_| {
        let object = object.clone();
        tokio::task::spawn_blocking(move || -> [u8; 32] {
            <sha2::Sha256 as sha2::Digest>::digest(&object[..]).into()
        })
    });
    let put = shared
        .objects
        .put_opts(
            &path,
            object.clone().into(),
            PutOptions::from(PutMode::Create),
        )
        .await;
    let digest = match digest {
        Some(d) => d.await.ok(),
        None => None,
    };
    if let Err(e) = put {
        metrics::FLUSH_ERRORS.with_label_values(&["put"]).inc();
        tracing::warn!(object = %path, error = %e, "WAL object write failed");
        // Keep the commit order for flushes behind this one.
        if let Some(prev) = previous_commit {
            let _ = prev.await;
        }
        drop(commit_done);
        return fail(buf, AppendError::ObjectStore(e.to_string()));
    }
    shared.cache.insert_object(&path, &object);
    if let (Some(hook), Some(digest)) = (hook, digest) {
        hook.written(&path, &object, digest);
    }
    let key = keys::commit(&id);
    let record = CommitRecord {
        object: path.to_string(),
        object_size: object.len() as u64,
        digest,
        chunks: chunks
            .into_iter()
            .zip(&buf.metas)
            .map(|(chunk, batches)| CommitChunk {
                chunk,
                batches: batches.clone(),
            })
            .collect(),
    };
    let applied = shared.log.expect_commit(&id);
    if let Some(prev) = previous_commit {
        let _ = prev.await;
    }
    if start.elapsed() > shared.config.max_commit_delay {
        // The compactor deletes uncommitted objects after its orphan age; an object this
        // old must not be committed any more. The producer retries.
        shared.log.forget_commit(&id);
        drop(commit_done);
        metrics::FLUSH_ERRORS.with_label_values(&["commit"]).inc();
        tracing::warn!(object = %path, waited = ?start.elapsed(), "too late to commit a WAL object");
        return fail(
            buf,
            AppendError::Metadata("the WAL object waited too long to be committed".into()),
        );
    }
    let txn = Txn {
        compares: vec![Compare::absent(key.clone())],
        success: vec![TxnOp::put(key.clone(), record.encode())],
        failure: vec![],
    };
    let committed = shared.store.txn(txn).await;
    drop(commit_done);
    match committed {
        Ok(r) if r.succeeded => {}
        Ok(_) => {
            // The name is a fresh uuid: this cannot happen unless ids collide.
            shared.log.forget_commit(&id);
            metrics::FLUSH_ERRORS.with_label_values(&["commit"]).inc();
            return fail(
                buf,
                AppendError::Metadata(format!("commit key {key} already exists")),
            );
        }
        Err(e) => {
            // The outcome is unknown: the commit may have been applied. The producer
            // retries; without idempotence that may duplicate, never lose.
            shared.log.forget_commit(&id);
            metrics::FLUSH_ERRORS.with_label_values(&["commit"]).inc();
            tracing::warn!(object = %path, error = %e, "commit failed");
            return fail(buf, AppendError::Metadata(e.to_string()));
        }
    }
    let outcomes = match tokio::time::timeout(shared.config.commit_timeout, applied).await {
        Ok(Ok(outcomes)) => outcomes,
        _ => {
            shared.log.forget_commit(&id);
            metrics::FLUSH_ERRORS.with_label_values(&["apply"]).inc();
            return fail(buf, AppendError::Timeout);
        }
    };
    metrics::FLUSH_SECONDS.observe(start.elapsed().as_secs_f64());
    for (waiters, outcomes) in buf.waiters.into_iter().zip(outcomes) {
        for (w, outcome) in waiters.into_iter().zip(outcomes) {
            let (r, label) = match outcome {
                BatchOutcome::Appended(base) => (Ok(base), "appended"),
                BatchOutcome::Duplicate(base) => (Ok(base), "duplicate"),
                BatchOutcome::OutOfOrderSequence => {
                    (Err(AppendError::OutOfOrderSequence), "out_of_order")
                }
                BatchOutcome::InvalidProducerEpoch => {
                    (Err(AppendError::InvalidProducerEpoch), "fenced")
                }
                BatchOutcome::Gone => (Err(AppendError::Gone), "gone"),
            };
            metrics::PRODUCE_BATCHES.with_label_values(&[label]).inc();
            let _ = w.send(r);
        }
    }
}

#[cfg(test)]
mod tests;
