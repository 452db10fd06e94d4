"""A connection's produce requests are stored in the order they arrive.

librdkafka's default producer is not idempotent and keeps many Produce requests in flight on
one connection; it relies on the broker appending them in arrival order. Small records
followed by large ones (librdkafka's test 0041) once came back with whole runs reversed.
"""

import re

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Sluice

SMALL, LARGE = 10_000, 500_000


def produce_numbered(bootstrap, topic, count, partitions):
    """Record i goes to partition i % partitions, its first 8 bytes its number."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    errors = []
    for i in range(count):
        size = SMALL if i < count // 2 else LARGE
        value = (b"%08d" % i).ljust(size, b"x")
        while True:
            try:
                p.produce(topic, value, partition=i % partitions,
                          on_delivery=lambda err, _msg: err and errors.append(err))
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    assert p.flush(180) == 0
    assert errors == []


def read_numbers(bootstrap, topic, partition, want):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False,
                  "fetch.message.max.bytes": 100_000})
    c.assign([TopicPartition(topic, partition, 0)])
    got = []
    while len(got) < want:
        msg = c.poll(15)
        assert msg is not None, f"stalled after {len(got)} records"
        if not msg.error():
            got.append((msg.offset(), int(msg.value()[:8])))
    c.close()
    return got


@pytest.mark.parametrize("flush_target", ["4MiB", "256MiB"])
@pytest.mark.parametrize("partitions", [1, 3])
def test_pipelined_produce_requests_are_stored_in_arrival_order(tmp_dir, flush_target, partitions):
    server = Sluice(tmp_dir / "data", ["--flush-target-bytes", flush_target],
                    env={"RUST_LOG": "info,sluice_gateway::kafka::produce=debug"}).start()
    topic = "ordered"
    admin = AdminClient({"bootstrap.servers": server.bootstrap})
    admin.create_topics([NewTopic(topic, partitions)])[topic].result()
    count = 600
    produce_numbered(server.bootstrap, topic, count, partitions)
    for p in range(partitions):
        got = read_numbers(server.bootstrap, topic, p, len(range(p, count, partitions)))
        expected = list(range(p, count, partitions))
        misplaced = [(offset, n) for (offset, n), want in zip(got, expected) if n != want]
        assert misplaced == [], f"partition {p}: (offset, record) out of place: {misplaced[:20]}"
        assert [o for o, _ in got] == list(range(len(expected)))
    server.stop()
    # Each request is traced at debug with its connection, correlation id, partitions, sizes
    # and result, enough to tell from a log which request went where.
    log = re.sub(r"\x1b\[[0-9;]*m", "", server.log_path.read_text(errors="replace"))
    submitted = re.findall(r"produce request submitted conn=(\d+) correlation_id=(\d+) acks=-1 "
                           r"partitions=ordered-\d+: \d+ bytes", log)
    assert len(submitted) > 1
    by_conn = {}
    for conn, cid in submitted:
        by_conn.setdefault(conn, []).append(int(cid))
    for cids in by_conn.values():
        assert cids == sorted(cids), "requests submitted out of arrival order"
    answered = re.findall(r"produce request answered conn=\d+ correlation_id=\d+ acks=-1 "
                          r"waited_ms=\d+ results=ordered-\d+: offset \d+", log)
    assert len(answered) == len(submitted)
