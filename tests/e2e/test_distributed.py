"""Three gateways on one real etcd and one real S3-compatible server, writing the same
partitions at once: offsets dense from 0, nothing lost or duplicated, every gateway returns
identical data."""

import threading

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import gateways as start_gateways
from records import PARTITIONS
from test_restart import consume_all

GATEWAYS = 3
PER_GATEWAY = 6_000


def test_gateways_share_partitions(tmp_dir, etcd, s3):
    gateways = start_gateways(tmp_dir, etcd, s3, GATEWAYS, "e2e", ["--default-partitions", str(PARTITIONS)])
    topic = "shared"
    admin = AdminClient({"bootstrap.servers": gateways[0].bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)

    acked = [[] for _ in gateways]
    errors = []

    def produce(g):
        p = Producer({"bootstrap.servers": gateways[g].bootstrap, "linger.ms": 5, "acks": "all"})

        def on_delivery(err, msg):
            if err is not None:
                errors.append(err)
            else:
                acked[g].append((msg.partition(), msg.offset(), msg.value()))

        for i in range(PER_GATEWAY):
            v = f"gw{g}-{i}".encode()
            while True:
                try:
                    p.produce(topic, value=v, partition=i % PARTITIONS, on_delivery=on_delivery)
                    break
                except BufferError:
                    p.poll(0.05)
            p.poll(0)
        assert p.flush(60) == 0

    threads = [threading.Thread(target=produce, args=(g,)) for g in range(GATEWAYS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(len(a) for a in acked) == GATEWAYS * PER_GATEWAY

    views = [consume_all(g.bootstrap, topic) for g in gateways]
    for v in views[1:]:
        assert v == views[0], "gateways disagree"
    log = views[0]
    for part, records in log.items():
        assert sorted(records) == list(range(len(records))), f"partition {part}: offsets not dense"
    values = [v for records in log.values() for v in records.values()]
    assert len(values) == len(set(values)) == GATEWAYS * PER_GATEWAY, "lost or duplicated records"
    for g in range(GATEWAYS):
        for part, offset, val in acked[g]:
            assert log[part][offset] == val
        # Each producer's records keep their order within a partition.
        for part in range(PARTITIONS):
            mine = [(o, v) for o, v in sorted(log[part].items()) if v.startswith(f"gw{g}-".encode())]
            idx = [int(v.split(b"-")[1]) for _, v in mine]
            assert idx == sorted(idx)
    # The data went to the S3 server, not to a local directory.
    assert gateways[0].metric('sluice_object_store_requests_total{op="put"}') > 0
    assert not any((tmp_dir / f"gw{i}" / "objects").exists() for i in range(GATEWAYS))
    for g in gateways:
        g.stop()
