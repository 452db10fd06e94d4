#!/usr/bin/env python3
"""Catch-up reads on a running broker: object store GETs per GiB a consumer costs when it
reads a topic from its start while compaction runs as configured.

    cargo build --release -p sluice -p sluice-bench
    python3 benches/catchup_bench.py [--rate 20000] [--seconds 60] [--size 1024]
        [--partitions 8] [--serve-arg=--compaction-max-wal-bytes=1000GiB] [--restart] [--s3s-fs]

Starts `sluice serve` (release build, embedded: local directory and embedded metadata,
default settings plus any --serve-arg; with --s3s-fs, objects in a local s3s-fs server,
`cargo install s3s-fs@0.14.1 --features binary`) on a fresh directory, then:

1. produces at a fixed rate with `sluice-bench produce` (acks=all), compaction running;
2. reads every record from offset 0 with `sluice-bench consume` (with --restart: after a
   restart, so nothing is in memory), counting the gateway's object store GETs.

Printed and, with --json, written as JSON: the produce and consume reports, how much of
the log was still in WAL objects when the read began (as the compactor last saw it), and the compactor's counters.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SLUICE = ROOT / "target" / "release" / "sluice"
BENCH = ROOT / "target" / "release" / "sluice-bench"
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "benches"))
from conftest import free_port  # noqa: E402


class Server:
    def __init__(self, data_dir, extra, env=None):
        self.data_dir, self.extra, self.env = data_dir, extra, dict(os.environ, **(env or {}))
        self.kafka = f"127.0.0.1:{free_port()}"
        self.http = f"127.0.0.1:{free_port()}"
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [str(SLUICE), "serve", "--data-dir", str(self.data_dir),
             "--kafka-listen", self.kafka, "--http-listen", self.http,
             "--mqtt-listen", f"127.0.0.1:{free_port()}", *self.extra],
            stdout=subprocess.PIPE, stderr=open(self.data_dir.parent / "server.log", "ab"),
            env=self.env)
        for line in self.proc.stdout:
            if line.startswith(b"http listening"):
                return self
        raise SystemExit("server did not start; see server.log")

    def metric(self, name):
        out = subprocess.run(["curl", "-s", f"http://{self.http}/metrics"], capture_output=True,
                             text=True, check=True).stdout
        return sum(float(l.rsplit(" ", 1)[1]) for l in out.splitlines() if l.startswith(name))

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)


def bench(*args):
    out = subprocess.run([str(BENCH), *args], capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=20_000, help="records per second")
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--serve-arg", action="append", default=[])
    ap.add_argument("--restart", action="store_true",
                    help="restart the server before reading (empty memory cache)")
    ap.add_argument("--s3s-fs", action="store_true",
                    help="keep objects in an s3s-fs server rather than a local directory")
    ap.add_argument("--keep", action="store_true", help="keep the directory (server.log)")
    ap.add_argument("--json")
    args = ap.parse_args()

    base = Path(tempfile.mkdtemp(prefix="sluice-catchup-bench-"))
    data = base / "data"
    data.mkdir()
    s3 = None
    extra, env = list(args.serve_arg), None
    if args.s3s_fs:
        from s3_bench import S3sFs
        s3 = S3sFs(base)
        extra, env = ["--object-store", f"s3://{s3.bucket}/catchup", *extra], s3.env()
    s = Server(data, extra, env).start()
    metrics = lambda: f"http://{s.http}/metrics"  # noqa: E731 (the address changes on restart)
    common = ["-q", "--bootstrap", s.kafka, "--topic", "catchup",
              "--partitions", str(args.partitions)]
    try:
        produced = bench("produce", *common, "--metrics", metrics(), "--size", str(args.size),
                         "--rate", str(args.rate), "--seconds", str(args.seconds))
        waiting_mb = s.metric("sluice_compactor_waiting_wal_bytes") / 1e6
        segments = s.metric("sluice_compactor_segments_total")
        merges = s.metric("sluice_compactor_merges_total")
        if args.restart:
            s.stop()
            s.start()
        common[2] = s.kafka
        read = bench("consume", *common, "--metrics", metrics())
    finally:
        s.stop()
        if s3:
            s3.stop()
    results = {
        "config": vars(args),
        "produce": {**produced["produce"], **produced.get("object_store", {})},
        "uncompacted_mb_when_read_began": round(waiting_mb, 1),
        "segments_written": int(segments),
        "merges": int(merges),
        "consume": {**read["consume"], **read.get("object_store", {})},
    }
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    if args.keep:
        print(f"kept {base}", file=sys.stderr)
    else:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
