//! Forwarded WAL objects waiting for their commit: bytes a peer sent are cached only once
//! the commit log says the object hashes to them.
//!
//! A forward usually arrives before its commit (the writer sends it while committing); it
//! is held, within a memory budget, until the commit is applied here, and cached then if
//! the digests match, before anyone waiting on the log is woken (so MQTT delivery of the
//! commit finds it). A forward that arrives after its commit is checked against the
//! recently applied digests. What is never committed, or comes too late, is dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::path::Path;
use sluice_cache::RangeCache;

/// Forwarded bytes held for their commit, at most.
const PENDING_BYTES: usize = 256 << 20;
/// How long forwarded bytes wait for their commit.
const PENDING_FOR: Duration = Duration::from_secs(30);
/// How long, and how many, applied digests are remembered for forwards that come late.
const COMMITTED_FOR: Duration = Duration::from_secs(60);
const COMMITTED_MAX: usize = 16_384;

struct Offer {
    object: Bytes,
    digest: [u8; 32],
    at: Instant,
}

#[derive(Default)]
struct Inner {
    pending: HashMap<String, Offer>,
    pending_bytes: usize,
    committed: HashMap<String, [u8; 32]>,
    committed_order: VecDeque<(String, Instant)>,
}

impl Inner {
    fn sweep(&mut self, now: Instant) {
        let before = self.pending.len();
        let mut freed = 0;
        self.pending.retain(|_, o| {
            let keep = now.duration_since(o.at) < PENDING_FOR;
            if !keep {
                freed += o.object.len();
            }
            keep
        });
        self.pending_bytes -= freed;
        let expired = before - self.pending.len();
        if expired > 0 {
            crate::metrics::PEER_FORWARDS
                .with_label_values(&["expired"])
                .inc_by(expired as u64);
        }
        while let Some((path, at)) = self.committed_order.front() {
            if now.duration_since(*at) < COMMITTED_FOR
                && self.committed_order.len() <= COMMITTED_MAX
            {
                break;
            }
            self.committed.remove(path);
            self.committed_order.pop_front();
        }
    }
}

/// What became of forwarded bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Matched the commit: cached.
    Cached,
    /// Waiting for the commit.
    Held,
    /// The commit says otherwise (another digest, or none): not cached.
    Rejected,
    /// Over the memory budget: not kept.
    Dropped,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Cached => "received",
            Outcome::Held => "held",
            Outcome::Rejected => "rejected",
            Outcome::Dropped => "dropped",
        }
    }
}

pub struct Warmed {
    cache: Arc<RangeCache>,
    inner: Mutex<Inner>,
}

impl Warmed {
    pub fn new(cache: Arc<RangeCache>) -> Self {
        Self {
            cache,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn settle(
        &self,
        path: &Path,
        object: &Bytes,
        offered: &[u8; 32],
        committed: Option<&[u8; 32]>,
    ) -> Outcome {
        let outcome = if committed == Some(offered) {
            self.cache.insert_object(path, object);
            Outcome::Cached
        } else {
            tracing::warn!(object = %path, "forwarded object does not match its commit; not cached");
            Outcome::Rejected
        };
        count(outcome);
        outcome
    }

    /// Forwarded bytes whose SHA-256 is `digest` (the caller has checked).
    pub fn offer(&self, path: Path, object: Bytes, digest: [u8; 32]) -> Outcome {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.sweep(now);
        if let Some(committed) = inner.committed.get(path.as_ref()).copied() {
            drop(inner);
            return self.settle(&path, &object, &digest, Some(&committed));
        }
        let key = path.to_string();
        if inner.pending.contains_key(&key) || inner.pending_bytes + object.len() > PENDING_BYTES {
            count(Outcome::Dropped);
            return Outcome::Dropped;
        }
        inner.pending_bytes += object.len();
        inner.pending.insert(
            key,
            Offer {
                object,
                digest,
                at: now,
            },
        );
        count(Outcome::Held);
        Outcome::Held
    }

    /// A commit applied: its object's path and digest (none: it was not forwarded).
    pub fn committed(&self, path: &str, digest: Option<&[u8; 32]>) {
        let now = Instant::now();
        let mut inner = self.lock();
        if let Some(offer) = inner.pending.remove(path) {
            inner.pending_bytes -= offer.object.len();
            drop(inner);
            if let Ok(p) = Path::parse(path) {
                self.settle(&p, &offer.object, &offer.digest, digest);
            }
            return;
        }
        // Only a digest can vouch for a forward that comes later.
        if let Some(d) = digest {
            inner.committed.insert(path.to_string(), *d);
            inner.committed_order.push_back((path.to_string(), now));
            inner.sweep(now);
        }
    }

    #[cfg(test)]
    fn held_bytes(&self) -> usize {
        self.lock().pending_bytes
    }
}

fn count(outcome: Outcome) {
    crate::metrics::PEER_FORWARDS
        .with_label_values(&[outcome.label()])
        .inc();
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A cache in memory over an empty object store.
    pub(in crate::peers) async fn memory_cache() -> Arc<RangeCache> {
        let objects: Arc<dyn object_store::ObjectStore> =
            Arc::new(object_store::memory::InMemory::new());
        Arc::new(
            RangeCache::open(
                &sluice_cache::CacheConfig {
                    memory_bytes: 8 << 20,
                    disk: None,
                },
                objects,
            )
            .await
            .expect("a memory cache opens"),
        )
    }

    async fn warmed() -> (Warmed, Arc<RangeCache>) {
        let cache = memory_cache().await;
        (Warmed::new(cache.clone()), cache)
    }

    fn object(bytes: &'static [u8]) -> (Path, Bytes, [u8; 32]) {
        let path = sluice_storage::naming::new_wal_object().1;
        let digest = <sha2::Sha256 as sha2::Digest>::digest(bytes).into();
        (path, Bytes::from_static(bytes), digest)
    }

    async fn cached(cache: &RangeCache, path: &Path, len: usize) -> bool {
        cache
            .get_range(path, len as u64, 0..len as u64)
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn bytes_are_cached_only_when_their_commit_vouches_for_them() {
        let (w, cache) = warmed().await;
        // Before the commit: held, not cached.
        let (path, bytes, digest) = object(b"SLUICEWL first object");
        assert_eq!(w.offer(path.clone(), bytes.clone(), digest), Outcome::Held);
        assert!(!cached(&cache, &path, bytes.len()).await);
        assert_eq!(w.held_bytes(), bytes.len());
        w.committed(path.as_ref(), Some(&digest));
        assert!(cached(&cache, &path, bytes.len()).await);
        assert_eq!(w.held_bytes(), 0);

        // After the commit: checked at once.
        let (path, bytes, digest) = object(b"SLUICEWL second object");
        w.committed(path.as_ref(), Some(&digest));
        assert_eq!(
            w.offer(path.clone(), bytes.clone(), digest),
            Outcome::Cached
        );
        assert!(cached(&cache, &path, bytes.len()).await);

        // Bytes the commit does not vouch for: another digest, or none.
        let (path, bytes, digest) = object(b"SLUICEWL forged object");
        assert_eq!(w.offer(path.clone(), bytes.clone(), digest), Outcome::Held);
        w.committed(path.as_ref(), Some(&[7; 32]));
        assert!(!cached(&cache, &path, bytes.len()).await);
        let (path, bytes, digest) = object(b"SLUICEWL unvouched");
        w.offer(path.clone(), bytes.clone(), digest);
        w.committed(path.as_ref(), None);
        assert!(!cached(&cache, &path, bytes.len()).await);
        let (path, bytes, digest) = object(b"SLUICEWL late forgery");
        w.committed(path.as_ref(), Some(&[9; 32]));
        assert_eq!(
            w.offer(path.clone(), bytes.clone(), digest),
            Outcome::Rejected
        );
        assert!(!cached(&cache, &path, bytes.len()).await);
        // A second offer for a path already held is not kept.
        let (path, bytes, digest) = object(b"SLUICEWL twice");
        assert_eq!(w.offer(path.clone(), bytes.clone(), digest), Outcome::Held);
        assert_eq!(
            w.offer(path.clone(), bytes.clone(), digest),
            Outcome::Dropped
        );
    }

    #[tokio::test]
    async fn held_bytes_are_bounded() {
        let (w, _cache) = warmed().await;
        static BIG: [u8; 1 << 20] = [0; 1 << 20];
        let mut held = 0;
        for _ in 0..(PENDING_BYTES >> 20) + 3 {
            let (path, bytes, digest) = object(&BIG);
            if w.offer(path, bytes, digest) == Outcome::Held {
                held += 1;
            }
        }
        assert_eq!(held, PENDING_BYTES >> 20);
        assert_eq!(w.held_bytes(), PENDING_BYTES);
    }
}
