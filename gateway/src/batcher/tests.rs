//! The batcher's ordering contract, as a property: whatever the flush sizes, the number of
//! flushes in flight and the order in which their PUTs finish, batches that one submitter
//! hands over one after another land in the log in that order, and every partition's
//! offsets stay dense.

use std::collections::BTreeMap;
use std::time::Duration;

use object_store::memory::InMemory;
use proptest::prelude::*;
use sluice_cache::CacheConfig;
use sluice_metadata::EmbeddedStore;
use sluice_metadata::records::{TOPIC_VERSION, TopicRecord};
use sluice_storage::checkpoints::ObjectCheckpoints;
use sluice_storage::faults::{Faults, FaultyStore};

use super::*;

const PARTITIONS: u32 = 3;

/// One submitter's batches: `(partition, bytes, records)`.
type Script = Vec<(u32, usize, u32)>;

fn script() -> impl Strategy<Value = Script> {
    proptest::collection::vec((0..PARTITIONS, 1usize..48 << 10, 1u32..4), 1..40)
}

#[derive(Debug)]
struct Case {
    submitters: Vec<Script>,
    flush_target_bytes: usize,
    max_inflight_flushes: usize,
    /// PUT delays in milliseconds, switched every millisecond while the case runs, so
    /// that flushes in flight finish their PUTs out of order.
    put_delays: Vec<u64>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::collection::vec(script(), 1..4),
        16usize << 10..256 << 10,
        1usize..5,
        proptest::collection::vec(0u64..8, 1..8),
    )
        .prop_map(
            |(submitters, flush_target_bytes, max_inflight_flushes, put_delays)| Case {
                submitters,
                flush_target_bytes,
                max_inflight_flushes,
                put_delays,
            },
        )
}

fn meta(bytes: usize, records: u32) -> BatchMeta {
    BatchMeta {
        size: bytes as u32,
        records,
        max_timestamp: 0,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    }
}

/// Runs a case; returns, per submitter, `(partition, records, base offset)` in submission
/// order.
async fn run_case(case: &Case) -> Vec<Vec<(u32, u32, i64)>> {
    let cancel = CancellationToken::new();
    let store: SharedStore = Arc::new(EmbeddedStore::in_memory());
    let faults = Arc::new(Faults::default());
    let objects: Arc<dyn ObjectStore> =
        Arc::new(FaultyStore::new(Arc::new(InMemory::new()), faults.clone()));
    let cache = Arc::new(
        RangeCache::open(
            &CacheConfig {
                memory_bytes: 32 << 20,
                disk: None,
            },
            objects.clone(),
        )
        .await
        .expect("a memory cache opens"),
    );
    let log = Log::start(
        store.clone(),
        Arc::new(ObjectCheckpoints(objects.clone())),
        cancel.clone(),
    )
    .await
    .expect("the log starts on an empty store");
    let topic = TopicRecord {
        v: TOPIC_VERSION,
        id: Uuid::new_v4(),
        name: "ordered".into(),
        partitions: PARTITIONS,
        configs: Default::default(),
    };
    let r = store
        .txn(Txn {
            success: vec![TxnOp::put(keys::topic(&topic.name), topic.encode())],
            ..Txn::default()
        })
        .await
        .expect("the topic is written");
    assert!(log.wait_for(r.revision, Duration::from_secs(10)).await);

    let config = GatewayConfig {
        flush_target_bytes: case.flush_target_bytes,
        max_inflight_flushes: case.max_inflight_flushes,
        flush_max_delay: Duration::from_millis(2),
        ..GatewayConfig::default()
    };
    let batcher = Batcher::start(config, store, objects, cache, log, cancel.child_token());
    let delays = case.put_delays.clone();
    let flipper = {
        let faults = faults.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            for d in delays.iter().cycle() {
                faults.delay_puts(Duration::from_millis(*d));
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(1)) => {}
                }
            }
        })
    };
    let mut tasks = Vec::new();
    for script in &case.submitters {
        let batcher = batcher.clone();
        let script = script.clone();
        let topic_id = topic.id;
        tasks.push(tokio::spawn(async move {
            // Like a connection: hand every batch over in order, then wait for them all.
            let mut pending = Vec::new();
            for (partition, bytes, records) in script {
                let append = Append {
                    topic_id,
                    partition,
                    batch: Bytes::from(vec![0u8; bytes]),
                    meta: meta(bytes, records),
                };
                pending.push((partition, records, batcher.submit(append).await));
            }
            let mut out = Vec::new();
            for (partition, records, done) in pending {
                let base = done.await.expect("an append to a healthy store succeeds");
                out.push((partition, records, base));
            }
            out
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.expect("a submitter does not panic"));
    }
    cancel.cancel();
    let _ = flipper.await;
    results
}

fn check(results: &[Vec<(u32, u32, i64)>]) -> Result<(), TestCaseError> {
    // One submitter's batches of a partition are in submission order.
    for (s, batches) in results.iter().enumerate() {
        let mut last: BTreeMap<u32, i64> = BTreeMap::new();
        for (partition, _, base) in batches {
            if let Some(prev) = last.insert(*partition, *base) {
                prop_assert!(
                    prev < *base,
                    "submitter {s}, partition {partition}: offset {base} after {prev}"
                );
            }
        }
    }
    // Every partition's offsets are dense from 0, with no batch twice.
    let mut by_partition: BTreeMap<u32, Vec<(i64, u32)>> = BTreeMap::new();
    for (partition, records, base) in results.iter().flatten() {
        by_partition
            .entry(*partition)
            .or_default()
            .push((*base, *records));
    }
    for (partition, mut batches) in by_partition {
        batches.sort_unstable();
        let mut next = 0;
        for (base, records) in batches {
            prop_assert_eq!(base, next, "partition {} is not dense", partition);
            next = base + i64::from(records);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn batches_keep_submission_order_and_offsets_stay_dense(case in case()) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime starts");
        let results = rt.block_on(run_case(&case));
        check(&results)?;
    }
}
