"""librdkafka through confluent-kafka: admin, produce with every codec, consume, offsets by time."""

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from records import CODECS, PARTITIONS, check, record

N = 25_000  # per codec: 100k records in all


def produce(bootstrap, topic, codec, n):
    p = Producer({
        "bootstrap.servers": bootstrap,
        "compression.type": codec,
        "linger.ms": 5,
        "acks": "all",
    })
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)

    for i in range(n):
        r = record(topic, i)
        while True:
            try:
                p.produce(topic, value=r["value"], key=r["key"], partition=r["partition"],
                          headers=r["headers"], timestamp=r["timestamp"], on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    assert p.flush(60) == 0
    assert errors == []


def consume(bootstrap, topic, n):
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "unused",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    })
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    got = {p: [] for p in range(PARTITIONS)}
    eof = set()
    count = 0
    while len(eof) < PARTITIONS or count < n:
        msg = c.poll(10)
        assert msg is not None, f"stalled after {count} records"
        if msg.error():
            assert msg.error().code() == -191, msg.error()  # _PARTITION_EOF
            eof.add(msg.partition())
            continue
        eof.discard(msg.partition())
        count += 1
        got[msg.partition()].append(
            (msg.offset(), msg.key(), msg.value(), msg.headers() or [], msg.timestamp()[1]))
    c.close()
    return got


def test_round_trip_every_codec(sluice):
    admin = AdminClient({"bootstrap.servers": sluice.bootstrap})
    topics = [f"ck-{codec}" for codec in CODECS]
    for f in admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics]).values():
        f.result(30)
    for codec, topic in zip(CODECS, topics):
        produce(sluice.bootstrap, topic, codec, N)
        check(topic, N, consume(sluice.bootstrap, topic, N))


def test_offsets_for_times(sluice):
    topic = "ck-times"
    produce(sluice.bootstrap, topic, "lz4", 2000)
    c = Consumer({"bootstrap.servers": sluice.bootstrap, "group.id": "unused"})
    # Record i is at partition i % 4, offset i // 4, with timestamp BASE + i.
    for i in [0, 1, 7, 1234, 1999]:
        r = record(topic, i)
        [tp] = c.offsets_for_times([TopicPartition(topic, r["partition"], r["timestamp"])], timeout=10)
        assert tp.error is None
        assert tp.offset == i // PARTITIONS, (i, tp)
    # Between two records of a partition: the next one.
    [tp] = c.offsets_for_times([TopicPartition(topic, 0, record(topic, 4)["timestamp"] - 2)], timeout=10)
    assert tp.offset == 1
    # After the last record: no offset (-1: end).
    [tp] = c.offsets_for_times([TopicPartition(topic, 0, 10**13)], timeout=10)
    assert tp.offset == -1
    lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    assert (lo, hi) == (0, 500)
    c.close()
