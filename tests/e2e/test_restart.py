"""kill -9 during a produce load: after restart, every acknowledged record is at the offset
it was acknowledged with."""

from confluent_kafka import Consumer, Producer, TopicPartition

from records import PARTITIONS, value
from conftest import Sluice


def consume_all(bootstrap, topic):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False,
                  "enable.partition.eof": True})
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    got = {p: {} for p in range(PARTITIONS)}
    eof = set()
    while len(eof) < PARTITIONS:
        msg = c.poll(10)
        assert msg is not None, "stalled"
        if msg.error():
            eof.add(msg.partition())
            continue
        assert msg.offset() not in got[msg.partition()], "duplicate offset"
        got[msg.partition()][msg.offset()] = msg.value()
    c.close()
    return got


def test_acknowledged_records_survive_kill9(tmp_dir):
    server = Sluice(tmp_dir / "data", ["--default-partitions", str(PARTITIONS)]).start()
    topic = "restart"
    acked = []
    p = Producer({"bootstrap.servers": server.bootstrap, "linger.ms": 2, "acks": "all",
                  "message.timeout.ms": 5000, "retries": 0})

    def on_delivery(err, msg):
        if err is None:
            acked.append((msg.partition(), msg.offset(), msg.value()))

    i = 0
    killed = False
    while not killed:
        try:
            p.produce(topic, value=value(topic, i), partition=i % PARTITIONS, on_delivery=on_delivery)
            i += 1
        except BufferError:
            pass
        p.poll(0)
        if len(acked) >= 20_000:
            server.kill9()
            killed = True
    in_flight = i - len(acked)
    p.flush(10)
    assert in_flight > 0, "the kill should land while records are in flight"

    server.start()
    got = consume_all(server.bootstrap, topic)
    for part, offset, val in acked:
        assert got[part].get(offset) == val, f"acknowledged record {part}@{offset} lost or changed"
    for part, offsets in got.items():
        assert sorted(offsets) == list(range(len(offsets))), f"partition {part}: offsets not dense"
    server.stop()
