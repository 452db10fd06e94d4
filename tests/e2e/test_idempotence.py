"""Idempotent producers: sequences are checked where offsets are assigned, so retries are
answered with their original offsets, gaps and stale epochs are refused, and all of it
holds across gateways."""

import struct
import threading
import time

from confluent_kafka import Producer
from kafka.record.default_records import DefaultRecordBatchBuilder

from conftest import gateways as start_gateways
from records import PARTITIONS
from test_malformed import connect, frame, header, produce_v3, read_frame
from test_restart import consume_all


def init_producer_id(s, correlation):
    body = header(22, 1, correlation) + struct.pack(">hi", -1, 60000)  # no transactional id
    s.sendall(frame(body))
    resp = read_frame(s)
    corr, throttle, error, pid, epoch = struct.unpack(">iihqh", resp)
    assert (corr, error) == (correlation, 0)
    return pid, epoch


def idempotent_batch(pid, epoch, seq, values):
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=pid,
                                  producer_epoch=epoch, base_sequence=seq, batch_size=1 << 20)
    for i, v in enumerate(values):
        b.append(i, timestamp=1000 + i, key=None, value=v, headers=[])
    return bytes(b.build())


def produce_result(resp):
    """(error code, base offset) of the single partition of a Produce v3 response."""
    (name_len,) = struct.unpack(">h", resp[8:10])
    at = 10 + name_len
    _, _, error, base = struct.unpack(">iihq", resp[at:at + 18])
    return error, base


def test_sequences_on_the_wire(sluice):
    topic = b"idem-wire"
    # A plain producer creates the topic (auto-creation) and writes offset 0.
    p = Producer({"bootstrap.servers": sluice.bootstrap})
    p.produce(topic.decode(), b"x", partition=0)
    p.flush(30)
    s = connect(sluice)

    pid, epoch = init_producer_id(s, 1)
    pid2, _ = init_producer_id(s, 2)
    assert pid != pid2 and epoch == 0

    def send(corr, batch):
        s.sendall(produce_v3(corr, topic, batch))
        return produce_result(read_frame(s))

    first = idempotent_batch(pid, 0, 0, [b"a", b"b"])
    assert send(10, first) == (0, 1)
    assert send(11, first) == (0, 1), "a retry gets its original offset"
    assert sluice.metric('sluice_produce_batches_total{outcome="duplicate"}') == 1
    assert send(12, idempotent_batch(pid, 0, 2, [b"c"])) == (0, 3)
    assert send(13, idempotent_batch(pid, 0, 7, [b"d"]))[0] == 45  # OUT_OF_ORDER_SEQUENCE_NUMBER
    assert send(14, idempotent_batch(pid, 1, 0, [b"e"])) == (0, 4)  # a new epoch starts at 0
    assert send(15, idempotent_batch(pid, 0, 3, [b"f"]))[0] == 47  # INVALID_PRODUCER_EPOCH
    s.close()
    log = consume_all(sluice.bootstrap, topic.decode())
    assert [log[0][o] for o in sorted(log[0])] == [b"x", b"a", b"b", b"c", b"e"]


def test_librdkafka_idempotent_producer(sluice):
    topic = "idem"
    p = Producer({"bootstrap.servers": sluice.bootstrap, "enable.idempotence": True,
                  "max.in.flight.requests.per.connection": 5, "linger.ms": 1})
    for i in range(40_000):
        while True:
            try:
                p.produce(topic, value=f"{i}".encode(), partition=i % PARTITIONS)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    assert p.flush(60) == 0
    log = consume_all(sluice.bootstrap, topic)
    for part in range(PARTITIONS):
        values = [int(log[part][o]) for o in sorted(log[part])]
        assert values == list(range(part, 40_000, PARTITIONS))


def test_idempotence_across_gateway_failures(tmp_dir, etcd, s3):
    gateways = start_gateways(tmp_dir, etcd, s3, 3, "idem", ["--default-partitions", str(PARTITIONS)])
    topic = "idem-failover"
    acked = []
    errors = []
    p = Producer({
        "bootstrap.servers": ",".join(g.bootstrap for g in gateways),
        "enable.idempotence": True,
        "max.in.flight.requests.per.connection": 5,
        "linger.ms": 2,
        "message.timeout.ms": 120_000,
        "reconnect.backoff.max.ms": 500,
        "topic.metadata.refresh.interval.ms": 1000,
    })

    def on_delivery(err, msg):
        if err is None:
            acked.append(msg.offset())
        else:
            errors.append(err)

    def chaos():
        # Kill each gateway in turn while the producer runs, and bring it back.
        for g in gateways:
            g.kill9()
            g.start()

    chaos_thread = threading.Thread(target=chaos)
    total = 0
    # Produce before, during and after the kills; a steady trickle keeps requests in
    # flight at every moment of the chaos.
    while total < 5_000 or chaos_thread.is_alive() or total < 30_000:
        if total == 5_000:
            chaos_thread.start()
        try:
            p.produce(topic, value=f"{total}".encode(), partition=total % PARTITIONS, on_delivery=on_delivery)
            total += 1
        except BufferError:
            p.poll(0.05)
        p.poll(0)
        if total % 100 == 0:
            time.sleep(0.002)
    assert p.flush(120) == 0
    chaos_thread.join()
    assert errors == []
    assert len(acked) == total

    views = [consume_all(g.bootstrap, topic) for g in gateways]
    assert views[1] == views[0] and views[2] == views[0]
    for part in range(PARTITIONS):
        values = [int(views[0][part][o]) for o in sorted(views[0][part])]
        # No duplicates, no gaps, order kept.
        assert values == list(range(part, total, PARTITIONS)), f"partition {part}"
    for g in gateways:
        g.stop()
