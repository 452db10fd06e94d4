//! Client quotas: produce and fetch byte rates per user and client id, with Kafka's
//! entities, precedence and throttling.
//!
//! Values live in metadata under `quotas/` (set with `AlterClientQuotas`) and every gateway
//! follows them; each gateway meters its own traffic, as each Kafka broker does, so a quota
//! is a rate per gateway. A request over its quota is still served; its response carries
//! `throttle_time_ms`, and the connection reads nothing more until that time has passed
//! (KIP-219), so a client that ignores the hint is slowed down all the same. A fetch that
//! would exceed its quota is answered at once without data (as Kafka does), so throttled
//! bytes are never sent.
//!
//! Metering is a token bucket per metered entity that holds one second of its rate: a
//! client may burst one second's worth, and beyond that is throttled until its debt is
//! repaid at the quota's rate.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sluice_metadata::keys;
use sluice_metadata::records::{QUOTA_VERSION, QuotaEntityRecord, QuotaRecord};

/// Kafka's quota keys this gateway enforces.
pub const PRODUCER_BYTE_RATE: &str = "producer_byte_rate";
pub const CONSUMER_BYTE_RATE: &str = "consumer_byte_rate";

/// Kafka's entity types this gateway meters by.
pub const USER: &str = "user";
pub const CLIENT_ID: &str = "client-id";

/// The longest one response is throttled; a client further in debt is throttled again on
/// its next request.
pub const MAX_THROTTLE: Duration = Duration::from_secs(10);

/// How much of its rate a metered entity may use at once.
const BURST: Duration = Duration::from_secs(1);

/// Metered entities idle this long are forgotten (their bucket is full again by then).
const IDLE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Produce,
    Fetch,
}

impl Kind {
    pub fn key(self) -> &'static str {
        match self {
            Kind::Produce => PRODUCER_BYTE_RATE,
            Kind::Fetch => CONSUMER_BYTE_RATE,
        }
    }
}

/// A quota entity: for each type, absent, its default (`Some(None)`) or a name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Entity {
    pub user: Option<Option<String>>,
    pub client_id: Option<Option<String>>,
}

impl Entity {
    pub fn key(&self) -> String {
        keys::quota(
            self.user.as_ref().map(|u| u.as_deref()),
            self.client_id.as_ref().map(|c| c.as_deref()),
        )
    }

    /// Its components in Kafka's names, `user` first.
    pub fn components(&self) -> Vec<(&'static str, Option<&str>)> {
        let mut out = Vec::new();
        if let Some(u) = &self.user {
            out.push((USER, u.as_deref()));
        }
        if let Some(c) = &self.client_id {
            out.push((CLIENT_ID, c.as_deref()));
        }
        out
    }

    pub fn record(&self, values: &BTreeMap<String, f64>) -> QuotaRecord {
        QuotaRecord {
            v: QUOTA_VERSION,
            entity: self
                .components()
                .into_iter()
                .map(|(t, n)| QuotaEntityRecord {
                    entity_type: t.into(),
                    name: n.map(Into::into),
                })
                .collect(),
            values: values.clone(),
        }
    }

    pub fn from_record(r: &QuotaRecord) -> Option<Self> {
        let mut e = Entity::default();
        for c in &r.entity {
            let slot = match c.entity_type.as_str() {
                USER => &mut e.user,
                CLIENT_ID => &mut e.client_id,
                _ => return None,
            };
            if slot.is_some() {
                return None;
            }
            *slot = Some(c.name.clone());
        }
        (e.user.is_some() || e.client_id.is_some()).then_some(e)
    }
}

/// What a request's bytes cost its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge {
    /// How long the client is to wait before its next request.
    pub throttle: Duration,
    /// False for a fetch answered without data, because its data would exceed the quota.
    pub deliver: bool,
}

impl Charge {
    pub const FREE: Charge = Charge {
        throttle: Duration::ZERO,
        deliver: true,
    };
}

#[derive(Debug)]
struct Bucket {
    /// Bytes that may pass without throttling; negative when in debt.
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, rate: f64, now: Instant) {
        let capacity = rate * BURST.as_secs_f64();
        let earned = rate * now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + earned).min(capacity);
        self.at = now;
    }
}

/// The quotas this gateway knows, kept current from metadata, and its meters.
#[derive(Debug, Default)]
pub struct Quotas {
    /// Whether any quota is set: requests skip the lookups when none is.
    any: AtomicBool,
    values: RwLock<Arc<HashMap<Entity, BTreeMap<String, f64>>>>,
    /// Each entity's values, by metadata key, to apply deletions.
    by_key: Mutex<HashMap<String, Entity>>,
    /// The metadata revision of the last change applied.
    applied: tokio::sync::watch::Sender<i64>,
    /// Token buckets by quota kind and metered entity (user, client id; empty where the
    /// matching quota does not name that type).
    meters: Mutex<HashMap<(Kind, String, String), Bucket>>,
}

impl Quotas {
    pub fn snapshot(&self) -> Arc<HashMap<Entity, BTreeMap<String, f64>>> {
        self.values
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn update(&self, f: impl FnOnce(&mut HashMap<Entity, BTreeMap<String, f64>>)) {
        let mut guard = self.values.write().unwrap_or_else(|e| e.into_inner());
        let mut next = guard.as_ref().clone();
        f(&mut next);
        self.any.store(!next.is_empty(), Ordering::Release);
        *guard = Arc::new(next);
    }

    /// Applies a change under `quotas/`, made at metadata revision `revision`.
    pub fn written(&self, key: &[u8], value: &[u8], present: bool, revision: i64) {
        self.apply(key, value, present);
        self.applied.send_if_modified(|r| {
            let newer = revision > *r;
            *r = (*r).max(revision);
            newer
        });
    }

    /// Waits (at most `timeout`) until the change made at `revision` is applied here, so a
    /// client that altered quotas through this gateway sees them in force at once.
    pub async fn applied(&self, revision: i64, timeout: Duration) {
        let mut rx = self.applied.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|r| *r >= revision)).await;
    }

    fn apply(&self, key: &[u8], value: &[u8], present: bool) {
        let key = String::from_utf8_lossy(key).into_owned();
        let mut by_key = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = by_key.remove(&key) {
            self.update(|m| {
                m.remove(&old);
            });
        }
        if !present {
            return;
        }
        let decoded = QuotaRecord::decode(value).ok();
        match decoded
            .as_ref()
            .and_then(|r| Some((Entity::from_record(r)?, r)))
        {
            Some((entity, record)) => {
                by_key.insert(key, entity.clone());
                self.update(|m| {
                    m.insert(entity, record.values.clone());
                });
            }
            None => tracing::warn!(key, "unreadable client quota; ignored"),
        }
    }

    pub fn reset(&self) {
        self.by_key
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.update(HashMap::clear);
    }

    /// The quota of `kind` that applies to `user` with `client_id`, in Kafka's order of
    /// precedence, and the entity its use is metered as.
    pub fn resolve(
        &self,
        kind: Kind,
        user: &str,
        client_id: &str,
    ) -> Option<(f64, String, String)> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let values = self.snapshot();
        let e = |u: Option<Option<&str>>, c: Option<Option<&str>>| Entity {
            user: u.map(|u| u.map(str::to_string)),
            client_id: c.map(|c| c.map(str::to_string)),
        };
        let (u, c) = (Some(Some(user)), Some(Some(client_id)));
        // Each entity, and whether its meter is per user and per client id.
        let order = [
            (e(u, c), true, true),
            (e(u, Some(None)), true, true),
            (e(u, None), true, false),
            (e(Some(None), c), true, true),
            (e(Some(None), Some(None)), true, true),
            (e(Some(None), None), true, false),
            (e(None, c), false, true),
            (e(None, Some(None)), false, true),
        ];
        order.into_iter().find_map(|(entity, by_user, by_client)| {
            let rate = *values.get(&entity)?.get(kind.key())?;
            Some((
                rate,
                if by_user {
                    user.to_string()
                } else {
                    String::new()
                },
                if by_client {
                    client_id.to_string()
                } else {
                    String::new()
                },
            ))
        })
    }

    /// Charges `bytes` of `kind` to the client: a produce is always charged (its data is
    /// in the log); a fetch only if its data is to be delivered. The bytes are counted
    /// only when a quota applies.
    pub fn charge(
        &self,
        kind: Kind,
        user: &str,
        client_id: &str,
        bytes: impl FnOnce() -> usize,
    ) -> Charge {
        let Some((rate, mu, mc)) = self.resolve(kind, user, client_id) else {
            return Charge::FREE;
        };
        let charge = self.charge_at(kind, (mu, mc), rate, bytes() as f64, Instant::now());
        if !charge.throttle.is_zero() {
            crate::metrics::QUOTA_THROTTLED
                .with_label_values(&[kind.key()])
                .inc();
        }
        charge
    }

    fn charge_at(
        &self,
        kind: Kind,
        (user, client_id): (String, String),
        rate: f64,
        bytes: f64,
        now: Instant,
    ) -> Charge {
        if rate <= 0.0 {
            return Charge::FREE;
        }
        let mut meters = self.meters.lock().unwrap_or_else(|e| e.into_inner());
        if meters.len() > 4096 {
            meters.retain(|_, b| now.saturating_duration_since(b.at) < IDLE);
        }
        let bucket = meters
            .entry((kind, user, client_id))
            .or_insert_with(|| Bucket {
                tokens: rate * BURST.as_secs_f64(),
                at: now,
            });
        bucket.refill(rate, now);
        let full = bucket.tokens >= rate * BURST.as_secs_f64();
        let deliver = kind == Kind::Produce || bucket.tokens >= bytes || full;
        if deliver {
            bucket.tokens -= bytes;
        }
        let owed = if deliver {
            -bucket.tokens
        } else {
            bytes - bucket.tokens
        };
        let throttle = if owed > 0.0 {
            Duration::from_secs_f64(owed / rate).min(MAX_THROTTLE)
        } else {
            Duration::ZERO
        };
        Charge { throttle, deliver }
    }

    /// Follows `quotas/` until `cancel`.
    pub(crate) async fn watch(
        ctx: Arc<crate::server::Ctx>,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        let reset: fn(&crate::server::Ctx) = |c| c.quotas.reset();
        let apply = |c: &crate::server::Ctx, kv: &sluice_metadata::KeyValue, put: bool| {
            c.quotas.written(&kv.key, &kv.value, put, kv.mod_revision);
        };
        crate::watch::follow(&ctx, keys::QUOTAS_PREFIX, Some(reset), &cancel, apply).await;
    }
}

/// The user name quotas know a principal by: Kafka's, without the `User:` prefix.
pub fn user_of(principal: &str) -> &str {
    principal.strip_prefix("User:").unwrap_or(principal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(q: &Quotas, e: Entity, key: &str, rate: f64) {
        let values = BTreeMap::from([(key.to_string(), rate)]);
        let k = e.key();
        q.written(k.as_bytes(), &e.record(&values).encode(), true, 1);
    }

    fn named(s: &str) -> Option<Option<String>> {
        Some(Some(s.into()))
    }

    #[test]
    fn precedence_is_kafkas() {
        let q = Quotas::default();
        assert_eq!(q.resolve(Kind::Produce, "alice", "app"), None);
        set(
            &q,
            Entity {
                user: None,
                client_id: Some(None),
            },
            PRODUCER_BYTE_RATE,
            8.0,
        );
        assert_eq!(
            q.resolve(Kind::Produce, "alice", "app"),
            Some((8.0, String::new(), "app".into()))
        );
        set(
            &q,
            Entity {
                user: None,
                client_id: named("app"),
            },
            PRODUCER_BYTE_RATE,
            7.0,
        );
        assert_eq!(
            q.resolve(Kind::Produce, "alice", "app").map(|r| r.0),
            Some(7.0)
        );
        set(
            &q,
            Entity {
                user: Some(None),
                client_id: None,
            },
            PRODUCER_BYTE_RATE,
            6.0,
        );
        assert_eq!(
            q.resolve(Kind::Produce, "alice", "app"),
            Some((6.0, "alice".into(), String::new()))
        );
        set(
            &q,
            Entity {
                user: Some(None),
                client_id: Some(None),
            },
            PRODUCER_BYTE_RATE,
            5.0,
        );
        assert_eq!(
            q.resolve(Kind::Produce, "alice", "app").map(|r| r.0),
            Some(5.0)
        );
        set(
            &q,
            Entity {
                user: Some(None),
                client_id: named("app"),
            },
            PRODUCER_BYTE_RATE,
            4.0,
        );
        assert_eq!(
            q.resolve(Kind::Produce, "alice", "app").map(|r| r.0),
            Some(4.0)
        );
        set(
            &q,
            Entity {
                user: named("alice"),
                client_id: None,
            },
            PRODUCER_BYTE_RATE,
            3.0,
        );
        assert_eq!(
            q.resolve(Kind::Produce, "alice", "app").map(|r| r.0),
            Some(3.0)
        );
        set(
            &q,
            Entity {
                user: named("alice"),
                client_id: Some(None),
            },
            PRODUCER_BYTE_RATE,
            2.0,
        );
        assert_eq!(
            q.resolve(Kind::Produce, "alice", "app").map(|r| r.0),
            Some(2.0)
        );
        set(
            &q,
            Entity {
                user: named("alice"),
                client_id: named("app"),
            },
            PRODUCER_BYTE_RATE,
            1.0,
        );
        assert_eq!(
            q.resolve(Kind::Produce, "alice", "app"),
            Some((1.0, "alice".into(), "app".into()))
        );
        // Another user falls to the user default with a client id; the fetch quota is its own.
        assert_eq!(
            q.resolve(Kind::Produce, "bob", "app").map(|r| r.0),
            Some(4.0)
        );
        assert_eq!(q.resolve(Kind::Fetch, "alice", "app"), None);
        // Deleting a quota falls back to the next.
        let k = Entity {
            user: named("alice"),
            client_id: named("app"),
        }
        .key();
        q.written(k.as_bytes(), b"", false, 2);
        assert_eq!(
            q.resolve(Kind::Produce, "alice", "app").map(|r| r.0),
            Some(2.0)
        );
        q.reset();
        assert_eq!(q.resolve(Kind::Produce, "alice", "app"), None);
    }

    #[test]
    fn produce_is_throttled_by_its_debt() {
        let q = Quotas::default();
        let t0 = Instant::now();
        let m = || ("u".to_string(), String::new());
        // One second of burst passes free.
        let c = q.charge_at(Kind::Produce, m(), 1000.0, 1000.0, t0);
        assert_eq!(c, Charge::FREE);
        // 500 bytes more owe half a second.
        let c = q.charge_at(Kind::Produce, m(), 1000.0, 500.0, t0);
        assert_eq!(c.throttle, Duration::from_millis(500));
        assert!(c.deliver);
        // Half a second later the debt is repaid.
        let c = q.charge_at(
            Kind::Produce,
            m(),
            1000.0,
            0.0,
            t0 + Duration::from_millis(500),
        );
        assert_eq!(c, Charge::FREE);
        // A huge request is throttled at most MAX_THROTTLE at a time.
        let c = q.charge_at(Kind::Produce, m(), 1000.0, 1e9, t0 + Duration::from_secs(2));
        assert_eq!(c.throttle, MAX_THROTTLE);
    }

    #[test]
    fn fetch_over_quota_is_not_delivered_until_affordable() {
        let q = Quotas::default();
        let t0 = Instant::now();
        let m = || ("".to_string(), "c".to_string());
        assert_eq!(
            q.charge_at(Kind::Fetch, m(), 1000.0, 800.0, t0),
            Charge::FREE
        );
        // 200 left: 600 bytes wait 0.4 s and are not sent.
        let c = q.charge_at(Kind::Fetch, m(), 1000.0, 600.0, t0);
        assert_eq!(
            c,
            Charge {
                throttle: Duration::from_millis(400),
                deliver: false
            }
        );
        // After the wait they are.
        let c = q.charge_at(
            Kind::Fetch,
            m(),
            1000.0,
            600.0,
            t0 + Duration::from_millis(400),
        );
        assert_eq!(c, Charge::FREE);
        // A fetch bigger than the burst goes out once the bucket is full, then owes.
        let c = q.charge_at(
            Kind::Fetch,
            m(),
            1000.0,
            3000.0,
            t0 + Duration::from_secs(5),
        );
        assert_eq!(
            c,
            Charge {
                throttle: Duration::from_secs(2),
                deliver: true
            }
        );
    }

    #[test]
    fn keys_keep_names_and_defaults_apart() {
        let a = Entity {
            user: named("u*"),
            client_id: None,
        }
        .key();
        let b = Entity {
            user: Some(None),
            client_id: None,
        }
        .key();
        assert_ne!(a, b);
        assert_eq!(b, "quotas/u*");
        let c = Entity {
            user: named("a/b"),
            client_id: Some(None),
        }
        .key();
        assert_eq!(c, "quotas/u:a%2Fb/c*");
    }
}
