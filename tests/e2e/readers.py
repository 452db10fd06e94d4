"""Reading a whole topic back with each real client, for comparisons across compaction."""

import base64
import json
import subprocess
import tempfile
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from kafka import KafkaConsumer
from kafka import TopicPartition as KpTopicPartition

NODE_DIR = Path(__file__).resolve().parent / "node"


def high_watermarks(bootstrap, topic, partitions):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "hwm-probe"})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(partitions)}
    finally:
        c.close()


def with_librdkafka(bootstrap, topic, partitions):
    """{partition: [(offset, key, value, headers, timestamp)]} via confluent-kafka."""
    ends = high_watermarks(bootstrap, topic, partitions)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "readers",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got = {p: [] for p in range(partitions)}
    done = {p for p in range(partitions) if ends[p] == 0}
    while len(done) < partitions:
        m = c.poll(5)
        assert m is not None, f"no message within 5 s; done {done}"
        if m.error():
            if m.error().code() == -191:  # partition EOF
                if m.offset() >= ends[m.partition()]:
                    done.add(m.partition())
                continue
            raise AssertionError(m.error())
        got[m.partition()].append(
            (m.offset(), m.key(), m.value(), list(m.headers() or []), m.timestamp()[1]))
    c.close()
    return got


def with_kafka_python(bootstrap, topic, partitions):
    ends = high_watermarks(bootstrap, topic, partitions)
    total = sum(ends.values())
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                      consumer_timeout_ms=10_000, fetch_max_bytes=4 << 20)
    c.assign([KpTopicPartition(topic, p) for p in range(partitions)])
    c.seek_to_beginning()
    got = {p: [] for p in range(partitions)}
    n = 0
    for m in c:
        got[m.partition].append((m.offset, m.key, m.value, list(m.headers), m.timestamp))
        n += 1
        if n == total:
            break
    c.close()
    return got


def parse_fetched(path, partitions):
    """What `node/fetchall.js` wrote, in the shape the other readers return."""
    got = {p: [] for p in range(partitions)}
    for line in Path(path).read_text().splitlines():
        r = json.loads(line)
        got[r["partition"]].append((
            r["offset"], base64.b64decode(r["key"]), base64.b64decode(r["value"]),
            [(k, base64.b64decode(v)) for k, v in r["headers"]], r["timestamp"]))
    return got


def with_kafkajs(bootstrap, topic, partitions):
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "out.jsonl"
        subprocess.run(["node", str(NODE_DIR / "consume.js"), bootstrap, topic, str(out)],
                       check=True, timeout=600)
        return parse_fetched(out, partitions)


READERS = {"librdkafka": with_librdkafka, "kafka-python": with_kafka_python,
           "kafkajs": with_kafkajs}
