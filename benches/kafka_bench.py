#!/usr/bin/env python3
"""Kafka figures of `sluice serve` (embedded: local directory, embedded metadata) against
issue targets, driven by `sluice-bench` (librdkafka), one fresh server per scenario:

1. startup: spawn to listening, and resident memory once idle;
2. produce, open loop: 1 KiB records, 8 partitions, acks=all; MB/s, latency, PUTs per GiB;
3. reads of recent data (the last 200 MB and the last 1 GB just produced), two consumers;
   MB/s and GETs per GiB;
4. produce at a fixed rate (default 20 MB/s): latency percentiles and PUTs per GiB, once per
   `--flush-min-delay` setting;
5. end to end at that rate: produce-to-consume latency, and GETs while reading the tail.

    cargo build --release -p sluice -p sluice-bench
    python3 benches/kafka_bench.py [--seconds 15] [--rate 20000] [--min-delays 0ms,5ms,20ms]

Prints a Markdown table for docs/benchmarks.md; --json writes every report.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
SLUICE = TARGET / "sluice"
BENCH = TARGET / "sluice-bench"


class Server:
    def __init__(self, work, *args, binary=SLUICE):
        self.dir = Path(tempfile.mkdtemp(prefix="kafka-bench-", dir=work))
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [str(binary), "serve", "--data-dir", str(self.dir / "data"), "--kafka-listen", "127.0.0.1:0",
             "--http-listen", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0", *args],
            stdout=subprocess.PIPE, stderr=open(self.dir / "sluice.log", "ab"))
        self.listen = {}
        for line in self.proc.stdout:
            words = line.decode().split()
            if len(words) >= 4 and words[1:3] == ["listening", "on"] and words[0] not in self.listen:
                self.listen[words[0]] = words[3]
                if words[0] == "kafka":
                    self.startup_ms = (time.perf_counter() - t0) * 1000
            if words == ["ready"]:
                break
        else:
            raise SystemExit(f"sluice did not start; see {self.dir / 'sluice.log'}")
        self.bootstrap = self.listen["kafka"]
        self.metrics = f"http://{self.listen['http']}/metrics"

    def rss_mib(self):
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(60)
        shutil.rmtree(self.dir, ignore_errors=True)


def millis(duration):
    """`20ms`, `1s` or `0` in milliseconds."""
    for unit, scale in (("ms", 1), ("s", 1000)):
        if duration.endswith(unit):
            return float(duration[: -len(unit)]) * scale
    return float(duration)


def bench(*args):
    out = subprocess.run([str(BENCH), "-q", *args], capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(r), file=sys.stderr)
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--rate", type=int, default=20_000, help="records/s of 1 KiB for the fixed-rate runs")
    ap.add_argument("--min-delays", default="0ms,5ms,20ms", help="--flush-min-delay settings to compare")
    ap.add_argument("--json", help="write every report to this file")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kafka-bench-"))
    common = ["--partitions", "8", "--size", "1024"]
    reports = {}
    rows = []
    try:
        # Compaction deferred (no pass for an hour, no budget to start one early): its reads
        # of WAL objects would count among the reads' GETs, and this measures the gateway.
        # benches/catchup_bench.py measures with compaction running.
        s = Server(work, "--compaction-interval", "1h", "--compaction-max-wal-bytes", "1000GiB")
        try:
            time.sleep(1)
            reports["startup"] = {"startup_ms": round(s.startup_ms, 1), "idle_rss_mib": round(s.rss_mib(), 1)}
            r = bench("produce", "--bootstrap", s.bootstrap, "--topic", "open", *common,
                      "--seconds", str(a.seconds), "--metrics", s.metrics)
            reports["produce_open_loop"] = r
            rows.append(("produce, open loop", r["produce"], r["latency_ms"], r["object_store"]))
            # Recent data, just written: the last 200 MB fit the memory cache (256 MiB); the
            # last 1 GB does not (a local directory has no disk tier: misses read the files).
            # Median of three reads each.
            for label, last in [("200 MB", 200_000), ("1 GB", 1_000_000)]:
                runs = sorted((bench("consume", "--bootstrap", s.bootstrap, "--topic", "open",
                                     "--partitions", "8", "--consumers", "2", "--last", str(last),
                                     "--metrics", s.metrics) for _ in range(3)),
                              key=lambda r: r["consume"]["mb_per_s"])
                reports[f"recent_consume_{last}"] = runs
                rows.append((f"consume, last {label} (median of 3)", runs[1]["consume"], None,
                             runs[1]["object_store"]))
        finally:
            s.stop()
        for delay in a.min_delays.split(","):
            # The flush waits at least the min delay and at most the max (default 5 ms).
            max_delay = delay if millis(delay) > 5 else "5ms"
            s = Server(work, "--flush-min-delay", delay, "--flush-max-delay", max_delay)
            try:
                r = bench("produce", "--bootstrap", s.bootstrap, "--topic", "fixed", *common,
                          "--rate", str(a.rate), "--seconds", str(a.seconds), "--metrics", s.metrics)
                reports[f"produce_rate_min_delay_{delay}"] = r
                rows.append((f"produce, {a.rate * 1024 / 1e6:.0f} MB/s, flush-min-delay {delay}",
                             r["produce"], r["latency_ms"], r["object_store"]))
            finally:
                s.stop()
        s = Server(work)
        try:
            r = bench("e2e", "--bootstrap", s.bootstrap, "--topic", "e2e", *common,
                      "--rate", str(a.rate), "--seconds", str(a.seconds), "--metrics", s.metrics)
            reports["end_to_end"] = r
            rows.append((f"end to end, {a.rate * 1024 / 1e6:.0f} MB/s (reads of the tail)", r["consume"],
                         r["end_to_end_latency_ms"], r["object_store"]))
        finally:
            s.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    st = reports["startup"]
    print(f"startup to listening: {st['startup_ms']} ms; idle RSS {st['idle_rss_mib']} MiB\n")
    print("| run | MB/s | records/s | p50 ms | p99 ms | p99.9 ms | max ms | object store |")
    print("|---|---|---|---|---|---|---|---|")
    for label, rate, lat, store in rows:
        lat_cols = (f"{lat['p50']:.2f} | {lat['p99']:.2f} | {lat['p999']:.2f} | {lat['max']:.2f}"
                    if lat else "- | - | - | -")
        if store is None:
            store_col = "-"
        else:
            parts = []
            if "puts" in store:
                parts.append(f"{store['puts']:,} PUTs ({store['puts_per_gib']:,.0f}/GiB)")
            if "gets" in store:
                parts.append(f"{store['gets']:,} GETs ({store['gets_per_gib']:,.0f}/GiB)")
            store_col = ", ".join(parts)
        print(f"| {label} | {rate['mb_per_s']:.1f} | {rate['msgs_per_s']:,.0f} | {lat_cols} | {store_col} |")
    if a.json:
        Path(a.json).write_text(json.dumps(reports, indent=2))


if __name__ == "__main__":
    main()
