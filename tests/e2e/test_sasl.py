"""Kafka SASL on a SASL_PLAINTEXT listener against the user store: SCRAM-SHA-256,
SCRAM-SHA-512 and PLAIN with librdkafka (confluent-kafka and kcat), kafka-python and
kafkajs; the first administrator from --admin-user; wrong passwords, unknown users and
requests before authentication refused and counted."""

import json
import struct
import subprocess
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import (AdminClient, NewTopic, ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialUpsertion)
from kafka import KafkaConsumer, KafkaProducer

from conftest import Sluice
from test_malformed import closed_by_server, connect, frame, header, read_frame

NODE_DIR = Path(__file__).parent / "node"


@pytest.fixture
def server(tmp_dir):
    s = Sluice(tmp_dir / "data", ["--admin-user", "admin"], env={"SLUICE_ADMIN_PASSWORD": "admin-secret"},
               kafka_protocol="SASL_PLAINTEXT").start()
    yield s
    s.stop()


def conf(server, mechanism, user, password):
    return {"bootstrap.servers": server.bootstrap, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password}


def test_scram_and_plain_with_real_clients(server):
    admin = AdminClient(conf(server, "SCRAM-SHA-512", "admin", "admin-secret"))
    for f in admin.alter_user_scram_credentials([
        UserScramCredentialUpsertion("alice", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), b"wonderland"),
        UserScramCredentialUpsertion("alice", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), b"wonderland"),
    ]).values():
        f.result(30)
    admin.create_topics([NewTopic("secured", 1)])["secured"].result(30)

    # librdkafka with each mechanism.
    for i, mech in enumerate(["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"]):
        p = Producer(conf(server, mech, "alice", "wonderland"))
        p.produce("secured", f"rdk-{i}".encode(), partition=0)
        assert p.flush(30) == 0
    c = Consumer({**conf(server, "SCRAM-SHA-256", "alice", "wonderland"), "group.id": "sec",
                  "auto.offset.reset": "earliest"})
    c.subscribe(["secured"])
    got = []
    while len(got) < 3:
        m = c.poll(10)
        assert m is not None, got
        if not m.error():
            got.append(m.value())
    c.close()
    assert got == [b"rdk-0", b"rdk-1", b"rdk-2"]

    # kcat (Debian's librdkafka 2.0.2).
    out = subprocess.run(["kcat", "-b", server.bootstrap, "-X", "security.protocol=SASL_PLAINTEXT",
                          "-X", "sasl.mechanisms=SCRAM-SHA-512", "-X", "sasl.username=alice",
                          "-X", "sasl.password=wonderland", "-C", "-t", "secured", "-e", "-q"],
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.split() == [b"rdk-0", b"rdk-1", b"rdk-2"]

    # kafka-python.
    for mech in ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"]:
        kp = KafkaProducer(bootstrap_servers=server.bootstrap, security_protocol="SASL_PLAINTEXT",
                           sasl_mechanism=mech, sasl_plain_username="alice", sasl_plain_password="wonderland")
        kp.send("secured", f"kp-{mech}".encode(), partition=0).get(timeout=30)
        kp.close()
    kc = KafkaConsumer("secured", bootstrap_servers=server.bootstrap, security_protocol="SASL_PLAINTEXT",
                       sasl_mechanism="SCRAM-SHA-256", sasl_plain_username="alice",
                       sasl_plain_password="wonderland", auto_offset_reset="earliest",
                       consumer_timeout_ms=10000)
    values = [m.value for m in kc]
    kc.close()
    assert values[:3] == [b"rdk-0", b"rdk-1", b"rdk-2"] and len(values) == 6

    # kafkajs.
    out = subprocess.run(["node", str(NODE_DIR / "sasl.js"), server.bootstrap, "scram-sha-256", "alice",
                          "wonderland", "secured"], capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    assert json.loads(out.stdout.decode().strip().splitlines()[-1])["count"] == 7

    assert server.metric('sluice_auth_failures_total{listener="SASL_PLAINTEXT"') == 0


def test_bad_credentials_are_refused(server):
    for mech, user, password in [("SCRAM-SHA-256", "admin", "wrong"), ("SCRAM-SHA-512", "nobody", "x"),
                                 ("PLAIN", "admin", "wrong")]:
        errors = []
        p = Producer({**conf(server, mech, user, password), "error_cb": errors.append,
                      "message.timeout.ms": 5000})
        p.produce("anything", b"x")
        p.flush(10)
        p.poll(1)
        assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), (mech, errors)
    assert server.metric('sluice_auth_failures_total{listener="SASL_PLAINTEXT"') >= 3


def test_requests_before_authentication_close_the_connection(server):
    s = connect(server)
    # ApiVersions is allowed.
    s.sendall(frame(header(18, 0, 1)))
    assert struct.unpack(">i", read_frame(s)[:4])[0] == 1
    # Metadata before authenticating: closed.
    s.sendall(frame(header(3, 1, 2) + struct.pack(">i", -1)))
    assert closed_by_server(s)


def test_a_client_that_never_authenticates_is_closed(server):
    s = connect(server)
    s.settimeout(30)
    s.sendall(frame(header(18, 0, 1)))
    assert struct.unpack(">i", read_frame(s)[:4])[0] == 1
    # Nothing more: the gateway closes it after its authentication timeout (10 s).
    assert closed_by_server(s)
    assert server.metric('sluice_auth_failures_total{listener="SASL_PLAINTEXT",mechanism="timeout"}') == 1


def test_repeated_failures_are_answered_ever_later(server):
    """PLAIN over the raw protocol: each wrong password for one user from one address is
    refused after twice the delay of the one before (100 ms, 200, 400, ...); another user
    is not slowed down by them, and the right password still gets in."""
    import time

    def attempt(user, password):
        s = connect(server)
        s.settimeout(30)
        s.sendall(frame(header(17, 1, 1) + struct.pack(">h", 5) + b"PLAIN"))
        assert struct.unpack(">h", read_frame(s)[4:6])[0] == 0
        token = b"\0" + user.encode() + b"\0" + password.encode()
        started = time.monotonic()
        s.sendall(frame(header(36, 1, 2) + struct.pack(">i", len(token)) + token))
        code = struct.unpack(">h", read_frame(s)[4:6])[0]
        elapsed = time.monotonic() - started
        s.close()
        return code, elapsed

    took = []
    for _ in range(5):
        code, elapsed = attempt("admin", "guess")
        assert code == 58  # SASL_AUTHENTICATION_FAILED
        took.append(elapsed)
    # 100, 200, 400, 800 and 1600 ms at least.
    for i, t in enumerate(took):
        assert t >= 0.1 * 2 ** i, took
    code, elapsed = attempt("nobody", "guess")
    assert code == 58 and elapsed < 1.6, elapsed
    code, _ = attempt("admin", "admin-secret")
    assert code == 0
    code, elapsed = attempt("admin", "guess")
    assert code == 58 and elapsed < 1.6, elapsed


def test_sessions_are_renewed_by_reauthentication(tmp_dir):
    """KIP-368 with --connections-max-reauth 2s: SaslAuthenticate tells the session's
    lifetime; librdkafka re-authenticates on its connections and keeps producing; a raw
    client that does not is closed at its first request after the session ended, and one
    that re-authenticates as someone else is closed too."""
    import time
    from confluent_kafka.admin import AdminClient as Admin
    from conftest import wait_for

    s = Sluice(tmp_dir / "data", ["--admin-user", "admin", "--connections-max-reauth", "2s"],
               env={"SLUICE_ADMIN_PASSWORD": "admin-secret"}, kafka_protocol="SASL_PLAINTEXT").start()
    try:
        admin = Admin(conf(s, "SCRAM-SHA-256", "admin", "admin-secret"))
        for f in admin.alter_user_scram_credentials([
            UserScramCredentialUpsertion("bob", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), b"b"),
        ]).values():
            f.result(30)
        errors = []
        p = Producer({**conf(s, "SCRAM-SHA-512", "admin", "admin-secret"), "error_cb": errors.append})
        delivered = []

        def produce_until_renewed():
            p.produce("renewed", b"x", partition=0, on_delivery=lambda err, m: delivered.append(err))
            p.flush(10)
            return s.metric("sluice_kafka_reauthentications_total") >= 2

        wait_for("two renewed sessions", produce_until_renewed, timeout=60)
        assert delivered and all(e is None for e in delivered), delivered
        assert not [e for e in errors if e.code() == KafkaError._AUTHENTICATION], errors

        def plain_login(sock, user, password, correlation):
            sock.sendall(frame(header(17, 1, correlation) + struct.pack(">h", 5) + b"PLAIN"))
            assert struct.unpack(">h", read_frame(sock)[4:6])[0] == 0
            token = b"\0" + user + b"\0" + password
            sock.sendall(frame(header(36, 1, correlation + 1) + struct.pack(">i", len(token)) + token))
            body = read_frame(sock)[4:]
            code, msg_len = struct.unpack(">hh", body[:4])
            assert code == 0, code
            rest = body[4 + max(msg_len, 0):]
            auth_len = struct.unpack(">i", rest[:4])[0]
            return struct.unpack(">q", rest[4 + auth_len:12 + auth_len])[0]

        sock = connect(s)
        sock.settimeout(30)
        assert plain_login(sock, b"admin", b"admin-secret", 1) == 2000
        # Renewed as the same user: the connection goes on.
        assert plain_login(sock, b"admin", b"admin-secret", 3) == 2000
        sock.sendall(frame(header(3, 1, 5) + struct.pack(">i", -1)))
        assert struct.unpack(">i", read_frame(sock)[:4])[0] == 5
        # The session's end is a matter of time passing: wait it out.
        time.sleep(2.2)
        sock.sendall(frame(header(3, 1, 6) + struct.pack(">i", -1)))
        assert closed_by_server(sock)
        assert s.metric('sluice_auth_failures_total{listener="SASL_PLAINTEXT",mechanism="session_expired"}') == 1
        # Re-authenticating as someone else closes the connection.
        sock = connect(s)
        sock.settimeout(30)
        plain_login(sock, b"admin", b"admin-secret", 1)
        sock.sendall(frame(header(17, 1, 3) + struct.pack(">h", 5) + b"PLAIN"))
        assert struct.unpack(">h", read_frame(sock)[4:6])[0] == 0
        token = b"\0bob\0b"
        sock.sendall(frame(header(36, 1, 4) + struct.pack(">i", len(token)) + token))
        assert struct.unpack(">h", read_frame(sock)[4:6])[0] == 58
        assert closed_by_server(sock)
    finally:
        s.stop()
