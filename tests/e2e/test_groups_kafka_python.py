"""Three-member kafka-python groups: balanced assignment, every record consumed exactly once
while members leave and join, committed offsets at the log end, and a restarted member
resuming where the group committed.

Each member polls from its own thread with a long poll timeout: kafka-python 3.0 drops a
finished join when the poll that started it timed out first, and then joins again, so
short polls make a group rebalance over and over (against any broker)."""

import threading
import time

from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from test_groups import PARTS, produce


class Member(threading.Thread):
    """Polls, records what it read, and commits it before polling again, so a rebalance
    (which happens inside poll) never hands a partition over with uncommitted reads."""

    def __init__(self, server, topic, group, sink, lock):
        super().__init__()
        self.c = KafkaConsumer(topic, bootstrap_servers=server.bootstrap, group_id=group,
                               auto_offset_reset="earliest", enable_auto_commit=False,
                               session_timeout_ms=6000, heartbeat_interval_ms=500)
        self.sink, self.lock = sink, lock
        self.stop = threading.Event()
        self.start()

    def run(self):
        while not self.stop.is_set():
            batch = self.c.poll(timeout_ms=500)
            with self.lock:
                for records in batch.values():
                    self.sink.extend(int(r.value) for r in records)
            if batch:
                self.c.commit()
        self.c.close()

    def leave(self):
        self.stop.set()
        self.join()

    def partitions(self):
        return sorted(tp.partition for tp in self.c.assignment())


def wait(what, check, timeout=60):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_kafka_python_group(sluice):
    topic, group = "kp-group", "kp"
    admin = KafkaAdminClient(bootstrap_servers=sluice.bootstrap)
    admin.create_topics([NewTopic(topic, PARTS, 1)])
    admin.close()
    consumed, lock = [], threading.Lock()

    def count():
        with lock:
            return len(consumed)

    members = [Member(sluice, topic, group, consumed, lock) for _ in range(3)]
    wait("balanced", lambda: sorted(len(m.partitions()) for m in members) == [2, 2, 2])
    assert sorted(p for m in members for p in m.partitions()) == list(range(PARTS))

    produce(sluice, topic, 0, 1200)
    wait("first batch", lambda: count() >= 1200)
    # A member leaves: the other two take its partitions.
    members.pop().leave()
    wait("two members", lambda: sorted(len(m.partitions()) for m in members) == [3, 3])
    produce(sluice, topic, 1200, 600)
    wait("second batch", lambda: count() >= 1800)
    # A member joins: back to two partitions each.
    members.append(Member(sluice, topic, group, consumed, lock))
    wait("three members", lambda: sorted(len(m.partitions()) for m in members) == [2, 2, 2])
    produce(sluice, topic, 1800, 600)
    wait("third batch", lambda: count() >= 2400)
    for m in members:
        m.leave()
    with lock:
        assert sorted(consumed) == list(range(2400)), "every record exactly once"

    # Committed offsets are at the log end; a restarted member reads only what is new.
    probe = KafkaConsumer(bootstrap_servers=sluice.bootstrap, group_id=group, enable_auto_commit=False)
    for p in range(PARTS):
        assert probe.committed(TopicPartition(topic, p)) == 2400 // PARTS
    probe.close()
    produce(sluice, topic, 2400, 120)
    late, late_lock = [], threading.Lock()
    restarted = Member(sluice, topic, group, late, late_lock)
    wait("resumed", lambda: len(late) >= 120)
    restarted.leave()
    assert sorted(late) == list(range(2400, 2520))
