"""Compaction seen by Kafka clients: reads across Parquet segments and WAL data are the
same as before compaction, with librdkafka, kafka-python and kafkajs; retention,
DeleteRecords, sweeping of unneeded objects, and restarts from a checkpoint."""

import shutil
import subprocess
import uuid

from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import BIN, FAST_GROUPS, Sluice
from readers import READERS
from records import CODECS, PARTITIONS, check, record

N = 8_000  # per codec


def create(bootstrap, topic, partitions=PARTITIONS, **configs):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    configs = {"retention.ms": "-1", **configs}
    admin.create_topics([NewTopic(topic, partitions, 1, config=configs)])[topic].result(30)


def produce(bootstrap, topic, start, n, codec):
    p = Producer({"bootstrap.servers": bootstrap, "compression.type": codec,
                  "enable.idempotence": True, "linger.ms": 5})
    for i in range(start, start + n):
        r = record(topic, i)
        p.produce(topic, r["value"], r["key"], partition=r["partition"],
                  headers=r["headers"], timestamp=r["timestamp"])
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(60) == 0


def test_reads_across_segments_and_wal_match_reads_before_compaction(tmp_dir):
    s = Sluice(tmp_dir / "data", [*FAST_GROUPS, "--segment-row-group-bytes", "64KiB"]).start()
    topic = "cross"
    create(s.bootstrap, topic)
    for k, codec in enumerate(CODECS):
        produce(s.bootstrap, topic, k * N, N, codec)
    total = len(CODECS) * N
    before = {name: read(s.bootstrap, topic, PARTITIONS) for name, read in READERS.items()}
    for got in before.values():
        check(topic, total, got)

    report = s.compact()
    assert report["segments"] >= PARTITIONS and report["records"] == total, report
    # More data after the compacted range: reads now cross from segments into WAL data.
    produce(s.bootstrap, topic, total, 2_000, "lz4")
    for name, read in READERS.items():
        after = read(s.bootstrap, topic, PARTITIONS)
        check(topic, total + 2_000, after)
        for p in range(PARTITIONS):
            n = len(before[name][p])
            assert after[p][:n] == before[name][p], f"{name}: partition {p} differs"

    # A restart loads the checkpoint (the commit records it holds are gone) and serves
    # the same data.
    s.stop()
    s.start()
    check(topic, total + 2_000, READERS["librdkafka"](s.bootstrap, topic, PARTITIONS))
    s.stop()


def test_offsets_by_time_and_fetch_limits_on_compacted_data(sluice):
    topic = "seg-times"
    create(sluice.bootstrap, topic)
    produce(sluice.bootstrap, topic, 0, 4_000, "zstd")
    sluice.compact()
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KpTp
    c = KafkaConsumer(bootstrap_servers=sluice.bootstrap)
    for i in [0, 5, 1_999, 3_999]:
        r = record(topic, i)
        tp = KpTp(topic, r["partition"])
        found = c.offsets_for_times({tp: r["timestamp"]})[tp]
        assert found.offset == i // PARTITIONS and found.timestamp == r["timestamp"]
    c.close()
    # Small fetches walk a segment a batch at a time.
    from confluent_kafka import Consumer
    cons = Consumer({"bootstrap.servers": sluice.bootstrap, "group.id": "small",
                     "fetch.max.bytes": 1024, "message.max.bytes": 1000,
                     "max.partition.fetch.bytes": 1024,
                     "enable.auto.commit": False})
    cons.assign([TopicPartition(topic, 1, 500)])
    seen = []
    while len(seen) < 500:
        m = cons.poll(5)
        assert m is not None and not m.error(), m and m.error()
        seen.append(m.offset())
    cons.close()
    assert seen == list(range(500, 1000))


def test_retention_by_time_and_size_and_delete_records(tmp_dir):
    import time
    s = Sluice(tmp_dir / "data", [*FAST_GROUPS, "--delete-delay", "0s",
                                  "--segment-target-bytes", "32KiB"]).start()
    now = int(time.time() * 1000)
    day = 86_400_000
    # By time: three days old data in a topic that keeps one day.
    create(s.bootstrap, "ret-time", 1, **{"retention.ms": str(day)})
    p = Producer({"bootstrap.servers": s.bootstrap, "linger.ms": 5})
    for i in range(300):
        p.produce("ret-time", b"old-%d" % i, partition=0, timestamp=now - 3 * day + i)
    p.flush(30)
    report = s.compact("ret-time")
    assert report["log_starts_moved"] == 1, report
    for i in range(100):
        p.produce("ret-time", b"new-%d" % i, partition=0, timestamp=now + i)
    p.flush(30)
    s.compact("ret-time")
    from confluent_kafka import Consumer
    c = Consumer({"bootstrap.servers": s.bootstrap, "group.id": "ret", "auto.offset.reset": "earliest"})
    low, high = c.get_watermark_offsets(TopicPartition("ret-time", 0), timeout=10)
    assert (low, high) == (300, 400)
    c.assign([TopicPartition("ret-time", 0, 0)])  # below the start: reset to earliest
    m = c.poll(10)
    assert m is not None and not m.error() and m.offset() == 300 and m.value() == b"new-0"
    files = list((tmp_dir / "data" / "objects" / "topics" / "ret-time").rglob("*.parquet"))
    assert len(files) == 1, files  # the expired segment's file is gone

    # By size: many small segments; retention keeps at least retention.bytes.
    create(s.bootstrap, "ret-size", 1, **{"retention.bytes": str(64 << 10)})
    for i in range(3_000):
        p.produce("ret-size", b"x" * 100, partition=0, timestamp=now)
        if i % 500 == 499:
            p.flush(30)
            s.compact("ret-size")
    p.flush(30)
    s.compact("ret-size")
    low, high = c.get_watermark_offsets(TopicPartition("ret-size", 0), timeout=10)
    assert high == 3_000 and 0 < low < high, (low, high)
    # What is kept (about 100 bytes a record in batches) is still at least retention.bytes.
    assert (high - low) * 100 >= 64 << 10, (low, high)

    # DeleteRecords: the low watermark moves to the requested offset.
    admin = AdminClient({"bootstrap.servers": s.bootstrap})
    fut = admin.delete_records([TopicPartition("ret-size", 0, 2_500)])
    result = list(fut.values())[0].result(30)
    assert result.low_watermark == 2_500
    assert c.get_watermark_offsets(TopicPartition("ret-size", 0), timeout=10) == (2_500, 3_000)
    # Into data not compacted yet: compaction goes on from there.
    for i in range(100):
        p.produce("ret-size", b"y" * 100, partition=0, timestamp=now)
        if i == 49:
            p.flush(30)  # two commits: the first one wholly before the new start
    p.flush(30)
    fut = admin.delete_records([TopicPartition("ret-size", 0, 3_050)])
    assert list(fut.values())[0].result(30).low_watermark == 3_050
    report = s.compact("ret-size")
    assert report["segments"] >= 1, report
    c.assign([TopicPartition("ret-size", 0, 3_050)])
    m = c.poll(10)
    assert m is not None and not m.error() and m.offset() == 3_050 and m.value() == b"y" * 100
    c.close()
    s.stop()


def uuid7(age_ms):
    """A version 7 uuid (as Sluice names objects) created `age_ms` ago."""
    import time
    ms = int(time.time() * 1000) - age_ms
    return uuid.UUID(int=(ms << 80) | (7 << 76) | (2 << 62) | uuid.uuid4().int & ((1 << 62) - 1))


def test_orphans_and_unreferenced_files_are_swept(tmp_dir):
    s = Sluice(tmp_dir / "data", [*FAST_GROUPS, "--delete-delay", "0s"]).start()
    create(s.bootstrap, "sweep")
    produce(s.bootstrap, "sweep", 0, 1_000, "gzip")
    objects = tmp_dir / "data" / "objects"
    # Objects named as a crashed gateway or compactor would leave them, an hour old, and
    # one just written (a flush whose commit is under way).
    old, young = uuid7(age_ms=3_600_000), uuid7(age_ms=0)
    (objects / "wal").mkdir(parents=True, exist_ok=True)
    (objects / "staging").mkdir(parents=True, exist_ok=True)
    orphan_wal = objects / "wal" / f"{old}.wal"
    orphan_staging = objects / "staging" / f"{old}.parquet"
    young_wal = objects / "wal" / f"{young}.wal"
    stray = objects / "topics" / "sweep" / "partition=0" / "date=2000-01-01" / "stray.parquet"
    stray.parent.mkdir(parents=True)
    for f in (orphan_wal, orphan_staging, young_wal, stray):
        f.write_bytes(b"junk")
    wal_before = {f.name for f in (objects / "wal").iterdir()}
    report = s.compact()
    assert not orphan_wal.exists() and not orphan_staging.exists() and not stray.exists()
    assert young_wal.exists(), "a young object may still be committed"
    assert report["deleted_staging_objects"] == 1 and report["deleted_segment_files"] == 1
    # The compacted WAL objects go as soon as nothing references them (delay 0 here).
    wal_after = {f.name for f in (objects / "wal").iterdir()}
    assert wal_after == {young_wal.name}, (wal_before, wal_after)
    check("sweep", 1_000, READERS["librdkafka"](s.bootstrap, "sweep", PARTITIONS))
    s.stop()


def test_a_deleted_topics_files_leave_the_table_at_once(sluice, tmp_dir):
    import pyarrow.dataset as ds
    create(sluice.bootstrap, "again")
    produce(sluice.bootstrap, "again", 0, 2_000, "snappy")
    sluice.compact()
    admin = AdminClient({"bootstrap.servers": sluice.bootstrap})
    admin.delete_topics(["again"])["again"].result(30)
    create(sluice.bootstrap, "again")
    produce(sluice.bootstrap, "again", 0, 400, "snappy")
    sluice.compact()
    root = sluice.data_dir / "objects" / "topics" / "again"
    t = ds.dataset(str(root), format="parquet", partitioning="hive").to_table(
        columns=["partition", "offset"])
    rows = sorted(zip(t["partition"].to_pylist(), t["offset"].to_pylist()))
    assert rows == sorted((p, o) for p in range(PARTITIONS) for o in range(100))


def test_damaged_wal_data_is_never_compacted_and_holds_up_nothing_else(tmp_dir):
    import pyarrow.dataset as ds
    s = Sluice(tmp_dir / "data", FAST_GROUPS).start()
    wal = tmp_dir / "data" / "objects" / "wal"
    create(s.bootstrap, "bad", 1)
    p = Producer({"bootstrap.servers": s.bootstrap})
    for i in range(50):
        p.produce("bad", b"bad-%d" % i, partition=0)
    p.flush(30)
    bad_objects = set(wal.iterdir())
    create(s.bootstrap, "good", 1)
    for i in range(50):
        p.produce("good", b"good-%d" % i, partition=0)
    p.flush(30)
    # Flip a byte inside the first batch of each of "bad"'s objects (bit rot), then restart
    # with an empty cache so the bytes are read back.
    s.stop()
    for f in bad_objects:
        b = bytearray(f.read_bytes())
        b[80] ^= 0xFF
        f.write_bytes(bytes(b))
    shutil.rmtree(tmp_dir / "data" / "cache", ignore_errors=True)
    s.start()
    out = subprocess.run([str(BIN), "compact", "--server", s.http], capture_output=True, text=True)
    assert out.returncode != 0 and "CRC" in out.stderr, out
    root = tmp_dir / "data" / "objects" / "topics"
    assert not (root / "bad").exists()
    good = ds.dataset(str(root / "good"), format="parquet", partitioning="hive").to_table()
    assert good["value"].to_pylist() == [b"good-%d" % i for i in range(50)]
    s.stop()
