//! The metadata conformance suite against every backend: the embedded store (in memory and
//! persisted to a file) and a real etcd started for the test.

use std::sync::Arc;

use sluice_metadata::{EmbeddedStore, EtcdStore, MetaStore, MetaStoreExt, conformance};

#[tokio::test]
async fn embedded_in_memory() {
    conformance::run_all(|| async { Arc::new(EmbeddedStore::in_memory()) as Arc<dyn MetaStore> })
        .await;
}

#[tokio::test]
async fn embedded_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = std::sync::atomic::AtomicUsize::new(0);
    conformance::run_all(|| {
        let path = dir.path().join(
            n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .to_string(),
        );
        async move { Arc::new(EmbeddedStore::open(&path).expect("open")) as Arc<dyn MetaStore> }
    })
    .await;
}

#[tokio::test]
async fn etcd() {
    let etcd = sluice_testkit::Etcd::start();
    let n = std::sync::atomic::AtomicUsize::new(0);
    let endpoint = etcd.endpoint.clone();
    conformance::run_all(|| {
        let ns = format!(
            "/conformance-{}/",
            n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let endpoint = endpoint.clone();
        async move {
            Arc::new(EtcdStore::connect(&[endpoint], &ns).await.expect("connect"))
                as Arc<dyn MetaStore>
        }
    })
    .await;
}

/// Everything written survives reopening, and revisions continue where they stopped.
#[tokio::test]
async fn embedded_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rev = {
        let s = EmbeddedStore::open(dir.path()).expect("open");
        s.put("a", "1").await.expect("put");
        s.put("b", "2").await.expect("put");
        s.delete("a").await.expect("delete")
    };
    let s = EmbeddedStore::open(dir.path()).expect("reopen");
    assert_eq!(s.get(b"a").await.expect("get"), None);
    assert_eq!(
        s.get(b"b").await.expect("get").expect("b").value.as_ref(),
        b"2"
    );
    assert_eq!(s.put("c", "3").await.expect("put"), rev + 1);
    drop(s);
    // And once more, now starting from a log with records after the snapshot.
    let s = EmbeddedStore::open(dir.path()).expect("reopen");
    assert_eq!(s.range(b"", None).await.expect("range").kvs.len(), 2);
}

/// A reopened embedded store ends the previous process's leases and their keys at once.
#[tokio::test]
async fn embedded_reopen_ends_old_leases() {
    use sluice_metadata::{Txn, TxnOp};
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = EmbeddedStore::open(dir.path()).expect("open");
        let lease = s.grant_lease(60).await.expect("grant");
        s.txn(Txn {
            success: vec![TxnOp::Put {
                key: "held".into(),
                value: "x".into(),
                lease: Some(lease),
            }],
            ..Txn::default()
        })
        .await
        .expect("put");
        s.put("plain", "y").await.expect("put");
    }
    let s = EmbeddedStore::open(dir.path()).expect("reopen");
    assert_eq!(s.get(b"held").await.expect("get"), None);
    assert!(s.get(b"plain").await.expect("get").is_some());
}

/// Concurrent writers share fsyncs; a watcher still sees every write once, in revision
/// order, and every acknowledged write survives reopening.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_group_commit_keeps_order_and_durability() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(EmbeddedStore::open(dir.path()).expect("open"));
    let mut watch = store.watch(b"gc/", 0).await.expect("watch");
    let mut tasks = Vec::new();
    for t in 0..8 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                s.put(format!("gc/{t}/{i}"), "v").await.expect("put");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let mut last = 0;
    for _ in 0..400 {
        let e = tokio::time::timeout(std::time::Duration::from_secs(10), watch.next())
            .await
            .expect("event in time")
            .expect("stream open")
            .expect("event");
        assert!(e.kv.mod_revision > last, "revisions strictly increase");
        last = e.kv.mod_revision;
    }
    drop(watch);
    drop(store);
    let reopened = EmbeddedStore::open(dir.path()).expect("reopen");
    assert_eq!(
        reopened.range(b"gc/", None).await.expect("range").kvs.len(),
        400
    );
}
