//! Session reads and writes, batched: whatever requests wait while one transaction is out
//! go together in the next (up to [`MAX_OPS`]), so thousands of connects per second are
//! tens of metadata round trips, not thousands.

use bytes::Bytes;
use sluice_metadata::{KeyValue, MetaError, Revision, SharedStore, Txn, TxnOp};
use tokio::sync::{mpsc, oneshot};

/// Operations per transaction; etcd allows 128 by default.
const MAX_OPS: usize = 64;

enum Op {
    Get(Bytes, oneshot::Sender<Result<Option<KeyValue>, String>>),
    Put(Bytes, Bytes, oneshot::Sender<Result<Revision, String>>),
    Delete(Bytes, oneshot::Sender<Result<Revision, String>>),
}

impl Op {
    fn key(&self) -> &Bytes {
        match self {
            Op::Get(k, _) | Op::Put(k, _, _) | Op::Delete(k, _) => k,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Batched {
    tx: mpsc::UnboundedSender<Op>,
}

impl Batched {
    /// Starts the task that runs the batches; it ends when every handle is dropped.
    pub fn start(store: SharedStore) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store, rx));
        Self { tx }
    }

    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Option<KeyValue>, String> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Get(key.into(), tx))?;
        rx.await.map_err(|_| "session store stopped".to_string())?
    }

    /// Resolves with the revision of the transaction that wrote it.
    pub async fn put(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<Revision, String> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Put(key.into(), value.into(), tx))?;
        rx.await.map_err(|_| "session store stopped".to_string())?
    }

    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<Revision, String> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Delete(key.into(), tx))?;
        rx.await.map_err(|_| "session store stopped".to_string())?
    }

    fn send(&self, op: Op) -> Result<(), String> {
        self.tx
            .send(op)
            .map_err(|_| "session store stopped".to_string())
    }
}

async fn run(store: SharedStore, mut rx: mpsc::UnboundedReceiver<Op>) {
    // An op on a key already in the batch waits for the next one: a transaction names each
    // key at most once, and the order of one key's ops is kept.
    let mut held: Option<Op> = None;
    loop {
        let first = match held.take() {
            Some(op) => op,
            None => match rx.recv().await {
                Some(op) => op,
                None => return,
            },
        };
        let mut batch = vec![first];
        while batch.len() < MAX_OPS {
            match rx.try_recv() {
                Ok(op) if batch.iter().any(|b| b.key() == op.key()) => {
                    held = Some(op);
                    break;
                }
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let txn = Txn {
            success: batch
                .iter()
                .map(|op| match op {
                    Op::Get(k, _) => TxnOp::Get { key: k.clone() },
                    Op::Put(k, v, _) => TxnOp::put(k.clone(), v.clone()),
                    Op::Delete(k, _) => TxnOp::delete(k.clone()),
                })
                .collect(),
            ..Txn::default()
        };
        let result = store.txn(txn).await;
        let failed = |e: &MetaError| e.to_string();
        match result {
            Ok(r) => {
                let mut gets = r.gets.into_iter();
                for op in batch {
                    match op {
                        Op::Get(_, reply) => {
                            let _ = reply.send(Ok(gets.next().flatten()));
                        }
                        Op::Put(_, _, reply) | Op::Delete(_, reply) => {
                            let _ = reply.send(Ok(r.revision));
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, ops = batch.len(), "mqtt session batch failed");
                for op in batch {
                    match op {
                        Op::Get(_, reply) => {
                            let _ = reply.send(Err(failed(&e)));
                        }
                        Op::Put(_, _, reply) | Op::Delete(_, reply) => {
                            let _ = reply.send(Err(failed(&e)));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sluice_metadata::EmbeddedStore;

    use super::*;

    async fn revision(store: &SharedStore) -> Revision {
        store.range(b"", None).await.expect("range").revision
    }

    #[tokio::test]
    async fn concurrent_requests_share_transactions_and_keep_per_key_order() {
        let store: SharedStore = Arc::new(EmbeddedStore::in_memory());
        let before = revision(&store).await;
        let b = Batched::start(store.clone());
        let mut calls = Vec::new();
        for i in 0..200 {
            let b = b.clone();
            calls.push(tokio::spawn(async move {
                b.put(format!("k/{}", i % 50), format!("{i}")).await
            }));
        }
        for c in calls {
            c.await.expect("task").expect("put");
        }
        let after = revision(&store).await;
        assert!(
            after - before < 200,
            "200 puts took {} transactions",
            after - before
        );
        // The tasks sent in spawn order (one thread): the last put of k/7 was i = 157, and
        // it is what the store holds, though four batches carried puts of that key.
        let kv = b.get("k/7").await.expect("get").expect("present");
        assert_eq!(&kv.value[..], b"157");
        b.delete("k/7").await.expect("delete");
        assert!(b.get("k/7").await.expect("get").is_none());
    }
}
