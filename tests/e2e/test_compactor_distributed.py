"""Compactors as their own processes, on a real etcd and a real S3-compatible server:
killed at random points, running two at once, and metadata staying bounded."""

import random
import subprocess
import threading
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Sluice
from readers import READERS, high_watermarks
from records import PARTITIONS, check, record


def s3_table(s3, namespace, topic):
    """(partition, offset) of every row a reader listing the topic's folder sees."""
    import pyarrow.dataset as ds
    from pyarrow import fs
    s3fs = fs.S3FileSystem(endpoint_override=s3.endpoint, scheme="http", access_key="test",
                           secret_key="test", region="us-east-1")
    path = f"{s3.bucket}/{namespace}/topics/{topic}"
    try:
        info = s3fs.get_file_info(fs.FileSelector(path, recursive=True))
    except FileNotFoundError:
        return []
    files = [i.path for i in info if i.path.endswith(".parquet")]
    if not files:
        return []
    t = ds.dataset(files, filesystem=s3fs, format="parquet", partitioning="hive",
                   partition_base_dir=path).to_table(columns=["partition", "offset"])
    return list(zip(t["partition"].to_pylist(), t["offset"].to_pylist()))


def produce(bootstrap, topic, start, n, flush_every=None):
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 2,
                  "compression.type": "zstd"})
    for i in range(start, start + n):
        r = record(topic, i)
        p.produce(topic, r["value"], r["key"], partition=r["partition"], headers=r["headers"],
                  timestamp=r["timestamp"])
        if flush_every and i % flush_every == flush_every - 1:
            p.flush(30)
    assert p.flush(60) == 0


def create(bootstrap, topic):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1, config={"retention.ms": "-1"})])[
        topic].result(30)


def compactor(tmp_dir, etcd, s3, ns, name, extra=()):
    return Sluice(tmp_dir / name, [
        "--metadata", f"etcd://{etcd.endpoint}/{ns}",
        "--object-store", f"s3://{s3.bucket}/{ns}",
        *extra,
    ], env=s3.env(), mode="compactor")


def test_compactor_killed_at_random_points_loses_nothing_and_shows_no_duplicates(
        tmp_dir, etcd, s3):
    ns, topic = "killed", "kills"
    gw = Sluice(tmp_dir / "gw", [
        "--metadata", f"etcd://{etcd.endpoint}/{ns}", "--object-store", f"s3://{s3.bucket}/{ns}",
    ], env=s3.env(), mode="gateway").start()
    create(gw.bootstrap, topic)
    rng = random.Random(7)
    # Passes every 100 ms, everything due at once, small segments: each round starts with
    # fresh data to compact, and the compactor is killed while at it.
    fast = ["--compaction-interval", "100ms", "--compaction-max-age", "0s",
            "--segment-target-bytes", "16KiB"]
    n, per_round, seen_rows, interrupted = 0, 4_000, 0, 0
    for round in range(10):
        produce(gw.bootstrap, topic, n, per_round)
        n += per_round
        c = compactor(tmp_dir, etcd, s3, ns, f"c{round}", fast).start()
        time.sleep(rng.uniform(0.05, 0.6))
        c.kill9()
        rows = s3_table(s3, ns, topic)
        assert len(rows) == len(set(rows)), f"round {round}: a reader sees duplicate rows"
        assert len(rows) >= seen_rows, "published rows disappeared"
        seen_rows = len(rows)
        interrupted += seen_rows < n
    assert interrupted >= 3, "the compactor was rarely killed mid-work; the test proves little"
    # Two compactors at once finish the work; both are asked to compact everything.
    pair = [compactor(tmp_dir, etcd, s3, ns, f"final{i}", ["--segment-target-bytes", "64KiB"])
            .start() for i in range(2)]
    reports = []
    threads = [threading.Thread(target=lambda c=c: reports.append(c.compact())) for c in pair]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert len(reports) == 2
    rows = s3_table(s3, ns, topic)
    ends = high_watermarks(gw.bootstrap, topic, PARTITIONS)
    assert sorted(rows) == sorted((p, o) for p in range(PARTITIONS) for o in range(ends[p]))
    assert sum(ends.values()) == n
    check(topic, n, READERS["librdkafka"](gw.bootstrap, topic, PARTITIONS))
    for c in pair:
        c.stop()
    gw.stop()


def etcd_keys(etcd):
    out = subprocess.run(["etcdctl", f"--endpoints={etcd.endpoint}", "get", "", "--prefix",
                          "--keys-only"], capture_output=True, check=True, text=True)
    return [k for k in out.stdout.splitlines() if k.strip()]


def test_metadata_stays_flat_over_a_long_produce_and_compact_run(tmp_dir, etcd, s3):
    ns, topic = "flat", "flat"
    s = Sluice(tmp_dir / "all", [
        "--metadata", f"etcd://{etcd.endpoint}/{ns}", "--object-store", f"s3://{s3.bucket}/{ns}",
        "--delete-delay", "0s",
    ], env=s3.env()).start()
    create(s.bootstrap, topic)
    counts = []
    per_round = 800
    for r in range(12):
        # Small flushes: dozens of commit records per round.
        produce(s.bootstrap, topic, r * per_round, per_round, flush_every=20)
        s.compact()
        counts.append(len(etcd_keys(etcd)))
    assert max(counts[3:]) <= counts[2] + 3, counts
    keys = etcd_keys(etcd)
    assert not [k for k in keys if "/log/commits/" in k], keys
    total = 12 * per_round
    check(topic, total, READERS["librdkafka"](s.bootstrap, topic, PARTITIONS))
    # A restart starts from the checkpoint.
    s.stop()
    s.start()
    check(topic, total, READERS["librdkafka"](s.bootstrap, topic, PARTITIONS))
    s.stop()
