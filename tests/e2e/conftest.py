"""Fixtures for end-to-end tests: a real `sluice` process, real etcd, a real S3 server.

Every server binds 127.0.0.1 on a free port and is stopped by its process id.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("SLUICE_BIN", ROOT / "target" / "debug" / "sluice"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, check, timeout=30.0):
    """Polls `check` for a server that offers no readiness event; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not ready after {timeout}s")
        time.sleep(0.05)


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


class Sluice:
    """One `sluice serve` (or `gateway`, or `compactor`) process."""

    # Every process started by the current test, so a failing test leaves none behind, and
    # their logs, shown when the test fails.
    started = []
    logs = []

    def __init__(self, data_dir, extra_args=(), env=None, mode="serve", kafka_protocol=None,
                 kafka_listeners=None, mqtt_listeners=("mqtt",), https=False, tls=None):
        self.data_dir = Path(data_dir)
        # The Kafka listeners' protocols as Kafka names them (PLAINTEXT, SASL_SSL, ...), the
        # first one's address being `kafka`; `kafka_protocol` names a single one.
        self.kafka_protocols = list(kafka_listeners or [kafka_protocol or "PLAINTEXT"])
        self.kafka_protocol = self.kafka_protocols[0]
        self.mqtt_schemes = list(mqtt_listeners)
        self.https = https
        # A CertSet (see tls.py) for TLS listeners.
        self.tls = tls
        self.extra_args = list(extra_args)
        self.env = dict(os.environ, **(env or {}))
        self.mode = mode
        self.proc = None
        self.kafka = None
        self.http = None
        self.mqtt = None
        # Every listener's address, by protocol or scheme.
        self.kafka_by = {}
        self.mqtt_by = {}
        # A restarted server listens where it listened before, as clients expect.
        self.listen = None
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"

    def start(self, wait=True):
        assert BIN.exists(), f"{BIN} is missing: build with `cargo build` first"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        listen = self.listen or {
            "kafka": {p: "127.0.0.1:0" for p in self.kafka_protocols},
            "mqtt": {m: "127.0.0.1:0" for m in self.mqtt_schemes},
            "http": "127.0.0.1:0",
        }
        kafka = ",".join(f"{p}://{a}" for p, a in listen["kafka"].items())
        mqtt = ",".join(f"{m}://{a}" for m, a in listen["mqtt"].items())
        args = [
            str(BIN), self.mode,
            "--data-dir", str(self.data_dir),
            "--kafka-listen", kafka,
            "--http-listen", ("https://" if self.https else "") + listen["http"],
            *(["--mqtt-listen", mqtt] if self.mode != "compactor" else []),
            *(self.tls.server_args() if self.tls else []),
            "--cache-disk", "64MiB",
            "--cache-memory", "64MiB",
            *self.extra_args,
        ]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, env=self.env)
        Sluice.started.append(self.proc)
        Sluice.logs.append(self.log_path)
        self.requested = listen
        return self.ready() if wait else self

    def ready(self):
        """Waits for the started process to print its addresses and "ready"."""
        listen = self.requested
        # The process prints its bound addresses, then "ready", once it accepts connections.
        lines = []
        while True:
            line = self.proc.stdout.readline().decode()
            if not line:
                raise AssertionError(f"sluice exited early: {lines}; see {self.log_path}")
            lines.append(line)
            if line.strip() == "ready":
                break
            m = re.match(r"node id (-?\d+)", line)
            if m:
                self.node_id = int(m.group(1))
            m = re.match(r"kafka listening on (\S+) (\S+)", line)
            if m:
                self.kafka_by[m.group(2)] = m.group(1)
            m = re.match(r"http listening on (\S+)", line)
            if m:
                self.http = m.group(1)
            m = re.match(r"mqtt listening on (\S+) (\S+)", line)
            if m:
                self.mqtt_by[m.group(2)] = m.group(1)
        self.kafka = self.kafka_by.get(self.kafka_protocol)
        self.mqtt = self.mqtt_by.get(self.mqtt_schemes[0]) if self.mqtt_schemes else None
        self.listen = {"kafka": dict(self.kafka_by) or listen["kafka"],
                       "mqtt": dict(self.mqtt_by) or listen["mqtt"], "http": self.http}
        return self

    @property
    def bootstrap(self):
        return self.kafka

    def compact(self, topic=None):
        """`sluice compact` against this process; returns what the pass did."""
        args = [str(BIN), "compact", "--server", self.http]
        if topic:
            args += ["--topic", topic]
        out = subprocess.run(args, capture_output=True, timeout=600)
        assert out.returncode == 0, out.stderr.decode()
        return json.loads(out.stdout)

    def metrics(self):
        return http_get(f"http://{self.http}/metrics")[1]

    def metric(self, name):
        """Sum of a metric's samples whose line starts with `name` (labels included)."""
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith(name):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.kafka = self.http = self.mqtt = None

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.kafka = self.http = self.mqtt = None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        # The servers' warnings and errors, which the test's assertion does not show.
        for path in Sluice.logs:
            try:
                text = re.sub(r"\x1b\[[0-9;]*m", "", Path(path).read_text(errors="replace"))
                lines = [line for line in text.splitlines() if " WARN " in line or " ERROR " in line]
            except OSError:
                continue
            if lines:
                report.sections.append((f"sluice log {Path(path).name} (warnings)", "\n".join(lines[-40:])))


@pytest.fixture(autouse=True)
def no_leftover_servers():
    """Kills, by process id, every Sluice process a test started and did not stop."""
    yield
    for proc in Sluice.started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    Sluice.started.clear()
    Sluice.logs.clear()


@pytest.fixture
def tmp_dir():
    d = tempfile.mkdtemp(prefix="sluice-e2e-")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


# Consumer groups form quickly in tests: a new group waits 300 ms for more members.
FAST_GROUPS = ["--group-initial-rebalance-delay", "300ms"]


@pytest.fixture
def sluice(tmp_dir):
    s = Sluice(tmp_dir / "data", ["--default-partitions", "4", *FAST_GROUPS]).start()
    yield s
    s.stop()


class Etcd:
    def __init__(self, base, port=None):
        self.client = port or free_port()
        peer = free_port()
        self.endpoint = f"127.0.0.1:{self.client}"
        url = f"http://127.0.0.1:{self.client}"
        purl = f"http://127.0.0.1:{peer}"
        self.log = open(base / "etcd.log", "ab")
        self.args = [
            shutil.which("etcd") or "etcd", "--name=e2e", f"--data-dir={base / 'etcd'}",
            f"--listen-client-urls={url}", f"--advertise-client-urls={url}",
            f"--listen-peer-urls={purl}", f"--initial-advertise-peer-urls={purl}",
            f"--initial-cluster=e2e={purl}",
        ]
        self.start()

    def start(self):
        """Starts etcd (again: same port, same data)."""
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=self.log)
        url = f"http://{self.endpoint}"
        wait_for("etcd", lambda: "true" in http_get(f"{url}/health")[1])

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


class S3:
    def __init__(self, base, port=None):
        port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        self.log = open(base / "moto.log", "ab")
        self.proc = subprocess.Popen(
            [shutil.which("moto_server") or "moto_server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=self.log, stderr=self.log)
        wait_for("moto_server", lambda: http_get(self.endpoint + "/")[0] == 200)
        self.bucket = "sluice-e2e"
        req = urllib.request.Request(f"{self.endpoint}/{self.bucket}", method="PUT")
        urllib.request.urlopen(req, timeout=10).read()

    def env(self):
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture
def etcd(tmp_dir):
    e = Etcd(tmp_dir)
    yield e
    e.stop()


@pytest.fixture
def s3(tmp_dir):
    s = S3(tmp_dir)
    yield s
    s.stop()


def gateways(tmp_dir, etcd, s3, count, namespace, extra=(), env_extra=None, each=None, **kwargs):
    """`count` gateways sharing one etcd (under `namespace`), one bucket prefix and one
    cluster secret (which signs their calls to each other); `each[i]`: more arguments for
    the i-th."""
    secret = tmp_dir / f"{namespace}-cluster-secret"
    secret.write_text(f"e2e cluster secret of {namespace}\n")
    return [
        Sluice(tmp_dir / f"gw{i}", [
            "--metadata", f"etcd://{etcd.endpoint}/{namespace}",
            "--object-store", f"s3://{s3.bucket}/{namespace}",
            "--cluster-secret-file", str(secret),
            *extra,
            *(each[i] if each else []),
        ], env={**s3.env(), **(env_extra or {})}, mode="gateway", **kwargs).start()
        for i in range(count)
    ]


# Docker and the images built here, for the tests that run Sluice in containers.
from docker_env import docker, images  # noqa: E402,F401
