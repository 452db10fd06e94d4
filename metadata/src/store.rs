use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;

/// A revision of the whole store. Every write makes a new one; they only grow.
pub type Revision = i64;

/// A lease id. Keys attached to a lease are deleted when it expires or is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub i64);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Bytes,
    pub value: Bytes,
    /// Revision of the write that created the key (since its last deletion).
    pub create_revision: Revision,
    /// Revision of the last write to the key.
    pub mod_revision: Revision,
    /// Number of writes since creation; 0 means the key does not exist.
    pub version: i64,
    pub lease: Option<LeaseId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change seen by a watch. For deletes, `kv.value` is empty and `kv.mod_revision` is
/// the revision of the deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventKind,
    pub kv: KeyValue,
}

/// What a compare looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareTarget {
    /// Number of writes since creation (0 when the key does not exist).
    Version(i64),
    CreateRevision(Revision),
    ModRevision(Revision),
    Value(Bytes),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Greater,
    Less,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    pub key: Bytes,
    pub op: CompareOp,
    pub target: CompareTarget,
}

impl Compare {
    /// The key does not exist.
    pub fn absent(key: impl Into<Bytes>) -> Self {
        Self {
            key: key.into(),
            op: CompareOp::Equal,
            target: CompareTarget::Version(0),
        }
    }
    /// The key was last written at exactly `rev` (0: does not exist).
    pub fn mod_revision(key: impl Into<Bytes>, rev: Revision) -> Self {
        Self {
            key: key.into(),
            op: CompareOp::Equal,
            target: CompareTarget::ModRevision(rev),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    Put {
        key: Bytes,
        value: Bytes,
        lease: Option<LeaseId>,
    },
    Delete {
        key: Bytes,
    },
    /// Deletes every key that starts with the prefix.
    DeletePrefix {
        prefix: Bytes,
    },
    /// Reads one key as of the transaction.
    Get {
        key: Bytes,
    },
}

impl TxnOp {
    pub fn put(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Self::Put {
            key: key.into(),
            value: value.into(),
            lease: None,
        }
    }
    pub fn delete(key: impl Into<Bytes>) -> Self {
        Self::Delete { key: key.into() }
    }
}

/// If every compare holds, the `success` ops run, otherwise the `failure` ops; atomically.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResult {
    pub succeeded: bool,
    /// The store's revision after the transaction (unchanged if it wrote nothing).
    pub revision: Revision,
    /// One entry per `Get` op of the branch that ran, in order.
    pub gets: Vec<Option<KeyValue>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeResult {
    /// Sorted by key.
    pub kvs: Vec<KeyValue>,
    /// The revision the range was read at.
    pub revision: Revision,
}

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The requested revision is older than the oldest one the store still keeps.
    #[error("revision {requested} has been compacted (oldest kept: {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    /// The revision is newer than the store's current one.
    #[error("revision {requested} is in the future (current: {current})")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    #[error("lease {0:?} not found or expired")]
    LeaseNotFound(LeaseId),
    /// The store cannot be reached or refused the request; retrying may help.
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    /// A request the store rejects as too large or malformed; retrying will not help.
    #[error("metadata request rejected: {0}")]
    Rejected(String),
    #[error("metadata store file error: {0}")]
    Io(#[from] std::io::Error),
    #[error("metadata store file is corrupt: {0}")]
    Corrupt(String),
}

pub type MetaResult<T> = Result<T, MetaError>;

pub type WatchStream = Pin<Box<dyn Stream<Item = MetaResult<WatchEvent>> + Send>>;

/// A key-value store with etcd's semantics.
///
/// Contract, which [`crate::conformance`] checks for every implementation:
/// - Every write (a put, a delete that deleted something, a transaction that wrote) makes
///   exactly one new revision; revisions only grow and are never reused.
/// - `range` and `get` see every write whose call has returned.
/// - A watch from revision `r` delivers every event with revision `>= r` for keys under the
///   prefix, in revision order, without gaps, then every later event; if `r` is older than
///   the store keeps, it fails with [`MetaError::Compacted`].
/// - A write that returned `Ok` is durable: it survives a crash of the process.
/// - Keys attached to a lease are deleted (with delete events) when the lease expires.
#[async_trait::async_trait]
pub trait MetaStore: Send + Sync + std::fmt::Debug + 'static {
    async fn get(&self, key: &[u8]) -> MetaResult<Option<KeyValue>>;

    /// All keys starting with `prefix`, at `revision` (latest if `None`).
    async fn range(&self, prefix: &[u8], revision: Option<Revision>) -> MetaResult<RangeResult>;

    async fn txn(&self, txn: Txn) -> MetaResult<TxnResult>;

    async fn watch(&self, prefix: &[u8], start_revision: Revision) -> MetaResult<WatchStream>;

    async fn grant_lease(&self, ttl_seconds: i64) -> MetaResult<LeaseId>;

    /// Renews a lease; fails with [`MetaError::LeaseNotFound`] once it has expired.
    async fn keep_alive(&self, lease: LeaseId) -> MetaResult<()>;

    async fn revoke_lease(&self, lease: LeaseId) -> MetaResult<()>;

    /// Forgets history older than `revision`; watches and ranges before it then fail.
    async fn compact(&self, revision: Revision) -> MetaResult<()>;
}

/// Convenience operations built from the trait's primitives.
#[async_trait::async_trait]
pub trait MetaStoreExt: MetaStore {
    async fn put(
        &self,
        key: impl Into<Bytes> + Send,
        value: impl Into<Bytes> + Send,
    ) -> MetaResult<Revision> {
        let r = self
            .txn(Txn {
                success: vec![TxnOp::put(key, value)],
                ..Txn::default()
            })
            .await?;
        Ok(r.revision)
    }

    async fn delete(&self, key: impl Into<Bytes> + Send) -> MetaResult<Revision> {
        let r = self
            .txn(Txn {
                success: vec![TxnOp::delete(key)],
                ..Txn::default()
            })
            .await?;
        Ok(r.revision)
    }
}

impl<T: MetaStore + ?Sized> MetaStoreExt for T {}

pub type SharedStore = Arc<dyn MetaStore>;
