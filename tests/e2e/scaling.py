"""Gateways that come and go under load, behind HAProxy: the orchestrators (a swarm service
from the image built here, or plain processes), the load (idempotent Kafka producers, a
consumer group, MQTT 5.0 QoS 1 and 2 publishers and persistent subscribers with wills) and
what it observed. Used by test_scaling.py and by benches/scaling.py for the figures in
docs/benchmarks.md."""

import os
import random
import re
import signal
import socket
import subprocess
import threading
import time

import paho.mqtt.client as mqtt
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from conftest import Sluice, free_port, http_get, wait_for
from docker_env import run

# A gateway in slot s (1..SLOTS) listens on ports whose last digit is s, so a swarm
# service can name them with a template ({{.Task.Slot}}) and HAProxy knows them all.
SLOTS = 4
KINDS = ("kafka", "mqtt", "http")


def bindable(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def port_prefixes():
    """One four-digit prefix per kind of listener, each with its ports P1..P4 free."""
    out = {}
    while len(out) < len(KINDS):
        # Below the ephemeral range, where clients' own ports would take them.
        p = random.randint(1100, 3199)
        if p not in out.values() and all(bindable(int(f"{p}{s}")) for s in range(1, SLOTS + 1)):
            out[KINDS[len(out)]] = p
    return out


def slot_addr(prefixes, kind, slot):
    return f"127.0.0.1:{prefixes[kind]}{slot}"


def cluster_env(etcd, s3, namespace, secret_path,
                rebalance=os.environ.get("SCALING_REBALANCE", "true")):
    """What every gateway of the scenario is configured with, as environment variables."""
    return {
        "SLUICE_METADATA": f"etcd://{etcd.endpoint}/{namespace}",
        "SLUICE_OBJECT_STORE": f"s3://{s3.bucket}/{namespace}",
        "SLUICE_CLUSTER_SECRET_FILE": secret_path,
        "SLUICE_DEFAULT_PARTITIONS": "4",
        "SLUICE_GROUP_INITIAL_REBALANCE_DELAY": "300ms",
        "SLUICE_REBALANCE_CONNECTIONS": rebalance,
        "SLUICE_CACHE_MEMORY": "64MiB",
        "SLUICE_CACHE_DISK": "64MiB",
        "RUST_LOG": os.environ.get("SCALING_RUST_LOG", "info"),
        **s3.env(),
    }


def connections(prefixes, slots):
    """Open (Kafka, MQTT) connections of each running gateway, by slot."""
    out = {}
    for s in slots:
        text = http_get(f"http://{slot_addr(prefixes, 'http', s)}/metrics")[1]
        values = dict(line.split(" ", 1) for line in text.splitlines()
                      if line.startswith(("sluice_kafka_connections ", "sluice_mqtt_connections ")))
        out[s] = (int(float(values.get("sluice_kafka_connections", 0))),
                  int(float(values.get("sluice_mqtt_connections", 0))))
    return out


class Haproxy:
    """HAProxy from Debian in front of the four slots: TCP, leastconn, a gateway out while
    its /readyz is not 200, a connection refused by a gateway retried on another."""

    def __init__(self, base, prefixes):
        self.kafka, self.mqtt, self.http = (f"127.0.0.1:{free_port()}" for _ in range(3))
        backends = []
        for kind in KINDS:
            servers = "\n".join(
                f"    server slot{s} {slot_addr(prefixes, kind, s)} port {prefixes['http']}{s}"
                for s in range(1, SLOTS + 1))
            backends.append(f"""
frontend {kind}
    bind {getattr(self, kind)}
    default_backend {kind}

backend {kind}
    option httpchk GET /readyz
{servers}
""")
        cfg = base / "haproxy.cfg"
        cfg.write_text(f"""
global
    maxconn 4000

defaults
    mode tcp
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    timeout check 2s
    balance leastconn
    retries 3
    option redispatch
    default-server inter 500ms fall 1 rise 1 check
{''.join(backends)}""")
        self.log = open(base / "haproxy.log", "ab")
        self.proc = subprocess.Popen(["haproxy", "-W", "-db", "-f", str(cfg)],
                                     stdout=self.log, stderr=self.log)
        host, port = self.kafka.rsplit(":", 1)
        wait_for("haproxy", lambda: socket.create_connection((host, int(port)), 1).close() is None)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


class Processes:
    """Gateways as processes on this machine, one per slot: the fallback where swarm
    cannot run."""

    name = "processes"

    def __init__(self, base, prefixes, env):
        self.base, self.prefixes, self.env = base, prefixes, env
        self.gateways = {}
        self.logs = []
        self.started = 0

    def running(self):
        return sorted(self.gateways)

    def scale(self, n):
        if n > len(self.gateways):
            new = [s for s in range(1, SLOTS + 1) if s not in self.gateways][:n - len(self.gateways)]
            for s in new:
                self.started += 1
                g = Sluice(self.base / f"gw-slot{s}-{self.started}", env=self.env, mode="gateway")
                g.listen = {"kafka": {"PLAINTEXT": slot_addr(self.prefixes, "kafka", s)},
                            "mqtt": {"mqtt": slot_addr(self.prefixes, "mqtt", s)},
                            "http": slot_addr(self.prefixes, "http", s)}
                self.gateways[s] = g.start(wait=False)
                self.logs.append(g.log_path)
            for s in new:
                g = self.gateways[s]
                try:
                    g.ready()
                except AssertionError as e:
                    raise AssertionError(f"{e}: {g.log_path.read_text()[-3000:]}") from None
        else:
            gone = self.running()[n:]
            for s in gone:
                self.gateways[s].proc.send_signal(signal.SIGTERM)
            for s in gone:
                self.gateways.pop(s).proc.wait(timeout=60)

    def logs_text(self):
        return "".join(p.read_text(errors="replace") for p in self.logs)

    def stop(self):
        self.scale(0)


class Swarm:
    """Gateways as a Docker swarm service from the image built here, on the host's network,
    each task listening on its slot's ports."""

    name = "swarm"

    def __init__(self, docker, image, prefixes, env):
        docker.swarm()
        self.service = f"sluice-e2e-{os.getpid()}-{random.randint(0, 1 << 30)}"
        secret = env["SLUICE_CLUSTER_SECRET_FILE"]
        env = dict(env, SLUICE_CLUSTER_SECRET_FILE="/run/cluster-secret",
                   SLUICE_KAFKA_LISTEN=f"127.0.0.1:{prefixes['kafka']}{{{{.Task.Slot}}}}",
                   SLUICE_ADVERTISE=f"127.0.0.1:{prefixes['kafka']}{{{{.Task.Slot}}}}",
                   SLUICE_MQTT_LISTEN=f"127.0.0.1:{prefixes['mqtt']}{{{{.Task.Slot}}}}",
                   SLUICE_HTTP_LISTEN=f"127.0.0.1:{prefixes['http']}{{{{.Task.Slot}}}}")
        self.prefixes = prefixes
        self.logs = []
        run("docker", "service", "create", "--detach", "--name", self.service,
            "--network", "host", "--replicas", "0", "--stop-grace-period", "40s",
            "--mount", f"type=bind,source={secret},target=/run/cluster-secret,readonly",
            *[a for k, v in env.items() for a in ("--env", f"{k}={v}")],
            image, "gateway")

    def running(self):
        names = run("docker", "service", "ps", self.service, "--filter", "desired-state=running",
                    "--format", "{{.Name}}").stdout.split()
        return sorted(int(n.rsplit(".", 1)[1]) for n in names)

    def containers(self):
        return run("docker", "ps", "-q", "--filter",
                   f"label=com.docker.swarm.service.name={self.service}").stdout.split()

    def scale(self, n):
        before = self.containers()
        run("docker", "service", "scale", "--detach", f"{self.service}={n}")
        if n >= len(before):
            def all_ready():
                slots = self.running()
                return len(slots) == n and all(
                    http_get(f"http://{slot_addr(self.prefixes, 'http', s)}/readyz", 1)[0] == 200
                    for s in slots)
            wait_for(f"{n} gateways ready", all_ready, timeout=60)
        else:
            wait_for(f"{n} gateways left", lambda: len(self.containers()) == n, timeout=90)
            # Their logs, before swarm prunes the tasks that ended.
            for c in set(before) - set(self.containers()):
                self.logs.append(self.container_logs(c))

    @staticmethod
    def container_logs(container):
        out = run("docker", "logs", container, check=False)
        return out.stdout + out.stderr

    def logs_text(self):
        return "".join(self.logs + [self.container_logs(c) for c in self.containers()])

    def stop(self):
        run("docker", "service", "rm", self.service, check=False)
        wait_for("the service's containers gone", lambda: not self.containers(), timeout=90)


class KafkaLoad:
    """Idempotent producers (acks=all) and a consumer group on one topic."""

    def __init__(self, bootstrap, topic, producers=2, consumers=2, rate=100):
        self.bootstrap, self.topic, self.rate = bootstrap, topic, rate
        self.acked = {}
        self.errors = []
        self.latency = []
        self.consumed = []
        self.stopping = threading.Event()
        self.consumers_stopping = threading.Event()
        self.threads = [threading.Thread(target=self._produce, args=(i,)) for i in range(producers)]
        self.consumer_threads = [threading.Thread(target=self._consume, args=(i,))
                                 for i in range(consumers)]
        for t in self.threads + self.consumer_threads:
            t.start()

    def _produce(self, i):
        p = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True,
                      "acks": "all", "linger.ms": 5, "client.id": f"scaling-producer-{i}"})
        seq = 0

        def done(err, msg, sent):
            if err:
                self.errors.append(str(err))
            else:
                self.acked[msg.value()] = (msg.partition(), msg.offset())
                self.latency.append((sent, time.monotonic() - sent))
        while not self.stopping.is_set():
            sent = time.monotonic()
            p.produce(self.topic, value=b"p%d-%d" % (i, seq),
                      on_delivery=lambda err, msg, sent=sent: done(err, msg, sent))
            seq += 1
            # The producer's pace; its delivery reports are served meanwhile.
            p.poll(1 / self.rate)
        assert p.flush(120) == 0

    def _consume(self, i):
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "scaling-group",
                      "client.id": f"scaling-consumer-{i}", "auto.offset.reset": "earliest",
                      "auto.commit.interval.ms": 1000, "session.timeout.ms": 10000,
                      "heartbeat.interval.ms": 1000})
        c.subscribe([self.topic])
        while not self.consumers_stopping.is_set():
            m = c.poll(0.2)
            if m is not None and not m.error():
                self.consumed.append((time.monotonic(), m.value()))
        c.close()

    def stop_producing(self):
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=180)

    def stop_consuming(self):
        self.consumers_stopping.set()
        for t in self.consumer_threads:
            t.join(timeout=60)

    def stop(self):
        self.stop_producing()
        self.stop_consuming()

    def log(self, partitions=4):
        """Every record of the topic, by partition: [(offset, value)]."""
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "scaling-check",
                      "enable.auto.commit": False})
        ends = {p: c.get_watermark_offsets(TopicPartition(self.topic, p), timeout=30)
                for p in range(partitions)}
        c.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        out = {p: [] for p in range(partitions)}
        while any(len(out[p]) < ends[p][1] - ends[p][0] for p in out):
            m = c.poll(30)
            assert m is not None, f"read {sum(map(len, out.values()))} of {ends}"
            if not m.error():
                out[m.partition()].append((m.offset(), m.value()))
        c.close()
        return ends, out


class Device:
    """A paho MQTT 5.0 client through the balancer: a persistent session (expiry 10 min)
    and a will; it reconnects when a gateway drains or sheds it."""

    def __init__(self, addr, client_id, wills="scaling/wills"):
        self.client_id = client_id
        self.connects = []
        self.disconnects = []
        self.messages = []
        self.acked_mids = []
        self.mids = {}
        self.connected = threading.Event()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5)
        self.c.will_set(f"{wills}/{client_id}", b"offline", qos=1)
        self.c.reconnect_delay_set(min_delay=1, max_delay=2)
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = lambda c, u, f, reason, p: self.disconnects.append(int(reason.value))
        self.c.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self.c.on_publish = lambda c, u, mid, reason, p: self.acked_mids.append(mid)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600
        host, port = addr.rsplit(":", 1)
        # A clean start the first time only: every reconnection resumes the session.
        self.c.connect(host, int(port), keepalive=20, properties=props)
        self.c.loop_start()
        assert self.connected.wait(15), f"{client_id}: no CONNACK"

    def _on_connect(self, client, userdata, flags, reason, properties):
        self.connects.append(flags.session_present)
        self.connected.set()

    def subscribe(self, topic, qos):
        done = threading.Event()
        self.c.on_subscribe = lambda *a: done.set()
        self.c.subscribe(topic, qos)
        assert done.wait(15), f"{self.client_id}: no SUBACK"

    def publish(self, topic, payload, qos):
        info = self.c.publish(topic, payload, qos=qos)
        self.mids[info.mid] = payload

    def acked(self):
        return {self.mids[m] for m in self.acked_mids if m in self.mids}

    def stop(self):
        self.c.disconnect()
        self.c.loop_stop()


class MqttLoad:
    """A QoS 1 and a QoS 2 publisher, subscribers to both, and a watcher of the wills."""

    def __init__(self, addr, subscribers=4, rate=20):
        self.rate = rate
        self.watcher = Device(addr, "scaling-watcher")
        self.watcher.subscribe("scaling/wills/#", 1)
        self.subscribers = [Device(addr, f"scaling-sub-{i}") for i in range(subscribers)]
        for s in self.subscribers:
            s.subscribe("scaling/q1", 1)
            s.subscribe("scaling/q2", 2)
        self.publishers = [(Device(addr, "scaling-pub-q1"), "scaling/q1", 1),
                           (Device(addr, "scaling-pub-q2"), "scaling/q2", 2)]
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._publish, args=p) for p in self.publishers]
        for t in self.threads:
            t.start()

    def _publish(self, device, topic, qos):
        seq = 0
        while not self.stopping.wait(1 / self.rate):
            device.publish(topic, b"%s-%d" % (topic.encode(), seq), qos)
            seq += 1

    def stop_publishing(self):
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=30)

    def devices(self):
        return [self.watcher, *self.subscribers, *(d for d, _, _ in self.publishers)]

    def stop(self):
        self.stop_publishing()
        for d in self.devices():
            d.stop()


def drain_times_ms(logs):
    return [int(ms) for ms in re.findall(r"drained drain_ms=(\d+)", logs)]


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else None
