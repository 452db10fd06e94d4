//! The one behaviour suite every [`MetaStore`] must pass. Each function panics on a
//! violation; `metadata/tests/conformance.rs` runs them against the embedded store and a
//! real etcd.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use crate::store::*;

const WAIT: Duration = Duration::from_secs(10);

async fn next_event(w: &mut WatchStream) -> WatchEvent {
    tokio::time::timeout(WAIT, w.next())
        .await
        .expect("watch event within the time limit")
        .expect("watch stream ended")
        .expect("watch event is not an error")
}

/// Puts, gets and ranges; revisions grow by one per write.
pub async fn basic_kv(s: &dyn MetaStore) {
    assert_eq!(s.get(b"a").await.expect("get"), None);
    let r1 = s.put("a", "1").await.expect("put");
    let r2 = s.put("a/x", "2").await.expect("put");
    let r3 = s.put("a", "3").await.expect("put");
    assert_eq!((r2, r3), (r1 + 1, r1 + 2));
    let a = s.get(b"a").await.expect("get").expect("exists");
    assert_eq!(a.value, Bytes::from_static(b"3"));
    assert_eq!((a.create_revision, a.mod_revision, a.version), (r1, r3, 2));
    let range = s.range(b"a", None).await.expect("range");
    let keys: Vec<_> = range.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(
        keys,
        vec![Bytes::from_static(b"a"), Bytes::from_static(b"a/x")]
    );
    assert!(range.revision >= r3);
    let r4 = s.delete("a").await.expect("delete");
    assert_eq!(r4, r3 + 1);
    assert_eq!(s.get(b"a").await.expect("get"), None);
    // A delete of nothing writes nothing.
    let r5 = s.delete("nothing-here").await.expect("delete");
    assert_eq!(r5, r4);
}

/// Compares decide the branch; gets inside a transaction read atomically.
pub async fn transactions(s: &dyn MetaStore) {
    let create = |v: &'static str| Txn {
        compares: vec![Compare::absent("t/k")],
        success: vec![TxnOp::put("t/k", v)],
        failure: vec![TxnOp::Get {
            key: Bytes::from_static(b"t/k"),
        }],
    };
    let first = s.txn(create("one")).await.expect("txn");
    assert!(first.succeeded);
    assert!(first.gets.is_empty());
    let second = s.txn(create("two")).await.expect("txn");
    assert!(!second.succeeded);
    assert_eq!(
        second.revision, first.revision,
        "a failed compare with only reads writes nothing"
    );
    let got = second.gets[0].as_ref().expect("get sees the key");
    assert_eq!(got.value, Bytes::from_static(b"one"));
    // Compare on mod revision: a stale writer loses.
    let cas = |rev: Revision, v: &'static str| Txn {
        compares: vec![Compare::mod_revision("t/k", rev)],
        success: vec![TxnOp::put("t/k", v)],
        failure: vec![],
    };
    assert!(
        s.txn(cas(first.revision, "three"))
            .await
            .expect("txn")
            .succeeded
    );
    assert!(
        !s.txn(cas(first.revision, "four"))
            .await
            .expect("txn")
            .succeeded
    );
    // Value compares and prefix deletes.
    let by_value = Txn {
        compares: vec![Compare {
            key: Bytes::from_static(b"t/k"),
            op: CompareOp::Equal,
            target: CompareTarget::Value(Bytes::from_static(b"three")),
        }],
        success: vec![
            TxnOp::put("u/j", "x"),
            TxnOp::DeletePrefix {
                prefix: Bytes::from_static(b"t/"),
            },
        ],
        failure: vec![],
    };
    let r = s.txn(by_value).await.expect("txn");
    assert!(r.succeeded);
    assert!(s.range(b"t/", None).await.expect("range").kvs.is_empty());
    assert_eq!(s.range(b"u/", None).await.expect("range").kvs.len(), 1);
    // Writing one key twice in a transaction is refused.
    let twice = Txn {
        success: vec![TxnOp::put("u/a", "1"), TxnOp::delete("u/a")],
        ..Txn::default()
    };
    assert!(matches!(s.txn(twice).await, Err(MetaError::Rejected(_))));
}

/// A watch from a past revision replays history in order, then follows live writes.
pub async fn watch_replays_then_follows(s: &dyn MetaStore) {
    let r1 = s.put("w/1", "a").await.expect("put");
    s.put("other", "z").await.expect("put");
    let r2 = s.put("w/2", "b").await.expect("put");
    let mut w = s.watch(b"w/", r1).await.expect("watch");
    let e = next_event(&mut w).await;
    assert_eq!(
        (e.kind, e.kv.key, e.kv.mod_revision),
        (EventKind::Put, Bytes::from_static(b"w/1"), r1)
    );
    let e = next_event(&mut w).await;
    assert_eq!(
        (e.kv.key, e.kv.mod_revision),
        (Bytes::from_static(b"w/2"), r2)
    );
    let r3 = s.delete("w/1").await.expect("delete");
    let e = next_event(&mut w).await;
    assert_eq!(
        (e.kind, e.kv.key, e.kv.mod_revision),
        (EventKind::Delete, Bytes::from_static(b"w/1"), r3)
    );
    let r4 = s.put("w/3", "c").await.expect("put");
    let e = next_event(&mut w).await;
    assert_eq!(
        (e.kv.value, e.kv.mod_revision),
        (Bytes::from_static(b"c"), r4)
    );
}

/// A range at a past revision sees the store as it was then.
pub async fn range_at_revision(s: &dyn MetaStore) {
    let r1 = s.put("h/a", "1").await.expect("put");
    s.put("h/a", "2").await.expect("put");
    s.put("h/b", "3").await.expect("put");
    s.delete("h/a").await.expect("delete");
    let then = s.range(b"h/", Some(r1)).await.expect("range");
    assert_eq!(then.revision, r1);
    assert_eq!(then.kvs.len(), 1);
    assert_eq!(then.kvs[0].value, Bytes::from_static(b"1"));
    let now = s.range(b"h/", None).await.expect("range");
    assert_eq!(now.kvs.len(), 1);
    assert_eq!(now.kvs[0].key, Bytes::from_static(b"h/b"));
}

/// Keys attached to a lease go away, with a delete event, when it is revoked or expires.
pub async fn leases(s: &dyn MetaStore) {
    let lease = s.grant_lease(30).await.expect("grant");
    let start = s.put("l/probe", "").await.expect("put") + 1;
    let mut w = s.watch(b"l/", start).await.expect("watch");
    s.txn(Txn {
        success: vec![TxnOp::Put {
            key: Bytes::from_static(b"l/k"),
            value: Bytes::from_static(b"v"),
            lease: Some(lease),
        }],
        ..Txn::default()
    })
    .await
    .expect("put with lease");
    assert_eq!(next_event(&mut w).await.kv.lease, Some(lease));
    s.keep_alive(lease).await.expect("keep alive");
    s.revoke_lease(lease).await.expect("revoke");
    let e = next_event(&mut w).await;
    assert_eq!(
        (e.kind, e.kv.key),
        (EventKind::Delete, Bytes::from_static(b"l/k"))
    );
    assert!(
        s.keep_alive(lease).await.is_err(),
        "a revoked lease cannot be kept alive"
    );

    let short = s.grant_lease(1).await.expect("grant");
    s.txn(Txn {
        success: vec![TxnOp::Put {
            key: Bytes::from_static(b"l/short"),
            value: Bytes::new(),
            lease: Some(short),
        }],
        ..Txn::default()
    })
    .await
    .expect("put with lease");
    assert_eq!(next_event(&mut w).await.kind, EventKind::Put);
    let e = next_event(&mut w).await;
    assert_eq!(
        (e.kind, e.kv.key),
        (EventKind::Delete, Bytes::from_static(b"l/short")),
        "expired"
    );
}

/// After compaction, watches from older revisions fail instead of skipping events.
pub async fn compaction(s: &dyn MetaStore) {
    let r1 = s.put("c/1", "a").await.expect("put");
    let r2 = s.put("c/2", "b").await.expect("put");
    s.compact(r2).await.expect("compact");
    match s.watch(b"c/", r1).await {
        Err(MetaError::Compacted { .. }) => {}
        Ok(mut w) => match tokio::time::timeout(WAIT, w.next())
            .await
            .expect("answer in time")
        {
            Some(Err(MetaError::Compacted { .. })) => {}
            other => panic!("expected a compacted error, got {other:?}"),
        },
        Err(e) => panic!("expected a compacted error, got {e}"),
    }
    let mut w = s
        .watch(b"c/", r2 + 1)
        .await
        .expect("watch after compaction point");
    let r3 = s.put("c/3", "c").await.expect("put");
    assert_eq!(next_event(&mut w).await.kv.mod_revision, r3);
}

/// A range larger than one page of a backend's paging is returned whole, in key order, at
/// one revision.
pub async fn large_range(s: &dyn MetaStore) {
    const N: usize = 2_500;
    let value = Bytes::from(vec![b'x'; 200]);
    for chunk in (0..N).collect::<Vec<_>>().chunks(100) {
        let ops = chunk
            .iter()
            .map(|i| TxnOp::put(format!("big/{i:05}"), value.clone()))
            .collect();
        s.txn(Txn {
            success: ops,
            ..Txn::default()
        })
        .await
        .expect("txn");
    }
    let before = s.range(b"big/", None).await.expect("range");
    s.put("big/zzzzz", "late").await.expect("put");
    let again = s
        .range(b"big/", Some(before.revision))
        .await
        .expect("range at revision");
    assert_eq!(before.kvs.len(), N);
    assert_eq!(again.kvs, before.kvs);
    let keys: Vec<_> = before.kvs.iter().map(|kv| kv.key.clone()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
}

/// Concurrent compare-and-swap increments lose no update.
pub async fn concurrent_cas(s: Arc<dyn MetaStore>) {
    const TASKS: usize = 6;
    const EACH: usize = 15;
    let mut handles = Vec::new();
    for _ in 0..TASKS {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            for _ in 0..EACH {
                loop {
                    let cur = s.get(b"cas/n").await.expect("get");
                    let (rev, n) = match &cur {
                        None => (0, 0u64),
                        Some(kv) => (
                            kv.mod_revision,
                            std::str::from_utf8(&kv.value)
                                .expect("utf8")
                                .parse()
                                .expect("number"),
                        ),
                    };
                    let txn = Txn {
                        compares: vec![Compare::mod_revision("cas/n", rev)],
                        success: vec![TxnOp::put("cas/n", (n + 1).to_string())],
                        failure: vec![],
                    };
                    if s.txn(txn).await.expect("txn").succeeded {
                        break;
                    }
                }
            }
        }));
    }
    for h in handles {
        h.await.expect("task");
    }
    let kv = s.get(b"cas/n").await.expect("get").expect("exists");
    assert_eq!(kv.value, Bytes::from((TASKS * EACH).to_string()));
    assert_eq!(kv.version, (TASKS * EACH) as i64);
}

/// Runs the whole suite on stores made by `make` (one fresh store per case).
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn MetaStore>>,
{
    basic_kv(&*make().await).await;
    transactions(&*make().await).await;
    watch_replays_then_follows(&*make().await).await;
    range_at_revision(&*make().await).await;
    leases(&*make().await).await;
    compaction(&*make().await).await;
    large_range(&*make().await).await;
    concurrent_cas(make().await).await;
}
