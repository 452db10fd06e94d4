"""Kill -9 the gateway coordinating a group mid-consumption: the group moves to another
gateway and continues from its committed offsets; none is lost."""

import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import FAST_GROUPS
from conftest import gateways as start_gateways

PARTS = 4


def test_coordinator_failover(tmp_dir, etcd, s3):
    gateways = start_gateways(tmp_dir, etcd, s3, 3, "groups", ["--lease-ttl", "3s", *FAST_GROUPS])
    bootstrap = ",".join(g.bootstrap for g in gateways)
    topic, group, total = "failover", "fo", 4000
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTS, 1)])[topic].result(30)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2})
    for i in range(total):
        p.produce(topic, value=str(i).encode(), partition=i % PARTS)
    assert p.flush(60) == 0

    consumed = []
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
    c.subscribe([topic])

    def commit():
        try:
            c.commit(asynchronous=False)
        except KafkaException as e:
            assert e.args[0].code() == KafkaError._NO_OFFSET, e  # nothing new to commit

    def consume(n, deadline_s=60):
        deadline = time.monotonic() + deadline_s
        while len(consumed) < n:
            assert time.monotonic() < deadline, f"stuck at {len(consumed)}"
            m = c.poll(0.1)
            if m is not None and not m.error():
                consumed.append((m.partition(), m.offset(), int(m.value())))
                if len(consumed) % 50 == 0:
                    commit()

    consume(total // 2)
    commit()
    # -1001: nothing committed yet for a partition.
    before = {tp.partition: max(tp.offset, 0) for tp in c.committed([TopicPartition(topic, q) for q in range(PARTS)], 10)}
    assert sum(before.values()) == len(consumed)

    # Find the coordinator and kill it.
    desc = admin.describe_consumer_groups([group])[group].result(30)
    coordinator = next(g for g in gateways if g.node_id == desc.coordinator.id)
    coordinator.kill9()
    resumed_at = len(consumed)
    consume(total, deadline_s=120)
    commit()

    # After the move, each partition continued from its committed offset: nothing was read
    # from the beginning again, and every record arrived.
    after_kill = consumed[resumed_at:]
    for q in range(PARTS):
        first = min((o for (pp, o, _) in after_kill if pp == q), default=None)
        if first is not None:
            assert first >= before[q], f"partition {q} restarted at {first}, committed {before[q]}"
    assert sorted(set(v for (_, _, v) in consumed)) == list(range(total))
    final = c.committed([TopicPartition(topic, q) for q in range(PARTS)], 10)
    assert [tp.offset for tp in final] == [total // PARTS] * PARTS
    live = ",".join(g.bootstrap for g in gateways if g is not coordinator)
    fresh = AdminClient({"bootstrap.servers": live})
    new_desc = fresh.describe_consumer_groups([group])[group].result(30)
    assert new_desc.coordinator.id != coordinator.node_id
    c.close()
    for g in gateways:
        g.stop()
