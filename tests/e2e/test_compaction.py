"""Compaction seen by Kafka clients: reads across Parquet segments and WAL data are the
same as before compaction, with librdkafka, kafka-python and kafkajs; retention,
DeleteRecords, sweeping of unneeded objects, and restarts from a checkpoint."""

import shutil
import subprocess
import uuid

from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import BIN, FAST_GROUPS, Sluice, wait_for
from readers import READERS
from records import BASE_TS, CODECS, PARTITIONS, check, record

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


def table_rows(root):
    """(partition, offset, value) of every row the table's files hold, as a reader sees it."""
    import pyarrow.dataset as ds
    t = ds.dataset(str(root), format="parquet", partitioning="hive").to_table(
        columns=["partition", "offset", "value"])
    return list(zip(t["partition"].to_pylist(), t["offset"].to_pylist(),
                    t["value"].to_pylist()))


def produce_values(bootstrap, topic, values, timestamp):
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for v in values:
        p.produce(topic, v, partition=0, timestamp=timestamp)
    assert p.flush(30) == 0


def test_small_segments_are_merged_and_no_row_is_ever_in_the_table_twice(tmp_dir):
    import time
    # Segments under 8 KiB are small.
    s = Sluice(tmp_dir / "data", [*FAST_GROUPS, "--segment-target-bytes", "64KiB"]).start()
    root = tmp_dir / "data" / "objects" / "topics"
    now = int(time.time() * 1000)
    values = [b"v%05d-" % i + b"x" * 200 for i in range(200)]

    # Today's data: each compaction of one small round makes one small segment; once the
    # run of them holds 8 KiB it is merged, and the next rounds start a new run.
    create(s.bootstrap, "merge-today", 1)
    merges, rounds, files_seen = 0, 0, []
    while merges == 0:
        assert rounds < 12, "no merge after 12 rounds of about 2 KiB"
        batch = values[rounds * 10:(rounds + 1) * 10]
        produce_values(s.bootstrap, "merge-today", batch, now)
        report = s.compact("merge-today")
        assert report["segments"] == 1, report
        merges += report["merges"]
        rounds += 1
        rows = table_rows(root / "merge-today")
        offsets = [o for _, o, _ in rows]
        assert sorted(offsets) == list(range(rounds * 10)), f"round {rounds}: {offsets}"
        files_seen.append(len(list((root / "merge-today").rglob("*.parquet"))))
    assert rounds >= 3, "the first segments were not small"
    assert files_seen[-2] == rounds - 1 and files_seen[-1] == 1, files_seen
    assert sorted(v for _, _, v in table_rows(root / "merge-today")) == values[:rounds * 10]
    assert s.metric("sluice_compactor_merged_segments_total") == rounds

    # A later compaction leaves the merged segment alone.
    produce_values(s.bootstrap, "merge-today", values[rounds * 10:rounds * 10 + 10], now)
    report = s.compact("merge-today")
    assert report["merges"] == 0, report
    assert len(list((root / "merge-today").rglob("*.parquet"))) == 2

    # Data of a day that is over: two small segments are merged at once.
    create(s.bootstrap, "merge-old", 1)
    day = 86_400_000
    produce_values(s.bootstrap, "merge-old", values[:10], now - 2 * day)
    assert s.compact("merge-old")["merges"] == 0
    produce_values(s.bootstrap, "merge-old", values[10:20], now - 2 * day)
    assert s.compact("merge-old")["merges"] == 1
    files = list((root / "merge-old").rglob("*.parquet"))
    assert len(files) == 1, files
    assert [o for _, o, _ in sorted(table_rows(root / "merge-old"))] == list(range(20))

    # Kafka reads see every record once, in order, from the merged segments; after a
    # restart (from the checkpoint the forced pass wrote) too.
    from confluent_kafka import Consumer
    for restart in (False, True):
        if restart:
            s.stop()
            s.start()
        for topic, n in (("merge-today", rounds * 10 + 10), ("merge-old", 20)):
            c = Consumer({"bootstrap.servers": s.bootstrap, "group.id": f"m-{topic}-{restart}",
                          "enable.auto.commit": False})
            c.assign([TopicPartition(topic, 0, 0)])
            got = []
            while len(got) < n:
                m = c.poll(10)
                assert m is not None and not m.error(), m and m.error()
                got.append((m.offset(), m.value()))
            c.close()
            assert got == list(enumerate(values[:n])), topic
    s.stop()


def test_uncompacted_data_over_budget_is_compacted_without_waiting_for_a_pass(tmp_dir):
    # Passes an hour apart: only the budget can start one after the first.
    s = Sluice(tmp_dir / "data", [*FAST_GROUPS, "--compaction-interval", "1h",
                                  "--compaction-max-wal-bytes", "64KiB"]).start()
    create(s.bootstrap, "budget", 1)
    values = [b"b%05d-" % i + b"y" * 1000 for i in range(200)]
    produce_values(s.bootstrap, "budget", values, BASE_TS)
    wait_for("a segment", lambda: s.metric("sluice_compactor_segments_total") >= 1)
    rows = table_rows(tmp_dir / "data" / "objects" / "topics" / "budget")
    # The 200 KiB arrive in a flush or two, so the pass the budget started found most of
    # them waiting.
    assert len(rows) >= 100, len(rows)
    assert sorted(o for _, o, _ in rows) == list(range(len(rows)))
    s.stop()
