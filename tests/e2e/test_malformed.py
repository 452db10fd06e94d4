"""Malformed input gets a protocol error or a closed connection, and the server keeps
serving everyone else."""

import socket
import struct
import subprocess

from kafka.record.default_records import DefaultRecordBatchBuilder


def connect(server):
    host, port = server.bootstrap.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    return s


def read_frame(s):
    head = recv_exact(s, 4)
    if head is None:
        return None
    (size,) = struct.unpack(">i", head)
    return recv_exact(s, size)


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def closed_by_server(s):
    """True once the server closed the connection (recv returns end of file)."""
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def frame(body):
    return struct.pack(">i", len(body)) + body


def header(api_key, version, correlation, client=b"e2e"):
    return struct.pack(">hhih", api_key, version, correlation, len(client)) + client


def kstr(b):
    return struct.pack(">h", len(b)) + b


def produce_v3(correlation, topic, batch):
    body = header(0, 3, correlation)
    body += struct.pack(">h", -1)  # transactional id: null
    body += struct.pack(">hi", 1, 5000)  # acks, timeout
    body += struct.pack(">i", 1) + kstr(topic)
    body += struct.pack(">i", 1) + struct.pack(">i", 0)  # one partition: 0
    body += struct.pack(">i", len(batch)) + batch
    return frame(body)


def produce_error(resp):
    """Error code of the single partition of a Produce v3 response."""
    corr, n_topics = struct.unpack(">ii", resp[:8])
    (name_len,) = struct.unpack(">h", resp[8:10])
    at = 10 + name_len
    n_parts, partition, error = struct.unpack(">iih", resp[at:at + 10])
    return error


def batch(value=b"v"):
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=-1,
                                  producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    b.append(0, timestamp=1000, key=b"k", value=value, headers=[])
    return bytes(b.build())


def still_serving(server):
    out = subprocess.run(["kcat", "-L", "-b", server.bootstrap], capture_output=True, timeout=30)
    return out.returncode == 0 and b"1 brokers" in out.stdout


def test_unsupported_api_versions_gets_a_v0_error(sluice):
    s = connect(sluice)
    s.sendall(frame(header(18, 99, 7)))
    resp = read_frame(s)
    corr, error, n = struct.unpack(">ihi", resp[:10])
    assert (corr, error) == (7, 35)  # UNSUPPORTED_VERSION
    keys = {struct.unpack(">h", resp[10 + 6 * i:12 + 6 * i])[0] for i in range(n)}
    assert {0, 1, 2, 3, 18} <= keys


def test_bad_frames_close_the_connection(sluice):
    cases = [
        struct.pack(">i", 0x7FFFFFFF) + b"x" * 16,  # size beyond the request limit
        struct.pack(">i", -4) + b"abcd",  # negative size
        frame(struct.pack(">hhi", 999, 0, 1) + b"\x00" * 6),  # unknown api key
        frame(header(3, 99, 1)),  # unsupported version of Metadata
        frame(header(0, 3, 1) + b"\x00\x01"),  # truncated Produce body
        frame(b"\x00\x12"),  # shorter than a header
    ]
    for data in cases:
        s = connect(sluice)
        s.sendall(data)
        assert closed_by_server(s), data[:16]
        s.close()
    # A frame cut off by the client's disconnect.
    s = connect(sluice)
    s.sendall(struct.pack(">i", 100) + b"partial")
    s.close()
    assert still_serving(sluice)


def test_bad_batches_get_error_codes(sluice):
    subprocess.run(["kcat", "-P", "-b", sluice.bootstrap, "-t", "malformed"], input=b"x\n", check=True,
                   timeout=30)
    s = connect(sluice)
    good = batch()
    s.sendall(produce_v3(1, b"malformed", good))
    assert produce_error(read_frame(s)) == 0
    bad_crc = bytearray(good)
    bad_crc[-1] ^= 0xFF
    s.sendall(produce_v3(2, b"malformed", bytes(bad_crc)))
    assert produce_error(read_frame(s)) == 2  # CORRUPT_MESSAGE
    s.sendall(produce_v3(3, b"malformed", good[:-3]))
    assert produce_error(read_frame(s)) == 2  # CORRUPT_MESSAGE: truncated
    old_magic = bytearray(good)
    old_magic[16] = 1
    s.sendall(produce_v3(4, b"malformed", bytes(old_magic)))
    assert produce_error(read_frame(s)) == 43  # UNSUPPORTED_FOR_MESSAGE_FORMAT
    s.sendall(produce_v3(5, b"malformed", good + good))
    assert produce_error(read_frame(s)) == 87  # INVALID_RECORD: two batches
    s.sendall(produce_v3(6, b"malformed", batch(b"x" * 2_000_000)))
    assert produce_error(read_frame(s)) == 10  # MESSAGE_TOO_LARGE
    s.sendall(produce_v3(7, b"no-such-topic-" * 3, good))
    assert produce_error(read_frame(s)) == 3  # UNKNOWN_TOPIC_OR_PARTITION
    s.close()
    # Only the one good batch was stored besides kcat's record.
    out = subprocess.run(["kcat", "-C", "-b", sluice.bootstrap, "-t", "malformed", "-e", "-f", "%s\n"],
                         capture_output=True, timeout=30, check=True)
    assert sorted(out.stdout.split()) == [b"v", b"x"]
    assert still_serving(sluice)
