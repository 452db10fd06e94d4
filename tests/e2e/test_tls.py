"""TLS on every listener with real clients and certificates made here: Kafka SSL and SASL_SSL
(librdkafka through confluent-kafka and kcat, kafka-python, kafkajs), mutual TLS with
Kafka-style principals, several listeners with their own advertised addresses (one gateway
and two over etcd), MQTT over mqtts:// (mosquitto, paho) and wss:// (mqtt.js), HTTPS,
certificate rotation without a restart, and what a TLS port does with plaintext, garbage
and untrusted or expired client certificates."""

import json
import os
import re
import socket
import ssl
import struct
import subprocess
import threading
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import (AdminClient, NewTopic, ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialUpsertion)
from kafka import KafkaConsumer, KafkaProducer
from paho.mqtt.enums import CallbackAPIVersion

from conftest import Sluice, gateways, wait_for
from test_malformed import frame, header
from tls import CertSet, Ca, peer_cn, tls_connect

NODE_DIR = Path(__file__).parent / "node"
DEVICE = {"C": "DE", "O": "Acme, Inc.", "OU": "Fleet", "CN": "device-42"}


def ssl_conf(bootstrap, certs, protocol="SSL", client=None):
    c = {"bootstrap.servers": bootstrap, "security.protocol": protocol,
         "ssl.ca.location": str(certs.ca_path)}
    if client:
        c["ssl.certificate.location"], c["ssl.key.location"] = str(client[0]), str(client[1])
    return c


def brokers(conf):
    """host:port of every broker in a Metadata response, by node id."""
    md = AdminClient(conf).list_topics(timeout=30)
    return {b.id: f"{b.host}:{b.port}" for b in md.brokers.values()}


def consume(conf, topic, n, group):
    c = Consumer({**conf, "group.id": group, "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got = []
    while len(got) < n:
        m = c.poll(15)
        assert m is not None, got
        if not m.error():
            got.append(m.value())
    c.close()
    return got


def log_text(server):
    """The server's log without terminal colours."""
    return re.sub(r"\x1b\[[0-9;]*m", "", server.log_path.read_text())


def api_versions(sock, correlation=1):
    """Sends ApiVersions v0 and returns the correlation id of the answer."""
    sock.sendall(frame(header(18, 0, correlation)))
    size = struct.unpack(">i", recv_exact(sock, 4))[0]
    return struct.unpack(">i", recv_exact(sock, size)[:4])[0]


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        assert chunk, "closed"
        buf += chunk
    return buf


def refused(addr, ctx):
    """Whether a TLS client is turned away: the handshake fails, or (TLS 1.3 checks the
    client's certificate after the client thinks it is done) the first request is."""
    try:
        s = tls_connect(addr, ctx)
        s.settimeout(15)
        s.sendall(frame(header(18, 0, 1)))
        return s.recv(4) == b""
    except (ssl.SSLError, ConnectionError):
        return True


def closed_after(addr, data):
    """Sends `data` on a plain TCP connection; whether the server then closes it (it may
    answer with a TLS alert first)."""
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=15)
    s.sendall(data)
    try:
        while s.recv(4096):
            pass
        return True
    except ConnectionError:
        return True
    except socket.timeout:
        return False
    finally:
        s.close()


@pytest.fixture
def certs(tmp_dir):
    return CertSet(tmp_dir / "certs")


def test_ssl_and_plaintext_listeners_each_advertise_their_own_address(tmp_dir, certs):
    s = Sluice(tmp_dir / "data", kafka_listeners=["PLAINTEXT", "SSL"], tls=certs).start()
    try:
        ssl_addr, plain_addr = s.kafka_by["SSL"], s.kafka_by["PLAINTEXT"]
        assert brokers(ssl_conf(ssl_addr, certs)) == {s.node_id: ssl_addr}
        assert brokers({"bootstrap.servers": plain_addr}) == {s.node_id: plain_addr}

        p = Producer(ssl_conf(ssl_addr, certs))
        for i in range(3):
            p.produce("secure", f"ssl-{i}".encode(), partition=0)
        assert p.flush(30) == 0
        assert consume(ssl_conf(ssl_addr, certs), "secure", 3, "g-ssl") == [b"ssl-0", b"ssl-1", b"ssl-2"]
        # Debian's kcat (librdkafka 2.0.2 with OpenSSL 3).
        out = subprocess.run(["kcat", "-b", ssl_addr, "-X", "security.protocol=ssl",
                              "-X", f"ssl.ca.location={certs.ca_path}", "-C", "-t", "secure", "-e", "-q"],
                             capture_output=True, timeout=60)
        assert out.returncode == 0, out.stderr.decode()
        assert out.stdout.split() == [b"ssl-0", b"ssl-1", b"ssl-2"]
        # The same data through the plaintext listener.
        assert consume({"bootstrap.servers": plain_addr}, "secure", 3, "g-plain") == [b"ssl-0", b"ssl-1", b"ssl-2"]
        # TLS 1.2 is accepted as well as 1.3, and nothing older.
        for version, ok in [(ssl.TLSVersion.TLSv1_2, True), (ssl.TLSVersion.TLSv1_3, True),
                            (ssl.TLSVersion.TLSv1_1, False)]:
            ctx = certs.context()
            if not ok:
                ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
                ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
            ctx.maximum_version = version
            if ok:
                sock = tls_connect(ssl_addr, ctx)
                assert api_versions(sock) == 1
                sock.close()
            else:
                with pytest.raises((ssl.SSLError, ConnectionError)):
                    tls_connect(ssl_addr, ctx)
    finally:
        s.stop()


def test_sasl_ssl_with_every_mechanism_and_client(tmp_dir, certs):
    s = Sluice(tmp_dir / "data", ["--admin-user", "admin"], env={"SLUICE_ADMIN_PASSWORD": "admin-secret"},
               kafka_listeners=["SASL_SSL"], tls=certs).start()
    try:
        def conf(mech, user, password):
            return {**ssl_conf(s.bootstrap, certs, "SASL_SSL"), "sasl.mechanism": mech,
                    "sasl.username": user, "sasl.password": password}
        admin = AdminClient(conf("SCRAM-SHA-512", "admin", "admin-secret"))
        for f in admin.alter_user_scram_credentials([
            UserScramCredentialUpsertion("alice", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), b"wonderland"),
            UserScramCredentialUpsertion("alice", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), b"wonderland"),
        ]).values():
            f.result(30)
        admin.create_topics([NewTopic("tls-sasl", 1)])["tls-sasl"].result(30)
        for i, mech in enumerate(["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]):
            p = Producer(conf(mech, "alice", "wonderland"))
            p.produce("tls-sasl", f"rdk-{i}".encode(), partition=0)
            assert p.flush(30) == 0
        assert consume(conf("SCRAM-SHA-256", "alice", "wonderland"), "tls-sasl", 3, "g") == \
            [b"rdk-0", b"rdk-1", b"rdk-2"]
        out = subprocess.run(["kcat", "-b", s.bootstrap, "-X", "security.protocol=SASL_SSL",
                              "-X", f"ssl.ca.location={certs.ca_path}", "-X", "sasl.mechanisms=SCRAM-SHA-256",
                              "-X", "sasl.username=alice", "-X", "sasl.password=wonderland",
                              "-C", "-t", "tls-sasl", "-e", "-q"], capture_output=True, timeout=60)
        assert out.returncode == 0, out.stderr.decode()
        assert out.stdout.split() == [b"rdk-0", b"rdk-1", b"rdk-2"]
        # kafka-python.
        kw = dict(bootstrap_servers=s.bootstrap, security_protocol="SASL_SSL", ssl_cafile=str(certs.ca_path),
                  sasl_mechanism="SCRAM-SHA-512", sasl_plain_username="alice", sasl_plain_password="wonderland")
        kp = KafkaProducer(**kw)
        kp.send("tls-sasl", b"kafka-python", partition=0).get(timeout=30)
        kp.close()
        kc = KafkaConsumer("tls-sasl", auto_offset_reset="earliest", consumer_timeout_ms=10000, **kw)
        values = [m.value for m in kc]
        kc.close()
        assert values == [b"rdk-0", b"rdk-1", b"rdk-2", b"kafka-python"]
        # kafkajs.
        out = subprocess.run(["node", str(NODE_DIR / "sasl.js"), s.bootstrap, "scram-sha-256", "alice",
                              "wonderland", "tls-sasl", str(certs.ca_path)], capture_output=True, timeout=120)
        assert out.returncode == 0, out.stderr.decode()[-2000:]
        assert json.loads(out.stdout.decode().strip().splitlines()[-1])["count"] == 5
        # A wrong password is refused inside TLS as on plaintext.
        errors = []
        p = Producer({**conf("SCRAM-SHA-256", "alice", "wrong"), "error_cb": errors.append,
                      "message.timeout.ms": 5000})
        p.produce("tls-sasl", b"x")
        p.flush(10)
        assert errors
        assert s.metric('sluice_auth_failures_total{listener="SASL_SSL",mechanism="SCRAM-SHA-256"}') >= 1
    finally:
        s.stop()


def test_mutual_tls_names_principals_and_refuses_bad_certificates(tmp_dir):
    certs = CertSet(tmp_dir / "certs", client_auth="required")
    device = certs.client_cert("device", DEVICE)
    expired = certs.client_cert("expired", {"CN": "old-device"}, expired=True)
    stranger = certs.client_cert("stranger", {"CN": "stranger"}, ca=Ca("Another CA"))
    s = Sluice(tmp_dir / "data", kafka_listeners=["SSL"], mqtt_listeners=["mqtts"], tls=certs,
               env={"RUST_LOG": "info,sluice_gateway::kafka::conn=debug"}).start()
    try:
        p = Producer(ssl_conf(s.bootstrap, certs, client=device))
        p.produce("mtls", b"from a device", partition=0)
        assert p.flush(30) == 0
        assert consume(ssl_conf(s.bootstrap, certs, client=device), "mtls", 1, "g") == [b"from a device"]
        # The principal as Kafka's default SSL principal builder writes it.
        log = log_text(s)
        assert 'principal=Some("CN=device-42,OU=Fleet,O=Acme\\\\, Inc.,C=DE")' in log, log[-3000:]
        before = s.metric('sluice_tls_handshake_failures_total{listener="SSL"}')
        for client in [None, expired, stranger]:
            assert refused(s.bootstrap, certs.context(client)), client
            assert refused(s.mqtt, certs.context(client)), client
        assert s.metric('sluice_tls_handshake_failures_total{listener="SSL"}') == before + 3
        assert s.metric('sluice_tls_handshake_failures_total{listener="mqtts"}') == 3
        # Still serving.
        sock = tls_connect(s.bootstrap, certs.context(device))
        assert api_versions(sock, 7) == 7
        sock.close()
    finally:
        s.stop()


def test_cn_principals(tmp_dir):
    certs = CertSet(tmp_dir / "certs", client_auth="optional", principal="cn")
    device = certs.client_cert("device", DEVICE)
    s = Sluice(tmp_dir / "data", kafka_listeners=["SSL"], tls=certs,
               env={"RUST_LOG": "info,sluice_gateway::kafka::conn=debug"}).start()
    try:
        for client in [device, None]:
            sock = tls_connect(s.bootstrap, certs.context(client))
            assert api_versions(sock) == 1
            sock.close()
        log = log_text(s)
        assert 'principal=Some("device-42")' in log
        assert "principal=None" in log
    finally:
        s.stop()


def test_plaintext_and_garbage_on_a_tls_port_are_closed(tmp_dir, certs):
    s = Sluice(tmp_dir / "data", kafka_listeners=["SSL"], mqtt_listeners=["mqtts"], tls=certs).start()
    try:
        assert closed_after(s.bootstrap, frame(header(18, 0, 1)))
        assert closed_after(s.bootstrap, os.urandom(4096))
        assert closed_after(s.mqtt, b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
        assert s.metric('sluice_tls_handshake_failures_total{listener="SSL"}') == 2
        assert s.metric('sluice_tls_handshake_failures_total{listener="mqtts"}') == 1
        sock = tls_connect(s.bootstrap, certs.context())
        assert api_versions(sock) == 1
        sock.close()
    finally:
        s.stop()


def test_rotated_certificates_reach_new_connections_and_old_ones_stay(tmp_dir, certs):
    s = Sluice(tmp_dir / "data", kafka_listeners=["SSL"], tls=certs).start()
    try:
        old = tls_connect(s.bootstrap, certs.context())
        assert peer_cn(old) == "sluice-test"
        certs.server_cert("sluice-rotated")
        wait_for("the new certificate", lambda: s.metric('sluice_tls_reloads_total{result="ok"}') >= 1)
        new = tls_connect(s.bootstrap, certs.context())
        assert peer_cn(new) == "sluice-rotated"
        assert api_versions(new, 2) == 2
        assert api_versions(old, 3) == 3
        # A key that does not match its certificate is not taken; what worked stays.
        (certs.dir / "server.key").write_bytes(certs.ca.issue({"CN": "y"}, server=True)[1])
        wait_for("the failed reload", lambda: s.metric('sluice_tls_reloads_total{result="failed"}') >= 1)
        third = tls_connect(s.bootstrap, certs.context())
        assert peer_cn(third) == "sluice-rotated"
        for sock in (old, new, third):
            sock.close()
    finally:
        s.stop()


class Subscriber:
    """A paho client over TLS that collects what it receives."""

    def __init__(self, addr, certs, client_id, topic):
        self.got = []
        self.cond = threading.Condition()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.c.tls_set(ca_certs=str(certs.ca_path))
        subscribed = threading.Event()
        self.c.on_subscribe = lambda *a: subscribed.set()
        self.c.on_connect = lambda c, *a: c.subscribe(topic, 1)
        self.c.on_message = self._message
        host, port = addr.rsplit(":", 1)
        self.c.connect(host, int(port))
        self.c.loop_start()
        assert subscribed.wait(15)

    def _message(self, client, userdata, msg):
        with self.cond:
            self.got.append((msg.topic, msg.payload))
            self.cond.notify_all()

    def wait_for(self, n):
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.got) >= n, 15), self.got
        return self.got

    def stop(self):
        self.c.loop_stop()
        self.c.disconnect()


def test_mqtt_over_mqtts_and_inside_tls_on_a_kafka_listener(tmp_dir, certs):
    s = Sluice(tmp_dir / "data", kafka_listeners=["SSL"], mqtt_listeners=["mqtts"], tls=certs).start()
    try:
        sub = Subscriber(s.mqtt, certs, "tls-sub", "tls/#")
        host, port = s.mqtt.rsplit(":", 1)
        subprocess.run(["mosquitto_pub", "-h", host, "-p", port, "--cafile", str(certs.ca_path),
                        "-t", "tls/mosquitto", "-m", "over mqtts", "-q", "1"], check=True, timeout=30)
        # paho over TLS on the Kafka SSL listener: MQTT recognised inside TLS.
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="tls-pub", protocol=mqtt.MQTTv311)
        pub.tls_set(ca_certs=str(certs.ca_path))
        khost, kport = s.bootstrap.rsplit(":", 1)
        pub.connect(khost, int(kport))
        pub.loop_start()
        info = pub.publish("tls/paho", b"inside kafka's tls", qos=1)
        info.wait_for_publish(15)
        assert info.is_published()
        pub.loop_stop()
        pub.disconnect()
        assert sorted(sub.wait_for(2)) == [("tls/mosquitto", b"over mqtts"), ("tls/paho", b"inside kafka's tls")]
        sub.stop()
        # The messages are in the log for Kafka clients too.
        assert sorted(consume(ssl_conf(s.bootstrap, certs), "mqtt", 2, "g")) == \
            [b"inside kafka's tls", b"over mqtts"]
    finally:
        s.stop()


def test_https_and_mqtt_js_over_wss(tmp_dir, certs):
    s = Sluice(tmp_dir / "data", https=True, tls=certs).start()
    try:
        ctx = certs.context()
        with urllib.request.urlopen(f"https://{s.http}/healthz", context=ctx, timeout=10) as r:
            assert r.status == 200
        # Plain HTTP to the HTTPS port is closed.
        assert closed_after(s.http, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        out = subprocess.run(["node", str(NODE_DIR / "mqtt.js"), f"wss://{s.http}/mqtt", f"mqtt://{s.mqtt}"],
                             capture_output=True, text=True, timeout=120,
                             env=dict(os.environ, MQTT_CA=str(certs.ca_path)))
        assert out.returncode == 0, out.stderr
        got = json.loads(out.stdout)
        assert [(m["topic"], m["payload"]) for m in got] == \
            [(f"js/{i % 3}", f"m{i}") for i in range(10)] + [("js/last", "q2")]
    finally:
        s.stop()


def test_two_gateways_advertise_each_listener(tmp_dir, etcd, s3, certs):
    gws = gateways(tmp_dir, etcd, s3, 2, "listeners", kafka_listeners=["PLAINTEXT", "SSL"], tls=certs)
    try:
        expected_ssl = {g.node_id: g.kafka_by["SSL"] for g in gws}
        expected_plain = {g.node_id: g.kafka_by["PLAINTEXT"] for g in gws}
        for g in gws:
            wait_for("both gateways", lambda: len(brokers({"bootstrap.servers": g.kafka_by["PLAINTEXT"]})) == 2)
            assert brokers(ssl_conf(g.kafka_by["SSL"], certs)) == expected_ssl
            assert brokers({"bootstrap.servers": g.kafka_by["PLAINTEXT"]}) == expected_plain
        # A group through SSL: the coordinator is found at its SSL address.
        p = Producer(ssl_conf(gws[0].kafka_by["SSL"], certs))
        for i in range(4):
            p.produce("two-gw", f"m{i}".encode())
        assert p.flush(30) == 0
        assert sorted(consume(ssl_conf(gws[1].kafka_by["SSL"], certs), "two-gw", 4, "g2")) == \
            [b"m0", b"m1", b"m2", b"m3"]
    finally:
        for g in gws:
            g.stop()


def test_sluice_user_manages_users_over_sasl_ssl(tmp_dir, certs):
    from conftest import BIN
    s = Sluice(tmp_dir / "data", ["--admin-user", "admin"], env={"SLUICE_ADMIN_PASSWORD": "admin-secret"},
               kafka_listeners=["SASL_SSL"], tls=certs).start()
    try:
        conn = ["--server", s.bootstrap, "--security-protocol", "SASL_SSL", "--ca", str(certs.ca_path),
                "--sasl-user", "admin"]
        env = dict(os.environ, SLUICE_SASL_PASSWORD="admin-secret")

        def user(*args, password=None, sasl_password="admin-secret"):
            e = dict(env, SLUICE_SASL_PASSWORD=sasl_password)
            if password:
                e["SLUICE_USER_PASSWORD"] = password
            return subprocess.run([str(BIN), "user", *args, *conn], capture_output=True, text=True,
                                  timeout=60, env=e)

        out = user("set", "bob", password="builder")
        assert out.returncode == 0, out.stderr
        out = user("set", "carol", "--mechanism", "SCRAM-SHA-256", "--iterations", "8192", password="c")
        assert out.returncode == 0, out.stderr
        out = user("list")
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines() == [
            "admin\tSCRAM-SHA-256:4096,SCRAM-SHA-512:4096",
            "bob\tSCRAM-SHA-256:4096,SCRAM-SHA-512:4096",
            "carol\tSCRAM-SHA-256:8192",
        ]
        bob = {**ssl_conf(s.bootstrap, certs, "SASL_SSL"), "sasl.mechanism": "SCRAM-SHA-512",
               "sasl.username": "bob", "sasl.password": "builder"}
        p = Producer(bob)
        p.produce("bobs", b"built", partition=0)
        assert p.flush(30) == 0
        out = user("delete", "bob")
        assert out.returncode == 0, out.stderr
        assert [line.split("\t")[0] for line in user("list").stdout.splitlines()] == ["admin", "carol"]
        errors = []
        p = Producer({**bob, "error_cb": errors.append, "message.timeout.ms": 5000})
        p.produce("bobs", b"x")
        p.flush(10)
        assert errors
        # The wrong administrator password, and an unacceptable iteration count.
        out = user("list", sasl_password="wrong")
        assert out.returncode != 0 and "SASL" in out.stderr, out.stderr
        out = user("set", "dave", "--iterations", "100", password="d")
        assert out.returncode != 0 and "UnacceptableCredential" in out.stderr, out.stderr
    finally:
        s.stop()
