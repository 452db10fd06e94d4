"""MQTT side by side: Sluice (`sluice serve`, embedded) and Mosquitto (the Debian package)
on this machine in the same run, driven by the same load generator (`sluice-bench mqtt`,
over rumqttc), which counts deliveries, not sends.

    cargo build --release -p sluice -p sluice-bench
    python3 benches/mqtt_bench.py [--seconds 10] [--idle 10000]

Prints a Markdown table for docs/benchmarks.md. Needs `mosquitto` (apt-get install
mosquitto); raises its own open-file limit for the idle-connection run.

    python3 benches/mqtt_bench.py --tls [--seconds 10] [--idle 10000]

runs both over TLS (`mqtts://`, an ECDSA P-256 certificate made with tests/e2e/tls.py):
Mosquitto with a TLS listener, Sluice with an mqtts listener.
"""

import argparse
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
SLUICE = TARGET / "sluice"
LOAD = TARGET / "sluice-bench"
# With --tls: the certificates both brokers serve, and the CA the load generator trusts.
CERTS = None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def start_mosquitto(work):
    port = free_port()
    conf = work / "mosquitto.conf"
    tls = (f"cafile {CERTS.ca_path}\ncertfile {CERTS.cert_path}\nkeyfile {CERTS.key_path}\n"
           if CERTS else "")
    conf.write_text(
        # Mosquitto started as root runs as the mosquitto user unless told otherwise, and
        # could not read the certificates in a private temporary directory.
        f"listener {port} 127.0.0.1\n{tls}user root\nallow_anonymous true\npersistence false\n"
        # As many unacknowledged deliveries and queued messages per client as Sluice allows.
        "max_inflight_messages 1024\nmax_queued_messages 100000\n"
        "log_dest none\n")
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc, f"127.0.0.1:{port}"


def tls_args():
    return ["--ca", str(CERTS.ca_path)] if CERTS else []


def start_sluice(work):
    shutil.rmtree(work / "sluice", ignore_errors=True)
    proc = subprocess.Popen(
        [str(SLUICE), "serve", "--data-dir", str(work / "sluice"),
         "--kafka-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
         "--mqtt-listen", ("mqtts://" if CERTS else "") + "127.0.0.1:0",
         *(["--tls-cert", str(CERTS.cert_path), "--tls-key", str(CERTS.key_path)] if CERTS else [])],
        stdout=subprocess.PIPE, stderr=open(work / "sluice.log", "ab"))
    while True:
        line = proc.stdout.readline().decode()
        if not line:
            raise RuntimeError("sluice exited; see sluice.log")
        m = re.match(r"mqtt listening on (\S+)", line)
        if m:
            return proc, m.group(1)


def load(addr, *args):
    out = subprocess.run([str(LOAD), "mqtt", "-q", "--addr", addr, *tls_args(), *args], capture_output=True, text=True,
                         timeout=600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def idle_memory(proc, addr, n):
    """Broker RSS growth per connection with `n` idle connections open."""
    out = subprocess.run([str(LOAD), "mqtt-idle", "-q", "--addr", addr, *tls_args(), "--connections", str(n), "--hold", "3",
                          "--server-pid", str(proc.pid)], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["still_connected"] == n, r
    return (r["server_bytes_per_connection"], r["connects_per_s"], r["server_rss_before"] // 1024,
            r["server_rss_after"] // 1024)


def cross_gateway(seconds):
    """Publish on one gateway, subscribe on another (etcd and moto's S3 server), with and
    without forwarding WAL objects between gateways."""
    os.environ.setdefault("SLUICE_BIN", str(SLUICE))
    sys.path.insert(0, str(ROOT / "tests" / "e2e"))
    from conftest import Etcd, S3, Sluice, wait_for  # noqa: E402
    rows = []
    base = Path(tempfile.mkdtemp(prefix="mqtt-cross-"))
    etcd, s3 = Etcd(base), S3(base)
    try:
        for forward in ("true", "false"):
            ns = f"cross-{forward}"
            gws = [Sluice(base / f"{ns}-{i}", [
                "--metadata", f"etcd://{etcd.endpoint}/{ns}", "--object-store", f"s3://{s3.bucket}/{ns}",
                "--mqtt-forward", forward], env=s3.env(), mode="gateway").start() for i in range(2)]
            try:
                for label, args in [("QoS 1, 2k msg/s", ["--qos", "1", "--rate", "2000"])]:
                    r = load(gws[0].mqtt, "--sub-addr", gws[1].mqtt, *args, "--publishers", "4",
                             "--subscribers", "1", "--size", "128", "--seconds", str(seconds))
                    rows.append((label, forward, r))
                    print("cross", forward, json.dumps(r), file=sys.stderr)
            finally:
                for g in gws:
                    g.stop()
    finally:
        etcd.stop()
        s3.stop()
        shutil.rmtree(base, ignore_errors=True)
    print("| load (publish on gateway 1, subscribe on gateway 2) | forwarding | deliveries/s | delivered / expected | p50 ms | p99 ms | p99.9 ms |")
    print("|---|---|---|---|---|---|---|")
    for label, forward, r in rows:
        lat = r["latency_ms"]
        print(f"| {label} | {'on' if forward == 'true' else 'off'} | {r['delivery']['msgs_per_s']:,.0f} "
              f"| {r['delivered']:,} / {r['expected']:,} | {lat['p50']:.2f} | {lat['p99']:.2f} | {lat['p999']:.2f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--idle", type=int, default=10_000)
    ap.add_argument("--cross-gateway", action="store_true",
                    help="instead: two gateways on etcd and S3, with and without forwarding")
    ap.add_argument("--tls", action="store_true", help="both brokers over TLS")
    a = ap.parse_args()
    if a.tls:
        global CERTS
        sys.path.insert(0, str(ROOT / "tests" / "e2e"))
        from tls import CertSet  # noqa: E402
        CERTS = CertSet(Path(tempfile.mkdtemp(prefix="mqtt-bench-certs-")))
    if a.cross_gateway:
        return cross_gateway(a.seconds)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    runs = [
        ("QoS 0, open loop", ["--qos", "0"]),
        ("QoS 0, 10k msg/s", ["--qos", "0", "--rate", "10000"]),
        ("QoS 1, open loop", ["--qos", "1"]),
        ("QoS 1, 5k msg/s", ["--qos", "1", "--rate", "5000"]),
    ]
    common = ["--publishers", "4", "--subscribers", "1", "--size", "128", "--seconds", str(a.seconds)]
    work = Path(tempfile.mkdtemp(prefix="mqtt-bench-"))
    rows = []
    try:
        for name, start in [("Mosquitto", start_mosquitto), ("Sluice", start_sluice)]:
            proc, addr = start(work)
            try:
                for label, args in runs:
                    r = load(addr, *args, *common)
                    rows.append((label, name, r))
                    print(name, json.dumps(r), file=sys.stderr)
            finally:
                proc.terminate()
                proc.wait()
            # Memory per idle connection on a fresh process.
            proc, addr = start(work)
            try:
                per_conn, cps, before, during = idle_memory(proc, addr, a.idle)
                rows.append((f"{a.idle} idle connections", name,
                             {"per_conn": per_conn, "cps": cps, "before": before, "during": during}))
                print(name, "idle", per_conn, cps, before, during, file=sys.stderr)
            finally:
                proc.terminate()
                proc.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print("| load | broker | deliveries/s | delivered / expected | p50 ms | p99 ms | p99.9 ms |")
    print("|---|---|---|---|---|---|---|")
    for label, name, r in rows:
        if "per_conn" in r:
            continue
        lat = r["latency_ms"]
        print(f"| {label} | {name} | {r['delivery']['msgs_per_s']:,.0f} | {r['delivered']:,} / {r['expected']:,} "
              f"| {lat['p50']:.2f} | {lat['p99']:.2f} | {lat['p999']:.2f} |")
    print()
    print("| broker | RSS before | RSS with idle connections | per connection | connects/s |")
    print("|---|---|---|---|---|")
    for label, name, r in rows:
        if "per_conn" in r:
            print(f"| {name} | {r['before'] / 1024:.0f} MiB | {r['during'] / 1024:.0f} MiB "
                  f"| {r['per_conn'] / 1024:.1f} KiB | {r['cps']:,.0f} |")


if __name__ == "__main__":
    main()
