"""A three-member kafka-python group: balanced assignment, every record consumed exactly
once, committed offsets at the log end.

Each member polls from its own thread with a long poll timeout: kafka-python 3.0 drops a
finished join when the poll that started it timed out first, and then joins again, so
short polls make a group rebalance over and over (against any broker)."""

import threading
import time

from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient, NewTopic

from test_groups import PARTS, produce


def test_kafka_python_group(sluice):
    topic, group, total = "kp-group", "kp", 1800
    admin = KafkaAdminClient(bootstrap_servers=sluice.bootstrap)
    admin.create_topics([NewTopic(topic, PARTS, 1)])
    admin.close()
    members = [KafkaConsumer(topic, bootstrap_servers=sluice.bootstrap, group_id=group,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             session_timeout_ms=6000, heartbeat_interval_ms=500) for _ in range(3)]
    consumed = []
    lock = threading.Lock()
    stop = threading.Event()
    settled = threading.Event()

    def run(m):
        while not stop.is_set():
            batch = m.poll(timeout_ms=1000)
            # Consume only once the group has settled: nothing is read by a member that
            # then loses its partition.
            if not settled.is_set():
                assert not batch, "records before any were produced"
                continue
            with lock:
                for records in batch.values():
                    consumed.extend(int(r.value) for r in records)
            if batch:
                m.commit()

    threads = [threading.Thread(target=run, args=(m,)) for m in members]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while sorted(len(m.assignment()) for m in members) != [2, 2, 2]:
        assert time.monotonic() < deadline, [m.assignment() for m in members]
        time.sleep(0.1)
    assignments = [sorted(tp.partition for tp in m.assignment()) for m in members]
    assert sorted(p for a in assignments for p in a) == list(range(PARTS))
    settled.set()

    produce(sluice, topic, 0, total)
    deadline = time.monotonic() + 60
    while True:
        with lock:
            if len(consumed) >= total:
                break
        assert time.monotonic() < deadline, len(consumed)
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join()
    assert sorted(consumed) == list(range(total))
    for m in members:
        for tp in m.assignment():
            assert m.committed(tp) == total // PARTS
        m.close()
