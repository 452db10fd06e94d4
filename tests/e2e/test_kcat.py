"""kcat (librdkafka 2.0 on Debian 12): produce with every codec, consume, metadata."""

import subprocess

from records import CODECS, PARTITIONS

N = 25_000  # per codec: 100k records in all


def kcat(*args, stdin=None):
    r = subprocess.run(["kcat", *args], input=stdin, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def lines_for(topic, partition):
    # kcat sends text lines: key and value must not hold the delimiters.
    return [(f"k{i}", f"{topic}-{i}-" + "x" * (i % 300)) for i in range(partition, N, PARTITIONS)]


def test_round_trip_every_codec(sluice):
    b = sluice.bootstrap
    for codec in CODECS:
        topic = f"kcat-{codec}"
        for p in range(PARTITIONS):
            data = "".join(f"{k}\t{v}\n" for k, v in lines_for(topic, p)).encode()
            kcat("-P", "-b", b, "-t", topic, "-p", str(p), "-K", "\t", "-z", codec,
                 "-H", f"h-tag={topic}", "-X", "linger.ms=5", stdin=data)
        for p in range(PARTITIONS):
            out = kcat("-C", "-b", b, "-t", topic, "-p", str(p), "-o", "beginning", "-e",
                       "-f", "%o\t%k\t%s\t%h\n").decode()
            rows = [line.split("\t") for line in out.splitlines()]
            want = lines_for(topic, p)
            assert len(rows) == len(want), f"{topic}/{p}: {len(rows)} of {len(want)}"
            for offset, (row, (k, v)) in enumerate(zip(rows, want)):
                assert row == [str(offset), k, v, f"h-tag={topic}"], (topic, p, offset)


def test_metadata_lists_topics_and_brokers(sluice):
    kcat("-P", "-b", sluice.bootstrap, "-t", "kcat-meta", stdin=b"one\n")
    out = kcat("-L", "-b", sluice.bootstrap, "-t", "kcat-meta").decode()
    assert "1 brokers:" in out
    assert f"at {sluice.bootstrap}" in out
    assert 'topic "kcat-meta" with 4 partitions' in out
