#!/usr/bin/env python3
"""Compaction benchmark: WAL objects into Parquet segments, and Kafka reads from each.

    python3 benches/compaction_bench.py --bin target/release/sluice --messages 500000

Starts its own `sluice serve` on a fresh local directory (automatic compaction off), then:

1. produces N records (librdkafka through confluent-kafka, acks=all);
2. restarts the server (empty memory caches) and consumes everything from offset 0: Kafka
   fetch throughput from WAL objects;
3. runs `sluice compact` and measures its wall time and the server's CPU time: compaction
   throughput in WAL MB per second and per CPU-second;
4. compares the size of the Parquet segments with the WAL objects they replace;
5. restarts the server and consumes everything again, twice: Kafka fetch throughput from
   segments, cold (row groups decoded and rebuilt into batches) and warm (rebuilt row
   groups kept in memory).

Payloads: `random` (incompressible bytes) or `json` (log-like JSON text, as real topics
often carry). Results are printed and, with --json, written as JSON.
"""

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

BENCH = Path(__file__).resolve().parent.parent / "target" / "release" / "sluice-bench"

TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, binary, data_dir):
        self.binary, self.data_dir = binary, data_dir
        self.kafka = f"127.0.0.1:{free_port()}"
        self.http = f"127.0.0.1:{free_port()}"
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([
            self.binary, "serve", "--data-dir", str(self.data_dir),
            "--kafka-listen", self.kafka, "--http-listen", self.http,
            # No automatic compaction (no pass for an hour, no budget to start one early):
            # step 3 compacts everything at once.
            "--compaction-interval", "1h", "--compaction-max-wal-bytes", "1000GiB",
            "--cache-disk", "0", "--cache-memory", "512MiB",
        ], stdout=subprocess.PIPE, stderr=open(self.data_dir.parent / "server.log", "ab"))
        for line in self.proc.stdout:
            if line.startswith(b"http listening"):
                return self
        raise SystemExit("server did not start")

    def cpu_seconds(self):
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)


def payloads(size, count=16384):
    """Log-like JSON documents of `size` bytes, all different."""
    rng = random.Random(1)
    out = []
    for i in range(count):
        doc = {"ts": 1_795_000_000_000 + i, "host": f"web-{rng.randrange(40)}",
               "level": rng.choice(["INFO", "INFO", "INFO", "WARN", "ERROR"]),
               "path": f"/api/v1/items/{rng.randrange(10_000)}", "status": rng.choice([200, 200, 404, 500]),
               "latency_ms": round(rng.expovariate(0.05), 2), "user": f"u{rng.randrange(100_000)}"}
        s = json.dumps(doc)
        while len(s) < size:
            s = s[:-1] + f', "msg": "{" ".join(rng.choice(WORDS) for _ in range(12))}"}}'
        out.append(s[:size].encode())
    return out


# A vocabulary of a few thousand words, so messages vary as real ones do.
_rng = random.Random(2)
WORDS = ["".join(_rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(_rng.randint(2, 9)))
         for _ in range(4000)]


def produce(bootstrap, topic, args):
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                  "compression.type": args.compression, "batch.size": 1 << 20,
                  "queue.buffering.max.kbytes": 1 << 20})
    values = payloads(args.size) if args.payload == "json" else []
    noise = os.urandom(64 << 20)
    start = time.perf_counter()
    for i in range(args.messages):
        if args.payload == "json":
            # Every record differs, as real events do (ids, times), in its first bytes.
            v = b'{"id": %d, "seq": %d, ' % (i * 2654435761 % 4294967296, i) + values[i % len(values)][1:]
        else:
            # A different window of 64 MiB of noise each time: nothing repeats nearby.
            at = (i * 7919 * 131) % (len(noise) - args.size)
            v = noise[at:at + args.size]
        while True:
            try:
                p.produce(topic, v, partition=i % args.partitions)
                break
            except BufferError:
                p.poll(0.001)
    assert p.flush(300) == 0
    return time.perf_counter() - start


def consume(s, topic, args):
    """Everything from offset 0 with the load generator (`sluice-bench consume`), with the
    gateway's object store GETs per GiB read."""
    out = subprocess.run(
        [str(BENCH), "consume", "-q", "--bootstrap", s.kafka, "--topic", topic,
         "--partitions", str(args.partitions), "--messages", str(args.messages),
         "--metrics", f"http://{s.http}/metrics"],
        capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return {**r["consume"], **r["object_store"]}


def tree_size(path):
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/sluice")
    ap.add_argument("--messages", type=int, default=500_000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--compression", default="none")
    ap.add_argument("--payload", choices=["random", "json"], default="json")
    ap.add_argument("--json", help="write results to this file")
    args = ap.parse_args()

    base = Path(tempfile.mkdtemp(prefix="sluice-compaction-bench-"))
    data = base / "data"
    data.mkdir()
    topic = "bench"
    s = Server(args.bin, data).start()
    try:
        admin = AdminClient({"bootstrap.servers": s.kafka})  # kept referenced while awaited
        admin.create_topics(
            [NewTopic(topic, args.partitions, 1, config={"retention.ms": "-1"})])[topic].result(30)
        produce_s = produce(s.kafka, topic, args)
        wal_bytes = tree_size(data / "objects" / "wal")
        s.stop()
        s.start()
        from_wal = consume(s, topic, args)

        cpu0, t0 = s.cpu_seconds(), time.perf_counter()
        out = subprocess.run([args.bin, "compact", "--server", s.http], capture_output=True,
                             check=True, text=True)
        wall, cpu = time.perf_counter() - t0, s.cpu_seconds() - cpu0
        report = json.loads(out.stdout)
        parquet_bytes = tree_size(data / "objects" / "topics" / topic)
        s.stop()
        s.start()
        cold = consume(s, topic, args)
        warm = consume(s, topic, args)
    finally:
        s.stop()
        shutil.rmtree(base, ignore_errors=True)

    results = {
        "config": vars(args),
        "produce_seconds": round(produce_s, 2),
        "wal_mb": round(wal_bytes / 1e6, 1),
        "parquet_mb": round(parquet_bytes / 1e6, 1),
        "parquet_to_wal": round(parquet_bytes / wal_bytes, 3),
        "compaction": {"segments": report["segments"], "seconds": round(wall, 2),
                       "cpu_seconds": round(cpu, 2),
                       "wal_mb_per_s": round(wal_bytes / 1e6 / wall, 1),
                       "wal_mb_per_cpu_s": round(wal_bytes / 1e6 / cpu, 1)},
        "fetch_from_wal": from_wal,
        "fetch_from_segments_cold": cold,
        "fetch_from_segments_warm": warm,
    }
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
