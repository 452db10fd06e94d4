"""Consumer groups with librdkafka (confluent-kafka): balanced assignment, exactly-once
consumption across rebalances, committed offsets, cooperative-sticky, static membership,
and group state surviving a restart."""

import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import FAST_GROUPS, Sluice

PARTS = 6


def create(server, topic, partitions=PARTS):
    admin = AdminClient({"bootstrap.servers": server.bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)


def produce(server, topic, start, n, partitions=PARTS):
    p = Producer({"bootstrap.servers": server.bootstrap, "linger.ms": 2})
    for i in range(start, start + n):
        p.produce(topic, value=str(i).encode(), partition=i % partitions)
    assert p.flush(30) == 0


class Member:
    """A group member that commits what it processed whenever partitions are taken away."""

    def __init__(self, server, group, topic, **extra):
        self.consumed = []
        self.assignments = []
        self.closing = False
        conf = {"bootstrap.servers": server.bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                "enable.auto.commit": False, "session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
        conf.update(extra)
        self.c = Consumer(conf)
        self.cooperative = conf.get("partition.assignment.strategy") == "cooperative-sticky"
        self.c.subscribe([topic], on_assign=self.on_assign, on_revoke=self.on_revoke)

    def on_assign(self, c, parts):
        self.assignments.append(sorted(p.partition for p in parts))

    def on_revoke(self, c, parts):
        if self.consumed and not self.closing:
            try:
                c.commit(asynchronous=False)
            except KafkaException as e:
                # Nothing consumed since the last commit.
                assert e.args[0].code() == KafkaError._NO_OFFSET, e

    def poll(self):
        m = self.c.poll(0.05)
        if m is not None and not m.error():
            self.consumed.append((m.partition(), m.offset(), int(m.value())))
        return m

    def assigned(self):
        return sorted(p.partition for p in self.c.assignment())

    def close(self):
        self.on_revoke(self.c, [])
        self.closing = True
        self.c.close()


def poll_until(members, done, timeout=60):
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        for m in members:
            m.poll()


def all_values(members):
    return sorted(v for m in members for (_, _, v) in m.consumed)


def test_rebalances_keep_consumption_exactly_once(sluice):
    topic, group = "g-eo", "eo"
    create(sluice, topic)
    total = 3000
    produce(sluice, topic, 0, total)
    members = [Member(sluice, group, topic) for _ in range(3)]
    # Balanced: three members, two partitions each.
    poll_until(members, lambda: sorted(len(m.assigned()) for m in members) == [2, 2, 2])
    poll_until(members, lambda: len(all_values(members)) >= total // 3)
    # One leaves, another joins: both trigger rebalances.
    members[2].close()
    members = members[:2] + [Member(sluice, group, topic)] + [members[2]]
    active = members[:3]
    poll_until(active, lambda: len(all_values(members)) >= total)
    assert all_values(members) == list(range(total)), "every record exactly once across members"
    for m in active:
        m.close()

    # Committed offsets equal the log end.
    probe = Consumer({"bootstrap.servers": sluice.bootstrap, "group.id": group})
    committed = probe.committed([TopicPartition(topic, p) for p in range(PARTS)], timeout=10)
    assert [tp.offset for tp in committed] == [total // PARTS] * PARTS
    probe.close()

    # A member started later resumes exactly where the group committed.
    produce(sluice, topic, total, 60)
    late = Member(sluice, group, topic)
    poll_until([late], lambda: len(late.consumed) >= 60)
    deadline = time.monotonic() + 1
    while time.monotonic() < deadline:
        late.poll()
    assert sorted(v for (_, _, v) in late.consumed) == list(range(total, total + 60))
    late.close()


def test_cooperative_sticky(sluice):
    topic, group = "g-coop", "coop"
    create(sluice, topic)
    produce(sluice, topic, 0, 1200)
    coop = {"partition.assignment.strategy": "cooperative-sticky"}
    a, b = Member(sluice, group, topic, **coop), Member(sluice, group, topic, **coop)
    poll_until([a, b], lambda: sorted(len(m.assigned()) for m in (a, b)) == [3, 3])
    before = {id(m): set(m.assigned()) for m in (a, b)}
    c = Member(sluice, group, topic, **coop)
    poll_until([a, b, c], lambda: sorted(len(m.assigned()) for m in (a, b, c)) == [2, 2, 2])
    # Sticky and incremental: the old members kept partitions they had.
    for m in (a, b):
        assert set(m.assigned()) <= before[id(m)]
    poll_until([a, b, c], lambda: len(all_values([a, b, c])) >= 1200)
    assert all_values([a, b, c]) == list(range(1200))
    for m in (a, b, c):
        m.close()


def test_static_member_restart_causes_no_rebalance(sluice):
    topic, group = "g-static", "static"
    create(sluice, topic)
    a = Member(sluice, group, topic, **{"group.instance.id": "a"})
    b = Member(sluice, group, topic, **{"group.instance.id": "b", "session.timeout.ms": 10000})
    poll_until([a, b], lambda: sorted(len(m.assigned()) for m in (a, b)) == [3, 3])
    a_parts = a.assigned()
    rounds = len(a.assignments)
    # b restarts with the same instance id inside its session timeout.
    b.c.close()
    b2 = Member(sluice, group, topic, **{"group.instance.id": "b", "session.timeout.ms": 10000})
    poll_until([a, b2], lambda: len(b2.assigned()) == 3)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        a.poll()
        b2.poll()
    assert len(a.assignments) == rounds, "the other member was not rebalanced"
    assert a.assigned() == a_parts
    a.close()
    b2.close()


def test_groups_and_producer_state_survive_restart(tmp_dir):
    server = Sluice(tmp_dir / "data", ["--default-partitions", str(PARTS), *FAST_GROUPS]).start()
    topic, group = "g-restart", "restart"
    create(server, topic)
    produce(server, topic, 0, 600)
    m = Member(server, group, topic)
    poll_until([m], lambda: len(m.consumed) >= 600)
    m.close()
    p = Producer({"bootstrap.servers": server.bootstrap, "enable.idempotence": True})
    p.produce(topic, value=b"600", partition=0)
    assert p.flush(30) == 0

    server.stop()
    server.start()
    probe = Consumer({"bootstrap.servers": server.bootstrap, "group.id": group})
    committed = probe.committed([TopicPartition(topic, p) for p in range(PARTS)], timeout=10)
    assert [tp.offset for tp in committed] == [100] * PARTS
    probe.close()
    # The idempotent producer keeps going after the restart without gaps or rejections.
    for i in range(601, 700):
        p.produce(topic, value=str(i).encode(), partition=0)
    assert p.flush(30) == 0
    m = Member(server, group, topic)
    poll_until([m], lambda: len(m.consumed) >= 100)
    assert sorted(v for (_, _, v) in m.consumed) == list(range(600, 700))
    m.close()
    server.stop()


def test_offset_commit_metadata_round_trips(sluice):
    topic = "g-meta"
    create(sluice, topic)
    c = Consumer({"bootstrap.servers": sluice.bootstrap, "group.id": "meta", "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition(topic, 1, 42, metadata="checkpoint: 42 ✓")], asynchronous=False)
    [tp] = c.committed([TopicPartition(topic, 1)], timeout=10)
    assert (tp.offset, tp.metadata) == (42, "checkpoint: 42 ✓")
    [none] = c.committed([TopicPartition(topic, 2)], timeout=10)
    assert none.offset == -1001  # nothing committed
    c.close()
