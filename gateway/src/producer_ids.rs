//! Producer ids, unique across every gateway: each gateway reserves blocks of ids from one
//! counter in metadata (compare-and-swap) and hands them out from memory.

use std::ops::Range;

use sluice_metadata::{Compare, MetaError, SharedStore, Txn, TxnOp};
use tokio::sync::Mutex;

const KEY: &str = "ids/producer";
/// Ids reserved per metadata round trip.
const BLOCK: i64 = 1000;

pub struct ProducerIds {
    store: SharedStore,
    free: Mutex<Range<i64>>,
}

impl ProducerIds {
    pub fn new(store: SharedStore) -> Self {
        Self {
            store,
            free: Mutex::new(0..0),
        }
    }

    pub async fn next(&self) -> Result<i64, MetaError> {
        let mut free = self.free.lock().await;
        if let Some(id) = free.next() {
            return Ok(id);
        }
        loop {
            let current = self.store.get(KEY.as_bytes()).await?;
            let (start, revision) = match &current {
                None => (0, 0),
                Some(kv) => (
                    std::str::from_utf8(&kv.value)
                        .ok()
                        .and_then(|v| v.parse::<i64>().ok())
                        .ok_or_else(|| MetaError::Corrupt(format!("{KEY} is not a number")))?,
                    kv.mod_revision,
                ),
            };
            let txn = Txn {
                compares: vec![Compare::mod_revision(KEY, revision)],
                success: vec![TxnOp::put(KEY, (start + BLOCK).to_string())],
                failure: vec![],
            };
            if self.store.txn(txn).await?.succeeded {
                *free = start..start + BLOCK;
                return Ok(free.next().expect("invariant: a fresh block is not empty"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use sluice_metadata::EmbeddedStore;

    use super::*;

    #[tokio::test]
    async fn ids_are_unique_across_allocators() {
        let store: SharedStore = Arc::new(EmbeddedStore::in_memory());
        let a = Arc::new(ProducerIds::new(store.clone()));
        let b = Arc::new(ProducerIds::new(store));
        let mut tasks = Vec::new();
        for i in 0..8 {
            let ids = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                for _ in 0..300 {
                    out.push(ids.next().await.expect("id"));
                }
                out
            }));
        }
        let mut seen = HashSet::new();
        for t in tasks {
            for id in t.await.expect("task") {
                assert!(seen.insert(id), "id {id} handed out twice");
            }
        }
        assert_eq!(seen.len(), 2400);
    }
}
