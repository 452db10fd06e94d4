"""--flush-min-delay: an idle batcher lets records linger, so records that arrive close
together share one WAL object (fewer object store PUTs)."""

import threading
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Sluice


def flushes(server):
    return server.metric("sluice_flush_bytes_count")


def test_min_delay_gathers_records_into_few_wal_objects(tmp_dir):
    s = Sluice(tmp_dir / "data", ["--flush-min-delay", "500ms", "--flush-max-delay", "1s"]).start()
    try:
        admin = AdminClient({"bootstrap.servers": s.bootstrap})
        admin.create_topics([NewTopic("linger", 8, 1)])["linger"].result(30)
        conf = {"bootstrap.servers": s.bootstrap, "linger.ms": 0, "acks": "all"}

        # A lone record waits the minimum delay before its WAL object is written.
        p = Producer(conf)
        p.list_topics("linger", timeout=10)
        start = time.monotonic()
        p.produce("linger", b"alone", partition=0)
        assert p.flush(30) == 0
        assert time.monotonic() - start >= 0.45

        # Eight producers' requests arriving within that delay share one WAL object.
        producers = [Producer(conf) for _ in range(8)]
        for q in producers:
            q.list_topics("linger", timeout=10)
        before = flushes(s)
        go = threading.Barrier(len(producers))

        def send(i, q):
            go.wait()
            q.produce("linger", b"v%d" % i, partition=i)
            assert q.flush(30) == 0

        threads = [threading.Thread(target=send, args=(i, q)) for i, q in enumerate(producers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert flushes(s) - before <= 2
    finally:
        s.stop()
