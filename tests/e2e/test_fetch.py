"""Fetch semantics checked on the wire: byte limits, KIP-74, long polling woken by commits,
read_committed answers."""

import struct
import threading
import time

from confluent_kafka import Producer

from conftest import wait_for
from test_malformed import connect, frame, header, kstr, read_frame

TOPIC = b"fetch"
VALUE = b"v" * 1000


def fetch_v4(correlation, partitions, max_wait=0, min_bytes=0, max_bytes=50 << 20, isolation=0):
    """`partitions`: [(partition, offset, partition_max_bytes)]."""
    body = header(1, 4, correlation)
    body += struct.pack(">iiiib", -1, max_wait, min_bytes, max_bytes, isolation)
    body += struct.pack(">i", 1) + kstr(TOPIC) + struct.pack(">i", len(partitions))
    for p, offset, limit in partitions:
        body += struct.pack(">iqi", p, offset, limit)
    return frame(body)


def parse_fetch_v4(resp):
    """{partition: (error, high_watermark, last_stable, aborted, [batch base offsets])}"""
    at = 4 + 4  # correlation id, throttle time
    (n_topics,) = struct.unpack(">i", resp[at:at + 4])
    at += 4
    out = {}
    for _ in range(n_topics):
        (name_len,) = struct.unpack(">h", resp[at:at + 2])
        at += 2 + name_len
        (n_parts,) = struct.unpack(">i", resp[at:at + 4])
        at += 4
        for _ in range(n_parts):
            p, err, hwm, lso, n_aborted = struct.unpack(">ihqqi", resp[at:at + 26])
            at += 26
            aborted = None if n_aborted == -1 else []
            at += max(n_aborted, 0) * 16
            (size,) = struct.unpack(">i", resp[at:at + 4])
            at += 4
            records = resp[at:at + max(size, 0)]
            at += max(size, 0)
            bases, pos = [], 0
            while pos + 12 <= len(records):
                base, length = struct.unpack(">qi", records[pos:pos + 12])
                bases.append(base)
                pos += 12 + length
            out[p] = (err, hwm, lso, aborted, bases)
    return out


def produce_batches(server, partition, n):
    """One batch per record: linger 0 and a flush after each."""
    p = Producer({"bootstrap.servers": server.bootstrap, "linger.ms": 0})
    for _ in range(n):
        p.produce(TOPIC.decode(), value=VALUE, partition=partition)
        p.flush(30)


def test_byte_limits_and_kip74(sluice):
    produce_batches(sluice, 0, 6)
    produce_batches(sluice, 1, 2)
    s = connect(sluice)
    one_batch = None
    # The partition limit bounds how many batches come back.
    s.sendall(fetch_v4(1, [(0, 0, 2500)]))
    r = parse_fetch_v4(read_frame(s))
    assert r[0][0] == 0 and r[0][1] == 6
    assert r[0][4] == [0, 1], r
    # Starting in the middle: batches from the one holding the offset.
    s.sendall(fetch_v4(2, [(0, 4, 1 << 20)]))
    assert parse_fetch_v4(read_frame(s))[0][4] == [4, 5]
    # KIP-74: a first batch larger than the limit still comes back, alone.
    s.sendall(fetch_v4(3, [(0, 0, 10)]))
    one_batch = parse_fetch_v4(read_frame(s))[0][4]
    assert one_batch == [0]
    # The request limit spans partitions; an oversized batch is only allowed first.
    s.sendall(fetch_v4(4, [(0, 0, 1 << 20), (1, 0, 1 << 20)], max_bytes=2500))
    r = parse_fetch_v4(read_frame(s))
    assert r[0][4] == [0, 1] and r[1][4] == []
    # Out of range offsets are an error, not an empty answer.
    s.sendall(fetch_v4(5, [(0, 7, 1 << 20)]))
    assert parse_fetch_v4(read_frame(s))[0][0] == 1  # OFFSET_OUT_OF_RANGE
    s.close()


def test_read_committed_and_long_polling(sluice):
    produce_batches(sluice, 0, 1)
    s = connect(sluice)
    s.sendall(fetch_v4(1, [(0, 0, 1 << 20)], isolation=1))
    err, hwm, lso, aborted, bases = parse_fetch_v4(read_frame(s))[0]
    assert (err, hwm, lso, aborted, bases) == (0, 1, 1, [], [0])
    s.sendall(fetch_v4(2, [(0, 0, 1 << 20)], isolation=0))
    assert parse_fetch_v4(read_frame(s))[0][3] is None  # no aborted list when uncommitted

    # A fetch at the end waits; a commit wakes it long before its 20 s are up.
    answer = {}

    def wait():
        s.sendall(fetch_v4(3, [(0, 1, 1 << 20)], max_wait=20_000, min_bytes=1))
        answer["r"] = parse_fetch_v4(read_frame(s))
        answer["t"] = time.monotonic()

    fetches = sluice.metric('sluice_kafka_requests_total{api="fetch"}')
    t = threading.Thread(target=wait)
    t.start()
    wait_for("the fetch to arrive", lambda: sluice.metric('sluice_kafka_requests_total{api="fetch"}') > fetches)
    produced = time.monotonic()
    produce_batches(sluice, 0, 1)
    t.join(30)
    assert answer["r"][0][4] == [1]
    assert answer["t"] - produced < 10, "the fetch was not woken by the commit"
    s.close()
