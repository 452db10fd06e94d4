"""deploy/compose.yaml, as a user runs it: etcd, moto, two gateways, a compactor and HAProxy
from images built here, all healthy; Kafka, MQTT and HTTP through the balancer; a stopped
gateway drains and the balancer sends everything to the other."""

import json
import os
import shutil
import subprocess

import paho.mqtt.client as mqtt
from confluent_kafka import Consumer, Producer

from conftest import BIN, ROOT, free_port, http_get, wait_for
from docker_env import run
from test_mqtt import Collector
from test_mqtt_sessions import publish

PORTS = ["ETCD_PORT", "ETCD_PEER_PORT", "S3_PORT", "KAFKA_PORT", "MQTT_PORT", "HTTP_PORT",
         "GATEWAY1_KAFKA_PORT", "GATEWAY1_MQTT_PORT", "GATEWAY1_HTTP_PORT",
         "GATEWAY2_KAFKA_PORT", "GATEWAY2_MQTT_PORT", "GATEWAY2_HTTP_PORT",
         "COMPACTOR_HTTP_PORT"]


def compose_command():
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    assert shutil.which("docker-compose"), "neither `docker compose` nor docker-compose"
    return ["docker-compose"]


class Compose:
    def __init__(self, tmp_dir, image):
        self.ports = {name: free_port() for name in PORTS}
        secret = tmp_dir / "cluster-secret"
        secret.write_text("compose e2e cluster secret\n")
        secret.chmod(0o644)
        self.env = dict(os.environ, SLUICE_IMAGE=image, SLUICE_CLUSTER_SECRET_FILE=str(secret),
                        RUST_LOG="info", **{k: str(v) for k, v in self.ports.items()})
        self.cmd = [*compose_command(), "-p", f"sluice-e2e-{os.getpid()}",
                    "-f", ROOT / "deploy" / "compose.yaml"]

    def __call__(self, *args, timeout=300, check=True):
        return run(*self.cmd, *args, timeout=timeout, check=check, env=self.env)

    def container(self, service):
        return self("ps", "-q", service).stdout.strip()

    def health(self, service):
        return run("docker", "inspect", "--format", "{{.State.Health.Status}}",
                   self.container(service)).stdout.strip()

    def addr(self, name):
        return f"127.0.0.1:{self.ports[name]}"


def test_compose_cluster_serves_through_the_balancer_and_survives_a_drain(tmp_dir, images):
    c = Compose(tmp_dir, images["sluice"])
    try:
        c("up", "-d")
        for service in ("etcd", "moto", "gateway-1", "gateway-2", "compactor"):
            wait_for(f"{service} healthy", lambda: c.health(service) == "healthy", timeout=120)

        # Kafka: bootstrap through HAProxy, then each gateway at its advertised address.
        lb = c.addr("KAFKA_PORT")
        p = Producer({"bootstrap.servers": lb, "acks": "all", "enable.idempotence": True})
        brokers = {f"{b.host}:{b.port}" for b in p.list_topics(timeout=30).brokers.values()}
        assert brokers == {c.addr("GATEWAY1_KAFKA_PORT"), c.addr("GATEWAY2_KAFKA_PORT")}
        for i in range(100):
            p.produce("compose", value=b"record-%d" % i)
        assert p.flush(30) == 0
        assert consume(lb, "compose", 100) == [b"record-%d" % i for i in range(100)]

        # MQTT and HTTP through HAProxy.
        sub = Collector(c.addr("MQTT_PORT"), mqtt.MQTTv5, "compose-sub")
        sub.subscribe("devices/#", 1)
        publish(c.addr("MQTT_PORT"), "devices/a", [b"hello"], client_id="compose-pub")
        assert [m.payload for m in sub.wait_for(1)] == [b"hello"]
        sub.c.disconnect()
        sub.c.loop_stop()
        assert http_get(f"http://{c.addr('HTTP_PORT')}/readyz") == (200, "ready\n")

        # The compactor writes the records into Parquet.
        out = run(BIN, "compact", "--server", c.addr("COMPACTOR_HTTP_PORT"), "--topic", "compose")
        report = json.loads(out.stdout)
        assert report["segments"] >= 1 and report["records"] == 100, report

        # A stopped gateway drains; the balancer and the clients move to the other.
        c("stop", "gateway-1", timeout=120)
        assert "drained drain_ms=" in c("logs", "--no-color", "gateway-1").stdout
        p.produce("compose", value=b"after the drain")
        assert p.flush(60) == 0
        brokers = {f"{b.host}:{b.port}" for b in p.list_topics(timeout=30).brokers.values()}
        assert brokers == {c.addr("GATEWAY2_KAFKA_PORT")}
        assert consume(lb, "compose", 101)[-1] == b"after the drain"
    except BaseException:
        # The containers' logs, for the failure report.
        print(c("logs", "--no-color", check=False).stdout[-100_000:])
        raise
    finally:
        c("down", "-v", "--timeout", "5", check=False)


def consume(bootstrap, topic, count):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{count}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    out = []
    while len(out) < count:
        m = c.poll(30)
        assert m is not None, f"read {len(out)} of {count}"
        if not m.error():
            out.append(m.value())
    c.close()
    return out
