"""Three gateways on one real etcd and one real S3-compatible server, writing the same
partitions at once: offsets dense from 0, nothing lost or duplicated, every gateway returns
identical data.

Kafka clients send a partition's records to its leader, so besides librdkafka producers
each gateway also gets raw Produce requests for every partition, pipelined on one
connection: several gateways then write every partition at the same time."""

import struct
import threading

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka.record.default_records import DefaultRecordBatchBuilder

from conftest import gateways as start_gateways
from records import PARTITIONS
from test_idempotence import produce_result
from test_malformed import connect, frame, header, kstr, read_frame
from test_restart import consume_all

GATEWAYS = 3
PER_GATEWAY = 6_000
RAW_REQUESTS = 400
RAW_BATCH = 5


def raw_produce(correlation, topic, partition, values):
    """A Produce v3 request (acks=1) of one batch for one partition."""
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=-1,
                                  producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    for i, v in enumerate(values):
        b.append(i, timestamp=1000, key=None, value=v, headers=[])
    batch = bytes(b.build())
    body = header(0, 3, correlation) + struct.pack(">h", -1) + struct.pack(">hi", 1, 30000)
    body += struct.pack(">i", 1) + kstr(topic) + struct.pack(">i", 1) + struct.pack(">i", partition)
    body += struct.pack(">i", len(batch)) + batch
    return frame(body)


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

    def produce_raw(g):
        # Every request goes out before any answer is read: one connection, many in flight.
        s = connect(gateways[g])
        sent = []
        for i in range(RAW_REQUESTS):
            values = [f"raw{g}-{i * RAW_BATCH + j}".encode() for j in range(RAW_BATCH)]
            s.sendall(raw_produce(i, topic.encode(), i % PARTITIONS, values))
            sent.append((i % PARTITIONS, values))
        for i, (part, values) in enumerate(sent):
            resp = read_frame(s)
            assert struct.unpack(">i", resp[:4])[0] == i
            error, base = produce_result(resp)
            if error:
                errors.append(error)
                continue
            acked[g].extend((part, base + j, v) for j, v in enumerate(values))
        s.close()

    threads = [threading.Thread(target=produce, args=(g,)) for g in range(GATEWAYS)]
    threads += [threading.Thread(target=produce_raw, args=(g,)) for g in range(GATEWAYS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    total = GATEWAYS * (PER_GATEWAY + RAW_REQUESTS * RAW_BATCH)
    assert sum(len(a) for a in acked) == total

    views = [consume_all(g.bootstrap, topic) for g in gateways]
    for v in views[1:]:
        assert v == views[0], "gateways disagree"
    log = views[0]
    for part, records in log.items():
        assert sorted(records) == list(range(len(records))), f"partition {part}: offsets not dense"
    values = [v for records in log.values() for v in records.values()]
    assert len(values) == len(set(values)) == total, "lost or duplicated records"
    for g in range(GATEWAYS):
        for part, offset, val in acked[g]:
            assert log[part][offset] == val
        # Each producer's records keep their order within a partition.
        for prefix in [f"gw{g}-", f"raw{g}-"]:
            for part in range(PARTITIONS):
                mine = [(o, v) for o, v in sorted(log[part].items()) if v.startswith(prefix.encode())]
                idx = [int(v.split(b"-")[1]) for _, v in mine]
                assert idx == sorted(idx)
    # Every gateway wrote, and the data went to the S3 server, not to a local directory.
    for g in gateways:
        assert g.metric('sluice_object_store_requests_total{op="put"}') > 0
    assert not any((tmp_dir / f"gw{i}" / "objects").exists() for i in range(GATEWAYS))
    for g in gateways:
        g.stop()
