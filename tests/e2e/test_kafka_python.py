"""kafka-python: produce with every codec, consume, offsets by time."""

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from readers import with_kafka_python
from records import CODECS, PARTITIONS, check, record

N = 25_000  # per codec: 100k records in all


def test_round_trip_every_codec(sluice):
    admin = KafkaAdminClient(bootstrap_servers=sluice.bootstrap)
    topics = [f"kp-{codec}" for codec in CODECS]
    admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics])
    admin.close()
    for codec, topic in zip(CODECS, topics):
        # kafka-python 3 producers are idempotent by default.
        p = KafkaProducer(bootstrap_servers=sluice.bootstrap, compression_type=codec, acks="all",
                          linger_ms=5)
        futures = []
        for i in range(N):
            r = record(topic, i)
            futures.append(p.send(topic, value=r["value"], key=r["key"], partition=r["partition"],
                                  headers=r["headers"], timestamp_ms=r["timestamp"]))
        p.flush(60)
        for f in futures:
            f.get(timeout=60)
        p.close()

        check(topic, N, with_kafka_python(sluice.bootstrap, topic, PARTITIONS))


def test_offsets_for_times(sluice):
    topic = "kp-times"
    p = KafkaProducer(bootstrap_servers=sluice.bootstrap, compression_type="gzip",
                      enable_idempotence=False)  # the non-idempotent path too
    for i in range(400):
        r = record(topic, i)
        p.send(topic, value=r["value"], key=r["key"], partition=r["partition"],
               timestamp_ms=r["timestamp"])
    p.flush(30)
    p.close()
    c = KafkaConsumer(bootstrap_servers=sluice.bootstrap)
    for i in [0, 3, 150, 399]:
        r = record(topic, i)
        tp = TopicPartition(topic, r["partition"])
        found = c.offsets_for_times({tp: r["timestamp"]})[tp]
        assert found.offset == i // PARTITIONS
        assert found.timestamp == r["timestamp"]
    assert c.beginning_offsets([TopicPartition(topic, 1)]) == {TopicPartition(topic, 1): 0}
    assert c.end_offsets([TopicPartition(topic, 1)]) == {TopicPartition(topic, 1): 100}
    c.close()
