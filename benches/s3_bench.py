#!/usr/bin/env python3
"""What a gateway adds to produce latency on top of the object store and the metadata
commit: one `sluice gateway` on a real etcd and moto's S3 server (this machine), produce at
a fixed rate with `sluice-bench`, and the gateway's own histograms read around the run:

- `sluice_object_store_request_seconds{op="put"}`: the WAL object PUT;
- `sluice_flush_seconds`: a flush from its start to its commit applied (PUT + commit);
- `sluice_kafka_request_seconds{api="produce"}`: a produce request in the gateway.

The client's produce latency (librdkafka, send to delivery report) minus the flush's is
what the gateway and the network add: batching wait, request handling, responses.

    cargo build --release -p sluice -p sluice-bench
    python3 benches/s3_bench.py [--rate 5000] [--seconds 20] [--size 1024] [--serve-arg=--flush-max-delay=1ms]
        [--server moto|s3s-fs]

Quantiles of the histograms are interpolated within their buckets.
"""

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SLUICE = ROOT / "target" / "release" / "sluice"
BENCH = ROOT / "target" / "release" / "sluice-bench"
os.environ.setdefault("SLUICE_BIN", str(SLUICE))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from conftest import S3, Etcd, Sluice, free_port, wait_for  # noqa: E402


def histogram(text, name, labels=""):
    """Cumulative bucket counts {le: count} of one histogram series."""
    out = {}
    pat = re.compile(rf'^{name}_bucket\{{{labels}(?:,)?le="([^"]+)"\}} (\S+)$')
    for line in text.splitlines():
        m = pat.match(line)
        if m:
            out[float(m.group(1))] = float(m.group(2))
    if not out:
        raise RuntimeError(f"no histogram {name}{{{labels}}} in /metrics")
    return out


def quantile(before, after, q):
    """The q-quantile of the observations between two scrapes, in milliseconds."""
    les = sorted(after)
    counts = [after[le] - before.get(le, 0.0) for le in les]
    total = counts[-1]
    if total == 0:
        return None
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, c in zip(les, counts):
        if c >= rank:
            if le == float("inf"):
                return prev_le * 1000
            frac = (rank - prev_count) / (c - prev_count) if c > prev_count else 1.0
            return (prev_le + (le - prev_le) * frac) * 1000
        prev_le, prev_count = le, c
    return None


class S3sFs(S3):
    """s3s-fs serving a directory, in place of the tests' moto `S3`."""

    def __init__(self, base):
        port = free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        self.bucket = "sluice-bench"
        root = base / "s3s-fs"
        (root / self.bucket).mkdir(parents=True)  # a bucket is a directory
        self.log = open(base / "s3s-fs.log", "ab")
        self.proc = subprocess.Popen(
            [shutil.which("s3s-fs") or "s3s-fs", "--host", "127.0.0.1", "--port", str(port),
             "--access-key", "test", "--secret-key", "test", str(root)],
            stdout=self.log, stderr=self.log)
        wait_for("s3s-fs", lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() or True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=5000, help="records/s")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--serve-arg", action="append", default=[],
                    help="extra `sluice gateway` argument (repeatable), e.g. --serve-arg=--flush-max-delay=1ms")
    ap.add_argument("--server", choices=["moto", "s3s-fs"], default="moto",
                    help="the S3-compatible server: moto's (Python, one request at a time) or s3s-fs "
                         "(Rust, concurrent; `cargo install s3s-fs@0.14.1 --features binary`)")
    ap.add_argument("--json", help="write the report to this file")
    a = ap.parse_args()

    base = Path(tempfile.mkdtemp(prefix="s3-bench-"))
    etcd = Etcd(base)
    s3 = S3(base) if a.server == "moto" else S3sFs(base)
    gw = None
    try:
        gw = Sluice(base / "gw", ["--metadata", f"etcd://{etcd.endpoint}/bench",
                                  "--object-store", f"s3://{s3.bucket}/bench", *a.serve_arg],
                    env=s3.env(), mode="gateway").start()
        metrics = f"http://{gw.http}/metrics"
        # A first run creates the topic and warms connections; the second is measured.
        common = ["--bootstrap", gw.bootstrap, "--topic", "s3", "--partitions", "8",
                  "--size", str(a.size), "--rate", str(a.rate), "--metrics", metrics, "-q"]
        subprocess.run([str(BENCH), "produce", *common, "--seconds", "2"], check=True,
                       capture_output=True, timeout=600)
        before = gw.metrics()
        out = subprocess.run([str(BENCH), "produce", *common, "--seconds", str(a.seconds)],
                             check=True, capture_output=True, text=True, timeout=1800)
        after = gw.metrics()
        client = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        if gw:
            gw.stop()
        etcd.stop()
        s3.stop()
        shutil.rmtree(base, ignore_errors=True)

    series = {
        "PUT of the WAL object": ("sluice_object_store_request_seconds", 'op="put"'),
        "flush (PUT + commit)": ("sluice_flush_seconds", ""),
        "produce request in the gateway": ("sluice_kafka_request_seconds", 'api="produce"'),
    }
    report = {"client": client, "server": {}}
    for label, (name, labels) in series.items():
        b, c = histogram(before, name, labels), histogram(after, name, labels)
        report["server"][label] = {q: quantile(b, c, float(q)) for q in ("0.5", "0.99")}
    print(json.dumps(report), file=sys.stderr)
    lat = client["latency_ms"]
    print(f"{client['produce']['mb_per_s']} MB/s, {client['produce']['msgs_per_s']:,.0f} records/s, "
          f"{client['object_store']['puts']:,} PUTs\n")
    print("| latency | p50 ms | p99 ms |")
    print("|---|---|---|")
    for label, qs in report["server"].items():
        print(f"| {label} | {qs['0.5']:.2f} | {qs['0.99']:.2f} |")
    print(f"| produce, client (librdkafka, linger 5 ms) | {lat['p50']:.2f} | {lat['p99']:.2f} |")
    flush = report["server"]["flush (PUT + commit)"]
    print(f"\nclient minus flush: p50 {lat['p50'] - flush['0.5']:.2f} ms, "
          f"p99 {lat['p99'] - flush['0.99']:.2f} ms")
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
