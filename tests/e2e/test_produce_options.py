"""acks=0 and acks=1 producers, and topic auto-creation turned off."""

import subprocess

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from conftest import Sluice


def read_values(bootstrap, topic, partitions, want):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got = []
    while len(got) < want:
        msg = c.poll(10)
        assert msg is not None, f"stalled after {len(got)} records"
        if not msg.error():
            got.append(msg.value())
    c.close()
    return got


def test_acks_zero_and_one(sluice):
    for acks in ["0", "1"]:
        topic = f"acks-{acks}"
        p = Producer({"bootstrap.servers": sluice.bootstrap, "acks": acks, "linger.ms": 2})
        for i in range(500):
            p.produce(topic, value=f"{acks}-{i}".encode(), partition=0)
        assert p.flush(30) == 0
        got = read_values(sluice.bootstrap, topic, 1, 500)
        assert got == [f"{acks}-{i}".encode() for i in range(500)]


def test_auto_create_off(tmp_dir):
    server = Sluice(tmp_dir / "data", ["--auto-create-topics", "false"]).start()
    out = subprocess.run(["kcat", "-L", "-b", server.bootstrap, "-t", "absent"], capture_output=True,
                         timeout=30)
    assert b"Broker: Unknown topic or partition" in out.stdout + out.stderr
    errors = []
    p = Producer({"bootstrap.servers": server.bootstrap, "message.timeout.ms": 3000})
    p.produce("absent", value=b"x", on_delivery=lambda err, msg: errors.append(err))
    p.flush(30)
    assert [e.code() for e in errors] in ([KafkaError.UNKNOWN_TOPIC_OR_PART], [KafkaError._MSG_TIMED_OUT])
    server.stop()
