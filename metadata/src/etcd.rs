//! The etcd backend, over `etcd-client`. Every key is stored under a namespace prefix so
//! that several clusters (or tests) can share one etcd.

use bytes::Bytes;
use etcd_client::{
    Client, Compare as ECompare, CompareOp as ECompareOp, ConnectOptions, DeleteOptions, EventType,
    GetOptions, PutOptions, Txn as ETxn, TxnOp as ETxnOp, TxnOpResponse, WatchOptions,
};
use futures::StreamExt;

use crate::store::*;

/// A [`MetaStore`] backed by an etcd cluster.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    namespace: Bytes,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("namespace", &String::from_utf8_lossy(&self.namespace))
            .finish_non_exhaustive()
    }
}

/// Keys per range request.
const RANGE_PAGE: i64 = 1000;

/// The smallest key after every key that starts with `prefix` (etcd's range end).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: the range runs to the end of the keyspace.
    vec![0]
}

fn map_err(e: etcd_client::Error) -> MetaError {
    match &e {
        etcd_client::Error::GRpcStatus(s) => {
            let msg = s.message();
            if msg.contains("compacted") {
                return MetaError::Compacted {
                    requested: 0,
                    compacted: 0,
                };
            }
            if msg.contains("future rev") {
                return MetaError::FutureRevision {
                    requested: 0,
                    current: 0,
                };
            }
            if msg.contains("requested lease not found") {
                return MetaError::LeaseNotFound(LeaseId(0));
            }
            match s.code() {
                tonic::Code::InvalidArgument
                | tonic::Code::ResourceExhausted
                | tonic::Code::FailedPrecondition => MetaError::Rejected(e.to_string()),
                _ => MetaError::Unavailable(e.to_string()),
            }
        }
        _ => MetaError::Unavailable(e.to_string()),
    }
}

impl EtcdStore {
    /// Connects to `endpoints` (host:port) and keeps every key under `namespace`.
    pub async fn connect(endpoints: &[String], namespace: &str) -> MetaResult<Self> {
        let options = ConnectOptions::new()
            .with_connect_timeout(std::time::Duration::from_secs(5))
            .with_timeout(std::time::Duration::from_secs(15))
            .with_keep_alive(
                std::time::Duration::from_secs(10),
                std::time::Duration::from_secs(5),
            );
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(map_err)?;
        Ok(Self {
            client,
            namespace: Bytes::copy_from_slice(namespace.as_bytes()),
        })
    }

    fn full(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.namespace.len() + key.len());
        k.extend_from_slice(&self.namespace);
        k.extend_from_slice(key);
        k
    }

    fn strip(&self, key: &[u8]) -> Bytes {
        Bytes::copy_from_slice(key.strip_prefix(&self.namespace[..]).unwrap_or(key))
    }

    fn kv(&self, kv: &etcd_client::KeyValue) -> KeyValue {
        KeyValue {
            key: self.strip(kv.key()),
            value: Bytes::copy_from_slice(kv.value()),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            version: kv.version(),
            lease: (kv.lease() != 0).then_some(LeaseId(kv.lease())),
        }
    }

    fn op(&self, op: TxnOp) -> ETxnOp {
        match op {
            TxnOp::Put { key, value, lease } => ETxnOp::put(
                self.full(&key),
                value.to_vec(),
                lease.map(|l| PutOptions::new().with_lease(l.0)),
            ),
            TxnOp::Delete { key } => ETxnOp::delete(self.full(&key), None),
            TxnOp::DeletePrefix { prefix } => {
                ETxnOp::delete(self.full(&prefix), Some(DeleteOptions::new().with_prefix()))
            }
            TxnOp::Get { key } => ETxnOp::get(self.full(&key), None),
        }
    }
}

#[async_trait::async_trait]
impl MetaStore for EtcdStore {
    async fn get(&self, key: &[u8]) -> MetaResult<Option<KeyValue>> {
        let resp = self
            .client
            .clone()
            .get(self.full(key), None)
            .await
            .map_err(map_err)?;
        Ok(resp.kvs().first().map(|kv| self.kv(kv)))
    }

    async fn range(&self, prefix: &[u8], revision: Option<Revision>) -> MetaResult<RangeResult> {
        // Read in pages, all at the revision of the first page, so a large prefix never
        // exceeds the gRPC message limit and the result is still one consistent snapshot.
        let start = self.full(prefix);
        let end = prefix_end(&start);
        let mut key = start;
        let mut at = revision;
        let mut kvs = Vec::new();
        loop {
            let mut opts = GetOptions::new()
                .with_range(end.clone())
                .with_limit(RANGE_PAGE);
            if let Some(r) = at {
                opts = opts.with_revision(r);
            }
            let resp = self
                .client
                .clone()
                .get(key.clone(), Some(opts))
                .await
                .map_err(|e| match map_err(e) {
                    MetaError::Compacted { .. } => MetaError::Compacted {
                        requested: at.unwrap_or(0),
                        compacted: 0,
                    },
                    other => other,
                })?;
            if at.is_none() {
                at = Some(resp.header().map_or(0, |h| h.revision()));
            }
            kvs.extend(resp.kvs().iter().map(|kv| self.kv(kv)));
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    key = last.key().to_vec();
                    key.push(0);
                }
                _ => break,
            }
        }
        Ok(RangeResult {
            kvs,
            revision: at.unwrap_or(0),
        })
    }

    async fn txn(&self, txn: Txn) -> MetaResult<TxnResult> {
        let compares: Vec<ECompare> = txn
            .compares
            .iter()
            .map(|c| {
                let op = match c.op {
                    CompareOp::Equal => ECompareOp::Equal,
                    CompareOp::NotEqual => ECompareOp::NotEqual,
                    CompareOp::Greater => ECompareOp::Greater,
                    CompareOp::Less => ECompareOp::Less,
                };
                let key = self.full(&c.key);
                match &c.target {
                    CompareTarget::Version(v) => ECompare::version(key, op, *v),
                    CompareTarget::CreateRevision(r) => ECompare::create_revision(key, op, *r),
                    CompareTarget::ModRevision(r) => ECompare::mod_revision(key, op, *r),
                    CompareTarget::Value(v) => ECompare::value(key, op, v.to_vec()),
                }
            })
            .collect();
        let success: Vec<ETxnOp> = txn.success.into_iter().map(|o| self.op(o)).collect();
        let failure: Vec<ETxnOp> = txn.failure.into_iter().map(|o| self.op(o)).collect();
        let resp = self
            .client
            .clone()
            .txn(
                ETxn::new()
                    .when(compares)
                    .and_then(success)
                    .or_else(failure),
            )
            .await
            .map_err(map_err)?;
        let gets = resp
            .op_responses()
            .into_iter()
            .filter_map(|r| match r {
                TxnOpResponse::Get(g) => Some(g.kvs().first().map(|kv| self.kv(kv))),
                _ => None,
            })
            .collect();
        Ok(TxnResult {
            succeeded: resp.succeeded(),
            revision: resp.header().map_or(0, |h| h.revision()),
            gets,
        })
    }

    async fn watch(&self, prefix: &[u8], start_revision: Revision) -> MetaResult<WatchStream> {
        let mut opts = WatchOptions::new().with_prefix();
        if start_revision > 0 {
            opts = opts.with_start_revision(start_revision);
        }
        let stream = self
            .client
            .clone()
            .watch(self.full(prefix), Some(opts))
            .await
            .map_err(map_err)?;
        let this = self.clone();
        let events = stream
            .map(move |resp| -> Vec<MetaResult<WatchEvent>> {
                let resp = match resp {
                    Ok(r) => r,
                    Err(e) => return vec![Err(map_err(e))],
                };
                if resp.compact_revision() > 0 {
                    return vec![Err(MetaError::Compacted {
                        requested: start_revision,
                        compacted: resp.compact_revision(),
                    })];
                }
                if resp.canceled() {
                    return vec![Err(MetaError::Unavailable(format!(
                        "watch canceled: {}",
                        resp.cancel_reason()
                    )))];
                }
                resp.events()
                    .iter()
                    .filter_map(|e| {
                        let kv = e.kv()?;
                        Some(Ok(match e.event_type() {
                            EventType::Put => WatchEvent {
                                kind: EventKind::Put,
                                kv: this.kv(kv),
                            },
                            EventType::Delete => WatchEvent {
                                kind: EventKind::Delete,
                                kv: KeyValue {
                                    value: Bytes::new(),
                                    create_revision: 0,
                                    version: 0,
                                    lease: None,
                                    ..this.kv(kv)
                                },
                            },
                        }))
                    })
                    .collect()
            })
            .flat_map(futures::stream::iter);
        Ok(Box::pin(events))
    }

    async fn grant_lease(&self, ttl_seconds: i64) -> MetaResult<LeaseId> {
        let resp = self
            .client
            .clone()
            .lease_grant(ttl_seconds, None)
            .await
            .map_err(map_err)?;
        Ok(LeaseId(resp.id()))
    }

    async fn keep_alive(&self, lease: LeaseId) -> MetaResult<()> {
        let (mut keeper, mut stream) = self
            .client
            .clone()
            .lease_keep_alive(lease.0)
            .await
            .map_err(map_err)?;
        keeper.keep_alive().await.map_err(map_err)?;
        match stream.message().await.map_err(map_err)? {
            Some(r) if r.ttl() > 0 => Ok(()),
            _ => Err(MetaError::LeaseNotFound(lease)),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> MetaResult<()> {
        self.client
            .clone()
            .lease_revoke(lease.0)
            .await
            .map_err(|e| match map_err(e) {
                MetaError::LeaseNotFound(_) => MetaError::LeaseNotFound(lease),
                other => other,
            })?;
        Ok(())
    }

    async fn compact(&self, revision: Revision) -> MetaResult<()> {
        self.client
            .clone()
            .compact(revision, None)
            .await
            .map_err(map_err)?;
        Ok(())
    }
}
