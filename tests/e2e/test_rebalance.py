"""Connections move to a new gateway: after a scale-out, a gateway above its fair share of
connections asks some to reconnect elsewhere, a few per round (MQTT 5.0 DISCONNECT 0x9C,
the will held back as in a drain; Kafka connections closed between requests), until the
gateways hold about as many each; `--rebalance-connections false` keeps them where they
are."""

import os
import selectors
import socket
import struct
import time

from conftest import Sluice, gateways as start_gateways, wait_for
from test_mqtt_sessions import Client, raw_connect, read_packet

# Larger figures for a measurement: REBALANCE_MQTT_CLIENTS=400 REBALANCE_INTERVAL=5s.
MQTT_CLIENTS = int(os.environ.get("REBALANCE_MQTT_CLIENTS", "40"))
KAFKA_CLIENTS = 12
INTERVAL = os.environ.get("REBALANCE_INTERVAL", "300ms")
FAST = ["--rebalance-interval", INTERVAL, "--mqtt-drain-will-delay", "2s"]


def kafka_connect(bootstrap):
    """A Kafka connection that has answered one ApiVersions request."""
    host, port = bootstrap.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=15)
    client = b"rebalance"
    body = struct.pack(">hhih", 18, 0, 1, len(client)) + client
    s.sendall(struct.pack(">i", len(body)) + body)
    size = struct.unpack(">i", s.recv(4))[0]
    while size > 0:
        size -= len(s.recv(size))
    return s


def counts(gw):
    return int(gw.metric("sluice_mqtt_connections")), int(gw.metric("sluice_kafka_connections"))


def test_a_new_gateway_gets_its_share_of_connections(tmp_dir, etcd, s3):
    (a,) = start_gateways(tmp_dir, etcd, s3, 1, "rebalance", FAST)
    mqtt = {}
    for i in range(MQTT_CLIENTS):
        sock, _ = raw_connect(a.mqtt, f"device-{i}", True, 600, will=(f"status/device-{i}", b"offline", 0))
        mqtt[sock] = f"device-{i}"
    kafka = [kafka_connect(a.kafka) for _ in range(KAFKA_CLIENTS)]
    wait_for("all connections counted", lambda: counts(a) == (MQTT_CLIENTS, KAFKA_CLIENTS))

    b = Sluice(tmp_dir / "gw-b", a.extra_args, env=a.env, mode="gateway").start()
    watcher = Client(b.mqtt, "status-watcher")
    watcher.subscribe("status/#", 1)

    # Clients told to go reconnect to the other gateway, as a load balancer sending new
    # connections to the least loaded one would.
    other = {a.mqtt: b, b.mqtt: a}
    sel = selectors.DefaultSelector()
    for sock, name in mqtt.items():
        sel.register(sock, selectors.EVENT_READ, ("mqtt", a, name))
    for sock in kafka:
        sel.register(sock, selectors.EVENT_READ, ("kafka", a, None))
    moved_mqtt, moved_kafka, resumed = 0, 0, 0
    started = time.monotonic()
    deadline = started + 300
    settled_since = None
    while time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            sock = key.fileobj
            protocol, on, name = key.data
            sel.unregister(sock)
            to = other[on.mqtt]
            if protocol == "mqtt":
                kind, _, body = read_packet(sock)
                assert (kind, body[:1]) == (14, b"\x9c"), (kind, body)
                sock.close()
                again, present = raw_connect(to.mqtt, name, False, 600)
                resumed += present
                moved_mqtt += 1
                sel.register(again, selectors.EVENT_READ, ("mqtt", to, name))
            else:
                assert sock.recv(1) == b"", "a Kafka connection got bytes it did not ask for"
                sock.close()
                sel.register(kafka_connect(to.kafka), selectors.EVENT_READ, ("kafka", to, None))
                moved_kafka += 1
        on_a = counts(a)
        balanced = on_a[0] <= MQTT_CLIENTS * 11 // 20 + 4 and on_a[1] <= KAFKA_CLIENTS // 2 + 3
        if balanced and settled_since is None:
            settled_since = time.monotonic()
        if settled_since and time.monotonic() - settled_since > 3:
            break
    on_a, on_b = counts(a), counts(b)
    print(f"after scale-out: gateway a {on_a}, gateway b {on_b} (mqtt, kafka); "
          f"moved {moved_mqtt} mqtt, {moved_kafka} kafka; balanced "
          f"{settled_since - started:.1f}s after the second gateway was ready")
    assert MQTT_CLIENTS * 9 // 20 - 4 <= on_a[0] <= MQTT_CLIENTS * 11 // 20 + 4, on_a
    wait_for("every client counted", lambda: counts(a)[0] + counts(b)[0] == MQTT_CLIENTS + 1)  # and the watcher
    assert KAFKA_CLIENTS // 2 - 3 <= on_a[1] <= KAFKA_CLIENTS // 2 + 3, on_a
    assert resumed == moved_mqtt, "a moved session did not resume"
    # Every moved client came back: its will is dropped, none is published.
    def wills():
        return {o: sum(g.metric(f'sluice_mqtt_wills_total{{outcome="{o}"}}') for g in (a, b))
                for o in ("deferred", "dropped", "published")}
    try:
        wait_for("the moved clients' wills dropped", lambda: wills()["dropped"] == moved_mqtt, timeout=60)
    finally:
        print("wills", wills())
    assert wills() == {"deferred": moved_mqtt, "dropped": moved_mqtt, "published": 0}
    assert watcher.messages == []
    assert a.metric('sluice_connections_shed_total{protocol="mqtt"}') >= moved_mqtt
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    watcher.stop()
    a.stop()
    b.stop()


def test_rebalancing_off_keeps_connections(tmp_dir, etcd, s3):
    (a,) = start_gateways(tmp_dir, etcd, s3, 1, "no-rebalance", [*FAST, "--rebalance-connections", "false"])
    socks = [raw_connect(a.mqtt, f"d-{i}", True, 0)[0] for i in range(10)]
    b = Sluice(tmp_dir / "gw-b", a.extra_args, env=a.env, mode="gateway").start()
    time.sleep(3)  # ten rounds: nothing may be shed (an absence has no event to await)
    assert counts(a)[0] == 10
    assert a.metric("sluice_connections_shed_total") == 0
    for s in socks:
        s.setblocking(False)
        try:
            assert s.recv(1) != b""
        except BlockingIOError:
            pass
        s.close()
    a.stop()
    b.stop()
