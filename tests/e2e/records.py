"""Deterministic test records and the checks every client round trip makes."""

import hashlib

PARTITIONS = 4
CODECS = ["gzip", "snappy", "lz4", "zstd"]
BASE_TS = 1_700_000_000_000


def value(tag, i):
    """A value of varying length (8..263 bytes) including bytes that are not UTF-8."""
    h = hashlib.sha256(f"{tag}:{i}".encode()).digest()
    return h[: 8 + i % 24] * (1 + i % 8) + b"\xff\x00"


def record(tag, i):
    return {
        "partition": i % PARTITIONS,
        "key": f"key-{i}".encode(),
        "value": value(tag, i),
        "headers": [("h-index", str(i).encode()), ("h-tag", tag.encode())],
        "timestamp": BASE_TS + i,
    }


def expected_by_partition(tag, n):
    out = {p: [] for p in range(PARTITIONS)}
    for i in range(n):
        r = record(tag, i)
        out[r["partition"]].append(r)
    return out


def check(tag, n, consumed, headers=True, timestamps=True):
    """`consumed`: {partition: [(offset, key, value, headers, timestamp)]} in consumption order.

    Asserts offsets dense from 0, nothing lost, nothing duplicated, per-partition order kept,
    and keys, values, headers and timestamps byte-equal to what was produced.
    """
    expected = expected_by_partition(tag, n)
    for p in range(PARTITIONS):
        got = consumed.get(p, [])
        want = expected[p]
        assert [g[0] for g in got] == list(range(len(got))), f"partition {p}: offsets not dense from 0"
        assert len(got) == len(want), f"partition {p}: consumed {len(got)}, produced {len(want)}"
        for (offset, key, val, hdrs, ts), w in zip(got, want):
            assert key == w["key"], f"p{p}@{offset} key"
            assert val == w["value"], f"p{p}@{offset} value"
            if headers:
                assert list(hdrs) == w["headers"], f"p{p}@{offset} headers {hdrs}"
            if timestamps:
                assert ts == w["timestamp"], f"p{p}@{offset} timestamp"
