#!/usr/bin/env python3
"""Kafka over SASL_SSL (SCRAM-SHA-256) against PLAINTEXT, side by side on one `sluice serve`
(embedded) with both listeners, driven by `sluice-bench` (librdkafka with OpenSSL):

1. produce, open loop, 1 KiB records, 8 partitions, acks=all, alternating listeners;
2. consume each topic just produced, from the start;
3. connection setup: TCP only, TLS, TLS + SCRAM-SHA-256 and -512 (handshake,
   authentication, one ApiVersions, close); connections per second and per second of the
   server's CPU time (what one core sustains).

    cargo build --release -p sluice -p sluice-bench
    python3 benches/tls_bench.py [--seconds 15] [--rounds 2]

Certificates are made fresh (ECDSA P-256) with tests/e2e/tls.py. Prints a Markdown table for
docs/benchmarks.md; --json writes every report.
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
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "benches"))
from kafka_bench import SLUICE, bench  # noqa: E402
from tls import CertSet  # noqa: E402

PASSWORD = "bench-password"


class Server:
    def __init__(self, work, certs):
        self.dir = work / "server"
        self.proc = subprocess.Popen(
            [str(SLUICE), "serve", "--data-dir", str(self.dir / "data"),
             "--kafka-listen", "PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0",
             "--http-listen", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0",
             "--admin-user", "bench", "--compaction-interval", "1h",
             "--compaction-max-wal-bytes", "1000GiB", *certs.server_args()],
            stdout=subprocess.PIPE, stderr=open(work / "sluice.log", "ab"),
            env=dict(os.environ, SLUICE_ADMIN_PASSWORD=PASSWORD))
        self.kafka = {}
        for line in self.proc.stdout:
            words = line.decode().split()
            if words[:3] == ["kafka", "listening", "on"]:
                self.kafka[words[4]] = words[3]
            if words == ["ready"]:
                break
        else:
            raise SystemExit(f"sluice did not start; see {work / 'sluice.log'}")

    def cpu_seconds(self):
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(60)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=8, help="connections set up at once")
    ap.add_argument("--json", help="write every report to this file")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tls-bench-"))
    certs = CertSet(work / "certs")
    s = Server(work, certs)
    reports = {"produce": [], "consume": [], "connect": []}
    try:
        props = {
            "PLAINTEXT": [],
            "SASL_SSL": ["-X", "security.protocol=SASL_SSL", "-X", f"ssl.ca.location={certs.ca_path}",
                         "-X", "sasl.mechanism=SCRAM-SHA-256", "-X", "sasl.username=bench",
                         "-X", f"sasl.password={PASSWORD}"],
        }
        for r in range(a.rounds):
            for listener in ["PLAINTEXT", "SASL_SSL"]:
                topic = f"{listener.lower()}-{r}"
                common = ["--bootstrap", s.kafka[listener], "--topic", topic, "--partitions", "8",
                          *props[listener]]
                cpu = s.cpu_seconds()
                p = bench("produce", *common, "--size", "1024", "--seconds", str(a.seconds))
                p["server_cpu_seconds"] = s.cpu_seconds() - cpu
                reports["produce"].append({"listener": listener, "round": r, **p})
                cpu = s.cpu_seconds()
                c = bench("consume", *common, "--consumers", "1")
                c["server_cpu_seconds"] = s.cpu_seconds() - cpu
                reports["consume"].append({"listener": listener, "round": r, **c})
        for label, args in [
            ("TCP", ["--bootstrap", s.kafka["PLAINTEXT"]]),
            ("TLS", ["--bootstrap", s.kafka["SASL_SSL"], "--ca", str(certs.ca_path)]),
            ("TLS + SCRAM-SHA-256", ["--bootstrap", s.kafka["SASL_SSL"], "--ca", str(certs.ca_path),
                                     "--mechanism", "SCRAM-SHA-256", "--user", "bench", "--password", PASSWORD]),
            ("TLS + SCRAM-SHA-512", ["--bootstrap", s.kafka["SASL_SSL"], "--ca", str(certs.ca_path),
                                     "--mechanism", "SCRAM-SHA-512", "--user", "bench", "--password", PASSWORD]),
        ]:
            cpu = s.cpu_seconds()
            r = bench("connect", *args, "--seconds", str(a.seconds), "--concurrency", str(a.concurrency))
            server_cpu = s.cpu_seconds() - cpu
            r["server_cpu_seconds"] = round(server_cpu, 2)
            r["connections_per_server_cpu_second"] = round(r["connections"] / max(server_cpu, 1e-9))
            reports["connect"].append({"label": label, **r})
    finally:
        s.stop()
        shutil.rmtree(work, ignore_errors=True)
    if a.json:
        Path(a.json).write_text(json.dumps(reports, indent=2))

    def mb(listener, kind):
        runs = [r[kind]["mb_per_s"] for r in reports[kind] if r["listener"] == listener]
        return runs, sum(runs) / len(runs)

    def cpu_per_gb(listener, kind):
        runs = [r for r in reports[kind] if r["listener"] == listener]
        cpu = sum(r["server_cpu_seconds"] for r in runs)
        gb = sum(r[kind]["bytes"] for r in runs) / 1e9
        return cpu / gb

    print("| | PLAINTEXT MB/s (each round) | SASL_SSL MB/s (each round) | SASL_SSL / PLAINTEXT "
          "| server CPU s per GB, PLAINTEXT / SASL_SSL |")
    print("|---|---|---|---|---|")
    for kind in ["produce", "consume"]:
        plain, plain_avg = mb("PLAINTEXT", kind)
        tls, tls_avg = mb("SASL_SSL", kind)
        print(f"| {kind} | {', '.join(f'{x:.1f}' for x in plain)} | {', '.join(f'{x:.1f}' for x in tls)} "
              f"| {tls_avg / plain_avg * 100:.0f}% | {cpu_per_gb('PLAINTEXT', kind):.2f} / "
              f"{cpu_per_gb('SASL_SSL', kind):.2f} |")
    print()
    print("| connection setup | connections/s | server CPU s | connections per server CPU second | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|")
    for r in reports["connect"]:
        lat = r["setup_latency_ms"] or {}
        print(f"| {r['label']} | {r['connections_per_s']:.0f} | {r['server_cpu_seconds']} "
              f"| {r['connections_per_server_cpu_second']} | {lat.get('p50')} | {lat.get('p99')} |")


if __name__ == "__main__":
    main()
