"""MQTT sessions that outlive their connection: kept in metadata, resumed on any gateway
with what was published meanwhile, in-flight QoS 1 and 2 state carried over; session
expiry, will delay, and MQTT data in the compacted Parquet table."""

import socket
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from conftest import gateways as start_gateways, wait_for
from test_mqtt import Collector, hostport, read_packet


class Client(Collector):
    """A paho client (3.1.1 or 5.0) that records what it receives and how it connected."""

    def __init__(self, addr, client_id, protocol=mqtt.MQTTv5, clean=True, expiry=None):
        self.messages = []
        self.got = threading.Condition()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.disconnected = threading.Event()
        self.session_present = None
        self.disconnect_reason = None
        v5 = protocol == mqtt.MQTTv5
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol,
                             clean_session=None if v5 else clean)
        self.c.on_message = self._on_message
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        self.c.on_disconnect = self._on_disconnect
        # A connection ended by the server stays ended: tests look at why.
        self.c.reconnect_delay_set(min_delay=3600, max_delay=3600)
        host, port = hostport(addr)
        if v5:
            props = Properties(PacketTypes.CONNECT)
            if expiry is not None:
                props.SessionExpiryInterval = expiry
            self.c.connect(host, port, keepalive=30, clean_start=clean, properties=props)
        else:
            self.c.connect(host, port, keepalive=30)
        self.c.loop_start()
        assert self.connected.wait(15), "no CONNACK"

    def _on_connect(self, client, userdata, flags, reason, properties):
        self.session_present = flags.session_present
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason, properties):
        self.disconnect_reason = reason
        self.disconnected.set()

    def stop(self):
        self.c.disconnect()
        self.c.loop_stop()


def publish(addr, topic, payloads, qos=1, client_id="pub"):
    """Publishes each payload and waits for its acknowledgement."""
    p = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    host, port = hostport(addr)
    p.connect(host, port)
    p.loop_start()
    for payload in payloads:
        info = p.publish(topic, payload, qos=qos)
        info.wait_for_publish(15)
        assert info.is_published()
    p.disconnect()
    p.loop_stop()


def payloads(messages):
    return [m.payload for m in messages]


def test_persistent_sessions_get_what_was_published_while_offline_3_1_1_and_5_0(sluice):
    for protocol, cid in [(mqtt.MQTTv311, "keeper-311"), (mqtt.MQTTv5, "keeper-5")]:
        topic = f"offline/{cid}"
        c = Client(sluice.mqtt, cid, protocol, clean=False, expiry=600)
        assert c.session_present is False
        c.subscribe(topic, 1)
        c.stop()
        publish(sluice.mqtt, topic, [b"m%d" % i for i in range(5)])
        # Back on the other port: the session belongs to the client id, not the listener.
        back = Client(sluice.bootstrap, cid, protocol, clean=False, expiry=600)
        assert back.session_present is True
        got = back.wait_for(5)
        assert payloads(got) == [b"m%d" % i for i in range(5)]
        # Live again: one more arrives once, after the rest.
        publish(sluice.mqtt, topic, [b"after"])
        assert payloads(back.wait_for(6)) == [b"m%d" % i for i in range(5)] + [b"after"]
        back.stop()
        # Clean start ends the session: nothing is resumed.
        clean = Client(sluice.mqtt, cid, protocol, clean=True, expiry=0)
        assert clean.session_present is False
        clean.stop()
        again = Client(sluice.mqtt, cid, protocol, clean=False, expiry=600)
        assert again.session_present is False
        again.stop()


def test_sessions_expire_after_their_interval_and_not_before(sluice):
    c = Client(sluice.mqtt, "short", expiry=1, clean=True)
    c.subscribe("exp/#", 1)
    c.stop()
    # Expiry is a matter of time passing: wait it out.
    time.sleep(1.5)
    late = Client(sluice.mqtt, "short", clean=False, expiry=60)
    assert late.session_present is False
    late.stop()
    kept = Client(sluice.mqtt, "short", clean=False, expiry=60)
    assert kept.session_present is True
    kept.stop()
    # Expiry 0 in CONNECT: the session ends with the connection.
    gone = Client(sluice.mqtt, "zero", clean=True, expiry=0)
    gone.subscribe("z/#", 1)
    gone.stop()
    assert Client(sluice.mqtt, "zero", clean=False, expiry=0).session_present is False


def varint(n):
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def utf8(s):
    b = s.encode()
    return len(b).to_bytes(2, "big") + b


def connect_packet(client_id, clean, expiry, will=None):
    """CONNECT 5.0: Session Expiry Interval `expiry`; `will`: (topic, payload, delay)."""
    flags = 0x02 if clean else 0
    props = b"\x11" + expiry.to_bytes(4, "big")
    payload = utf8(client_id)
    if will:
        topic, message, delay = will
        flags |= 0x04
        will_props = b"\x18" + delay.to_bytes(4, "big")
        payload += varint(len(will_props)) + will_props + utf8(topic) + len(message).to_bytes(2, "big") + message
    body = utf8("MQTT") + bytes([5, flags]) + (60).to_bytes(2, "big") + varint(len(props)) + props + payload
    return b"\x10" + varint(len(body)) + body


def raw_connect(addr, client_id, clean, expiry, will=None):
    """A raw 5.0 connection; returns the socket and CONNACK's session present flag."""
    s = socket.create_connection(hostport(addr), timeout=15)
    s.sendall(connect_packet(client_id, clean, expiry, will))
    kind, _, body = read_packet(s)
    assert kind == 2 and body[1] == 0, body
    return s, bool(body[0] & 1)


def test_a_session_is_settled_before_its_client_id_connects_again(sluice):
    """DISCONNECT, close, connect again at once: a session that ended with its
    connection is never resumed, one that outlives it always is."""
    for i in range(40):
        for expiry, kept in ((0, False), (600, True)):
            cid = f"again-{expiry}-{i}"
            s, present = raw_connect(sluice.mqtt, cid, True, expiry)
            assert not present
            s.sendall(b"\x82" + varint(2 + 1 + 2 + 5 + 1) + b"\x00\x01\x00" + utf8("agn/#") + b"\x01")
            assert read_packet(s)[0] == 9
            s.sendall(b"\xe0\x00")
            s.close()
            s, present = raw_connect(sluice.mqtt, cid, False, expiry)
            assert present is kept, (cid, present)
            s.sendall(b"\xe0\x00")
            s.close()


def parse_publish(flags, body):
    """(qos, dup, topic, packet id, payload) of a 5.0 PUBLISH body."""
    qos, dup = (flags >> 1) & 3, bool(flags & 8)
    n = int.from_bytes(body[:2], "big")
    topic, rest = body[2:2 + n].decode(), body[2 + n:]
    pid = None
    if qos:
        pid, rest = int.from_bytes(rest[:2], "big"), rest[2:]
    # Skip the properties.
    length, shift, i = 0, 0, 0
    while True:
        b = rest[i]
        length |= (b & 0x7F) << shift
        shift += 7
        i += 1
        if not b & 0x80:
            break
    return qos, dup, topic, pid, rest[i + length:]


def test_in_flight_qos_1_and_2_state_survives_a_reconnect_exactly_once(sluice):
    s, present = raw_connect(sluice.mqtt, "inflight", True, 600)
    assert not present
    s.sendall(b"\x82" + varint(2 + 1 + 2 + 5 + 1) + b"\x00\x01\x00" + utf8("inf/#") + b"\x02")
    assert read_packet(s)[0] == 9
    publish(sluice.mqtt, "inf/a", [b"one", b"two", b"three"], qos=2)
    got = [parse_publish(*read_packet(s)[1:]) for _ in range(3)]
    assert [(q, d, p) for q, d, _, _, p in got] == [(2, False, b"one"), (2, False, b"two"), (2, False, b"three")]
    pid1, pid2, pid3 = (g[3] for g in got)
    # One: PUBREC, and PUBREL comes; PUBCOMP withheld. Two and three: not acknowledged.
    s.sendall(b"\x50\x02" + pid1.to_bytes(2, "big"))
    kind, flags, body = read_packet(s)
    assert kind == 6 and body[:2] == pid1.to_bytes(2, "big")
    s.close()
    publish(sluice.mqtt, "inf/a", [b"four"], qos=2)

    s, present = raw_connect(sluice.mqtt, "inflight", False, 600)
    assert present
    # First what was in flight, in order: PUBREL for one, two and three again with DUP.
    kind, flags, body = read_packet(s)
    assert kind == 6 and body[:2] == pid1.to_bytes(2, "big")
    s.sendall(b"\x70\x02" + pid1.to_bytes(2, "big"))  # PUBCOMP
    again = [parse_publish(*read_packet(s)[1:]) for _ in range(2)]
    assert [(q, d, i, p) for q, d, _, i, p in again] == [(2, True, pid2, b"two"), (2, True, pid3, b"three")]
    for pid in (pid2, pid3):
        s.sendall(b"\x50\x02" + pid.to_bytes(2, "big"))  # PUBREC
    # Then, in whatever order: PUBREL for both, and "four", new, from the log.
    releases, news = [], []
    for _ in range(3):
        kind, flags, body = read_packet(s)
        if kind == 6:
            releases.append(int.from_bytes(body[:2], "big"))
        else:
            news.append(parse_publish(flags, body))
    assert releases == [pid2, pid3]
    [(qos, dup, topic, four, payload)] = news
    assert payload == b"four"
    for pid in (pid2, pid3):
        s.sendall(b"\x70\x02" + pid.to_bytes(2, "big"))
    s.sendall(b"\x50\x02" + four.to_bytes(2, "big"))
    kind, flags, body = read_packet(s)
    assert kind == 6 and body[:2] == four.to_bytes(2, "big") and body[2:3] in (b"", b"\x00")
    s.sendall(b"\x70\x02" + four.to_bytes(2, "big"))
    # Nothing else is pending: the next message is a new one.
    publish(sluice.mqtt, "inf/a", [b"five"], qos=2)
    qos, dup, topic, pid, payload = parse_publish(*read_packet(s)[1:])
    assert (dup, payload) == (False, b"five")
    s.close()


def test_will_delay_waits_and_is_dropped_when_the_client_returns(sluice):
    watcher = Client(sluice.mqtt, "will-watcher")
    watcher.subscribe("wills/#", 1)
    # Back within the delay: no will.
    s, _ = raw_connect(sluice.mqtt, "returns", True, 60, will=("wills/returns", b"gone", 2))
    s.close()
    s, present = raw_connect(sluice.mqtt, "returns", False, 60)
    assert present
    # Gone for good: the will comes, but not before its delay.
    dropped_at = time.monotonic()
    d, _ = raw_connect(sluice.mqtt, "leaves", True, 60, will=("wills/leaves", b"bye", 1))
    d.close()
    [m] = watcher.wait_for(1)
    assert time.monotonic() - dropped_at >= 0.9
    assert (m.topic, m.payload) == ("wills/leaves", b"bye")
    # The returned client's will delay (2 s) has passed by now; still nothing from it.
    time.sleep(max(0.0, dropped_at + 2.5 - time.monotonic()))
    publish(sluice.mqtt, "wills/marker", [b"marker"])
    assert [(m.topic, m.payload) for m in watcher.wait_for(2)] == [
        ("wills/leaves", b"bye"), ("wills/marker", b"marker")]
    s.close()
    watcher.stop()


def test_mqtt_messages_land_in_the_compacted_parquet_table(sluice):
    import pyarrow.dataset as ds
    publish(sluice.mqtt, "plant/7/temp", [b"21.5", b"21.7"], qos=1, client_id="sensor-7")
    sluice.compact("mqtt")
    root = sluice.data_dir / "objects" / "topics" / "mqtt"
    t = ds.dataset(str(root), format="parquet", partitioning="hive").to_table(
        columns=["key", "value", "headers"])
    rows = [(r["key"], r["value"], {h["key"]: h["value"] for h in r["headers"]}) for r in t.to_pylist()]
    rows.sort(key=lambda r: r[1])
    assert [(k, v) for k, v, _ in rows] == [(b"plant/7/temp", b"21.5"), (b"plant/7/temp", b"21.7")]
    assert rows[0][2] == {"mqtt.client_id": b"sensor-7", "mqtt.qos": b"1"}


def wait_total(clients, n, timeout=20):
    """Waits until `clients` together received at least `n` messages."""
    deadline = time.monotonic() + timeout
    while sum(len(c.messages) for c in clients) < n:
        assert time.monotonic() < deadline, [len(c.messages) for c in clients]
        with clients[0].got:
            clients[0].got.wait(0.1)


def test_shared_subscriptions_give_each_message_to_one_member(sluice):
    members = [Client(sluice.mqtt, f"worker-{i}", protocol) for i, protocol in
               enumerate([mqtt.MQTTv5, mqtt.MQTTv5, mqtt.MQTTv311])]
    for m in members:
        m.subscribe("$share/workers/jobs/#", 1)
    everyone = Client(sluice.mqtt, "auditor")
    everyone.subscribe("jobs/#", 1)
    sent = [b"job-%02d" % i for i in range(60)]
    publish(sluice.mqtt, "jobs/render", sent)
    assert payloads(everyone.wait_for(60)) == sent
    publish(sluice.mqtt, "jobs/render", [b"marker"])
    wait_total(members, 61)
    got = sum((payloads(m.messages) for m in members), [])
    assert sorted(got) == sorted(sent + [b"marker"]), "each message once, to one member"
    assert all(m.messages for m in members), "a member got nothing"
    for m in [*members, everyone]:
        m.stop()


def test_shared_subscription_members_on_two_gateways_share_without_duplicates(tmp_dir, etcd, s3):
    a, b = start_gateways(tmp_dir, etcd, s3, 2, "mqtt-shared", ["--default-partitions", "2"])
    on_a = Client(a.mqtt, "w-a")
    on_a.subscribe("$share/g/work/#", 1)
    on_b = Client(b.mqtt, "w-b")
    on_b.subscribe("$share/g/work/#", 1)
    # Each gateway knows the other has members before anything is published.
    for g in (a, b):
        wait_for("shared subscription registrations", lambda g=g: g.metric("sluice_mqtt_share_gateways") == 2)
    sent = [b"w%03d" % i for i in range(100)]
    publish(a.mqtt, "work/x", sent[:50])
    publish(b.mqtt, "work/y", sent[50:])
    wait_total([on_a, on_b], 100)
    got = payloads(on_a.messages) + payloads(on_b.messages)
    assert sorted(got) == sent
    assert on_a.messages and on_b.messages, "both gateways' members get a share"
    on_a.stop()
    on_b.stop()
    for g in (a, b):
        g.stop()


def test_two_gateways_live_delivery_takeover_and_resume_on_the_other(tmp_dir, etcd, s3):
    a, b = start_gateways(tmp_dir, etcd, s3, 2, "mqtt-sessions", ["--default-partitions", "2"])
    # Live: a subscriber on one gateway gets what is published on the other.
    live = Client(b.mqtt, "live-sub")
    live.subscribe("live/#", 1)
    # b now delivers MQTT messages: a learns it should forward to b.
    wait_for("a knows b", lambda: a.metric("sluice_peer_targets") == 1)
    publish(a.mqtt, "live/x", [b"l1", b"l2"])
    assert payloads(live.wait_for(2)) == [b"l1", b"l2"]
    live.stop()
    # The WAL objects holding them went from a to b directly (gRPC on the Kafka port).
    assert a.metric('sluice_peer_forwards_total{outcome="sent"}') >= 1
    assert b.metric('sluice_peer_forwards_total{outcome="received"}') >= 1
    # Each was cached only once its commit, with the object's digest, reached b.
    assert b.metric('sluice_peer_forwards_total{outcome="rejected"}') == 0

    # A persistent QoS 2 session leaves gateway b; what is published on a meanwhile
    # reaches it on a, exactly once.
    dev = Client(b.mqtt, "device-1", clean=True, expiry=600)
    dev.subscribe("cmd/device-1/#", 2)
    dev.stop()
    sent = [b"c%02d" % i for i in range(20)]
    publish(a.mqtt, "cmd/device-1/set", sent, qos=2)
    back = Client(a.mqtt, "device-1", clean=False, expiry=600)
    assert back.session_present is True
    assert payloads(back.wait_for(20)) == sent
    publish(a.mqtt, "cmd/device-1/set", [b"end"], qos=2)
    assert payloads(back.wait_for(21)) == sent + [b"end"]

    back.stop()

    # Taken over from the other gateway while connected: the old connection is told so
    # (DISCONNECT 0x8E), the new one gets the session with its subscription.
    old, present = raw_connect(a.mqtt, "device-1", False, 600)
    assert present
    moved = Client(b.mqtt, "device-1", clean=False, expiry=600)
    assert moved.session_present is True
    kind, _, body = read_packet(old)
    assert (kind, body[:1]) == (14, b"\x8e")
    old.close()
    publish(b.mqtt, "cmd/device-1/set", [b"after-move"], qos=2)
    assert payloads(moved.wait_for(1)) == [b"after-move"]
    moved.stop()
    for g in (a, b):
        g.stop()


def test_a_gateway_with_another_cluster_secret_refuses_forwards(tmp_dir, etcd, s3):
    """Gateway-to-gateway calls are signed: a forward signed with another secret is
    refused and counted, and delivery still works (the receiver reads the object store)."""
    from conftest import Sluice  # noqa: PLC0415
    gws = []
    for i, secret in enumerate(["the first cluster secret", "some other cluster secret"]):
        f = tmp_dir / f"secret-{i}"
        f.write_text(secret)
        gws.append(Sluice(tmp_dir / f"gw{i}", [
            "--metadata", f"etcd://{etcd.endpoint}/signed",
            "--object-store", f"s3://{s3.bucket}/signed",
            "--cluster-secret-file", str(f),
        ], env=s3.env(), mode="gateway").start())
    a, b = gws
    live = Client(b.mqtt, "signed-sub")
    live.subscribe("signed/#", 1)
    wait_for("a knows b", lambda: a.metric("sluice_peer_targets") == 1)
    publish(a.mqtt, "signed/x", [b"s1", b"s2"])
    assert payloads(live.wait_for(2)) == [b"s1", b"s2"]
    live.stop()
    wait_for("the refused forward counted",
             lambda: b.metric('sluice_auth_failures_total{listener="peer",mechanism="hmac"}') >= 1)
    assert b.metric('sluice_peer_forwards_total{outcome="received"}') == 0
    for g in gws:
        g.stop()


def test_gateways_with_only_tls_listeners_forward_over_tls(tmp_dir, etcd, s3):
    """Gateway-to-gateway calls go to the peer listener: with TLS Kafka listeners only,
    over TLS, the receiver's certificate checked against the issuers in the caller's own
    certificate chain (the same CA signs every gateway's) or --tls-peer-ca. With a peer CA
    that did not sign it, nothing is forwarded and delivery still works."""
    from conftest import Sluice  # noqa: PLC0415
    from tls import Ca, CertSet  # noqa: PLC0415
    certs = CertSet(tmp_dir / "certs")
    secret = tmp_dir / "secret"
    secret.write_text("a cluster secret for TLS peers")
    other_ca = tmp_dir / "other-ca.pem"
    other_ca.write_bytes(Ca("Not the gateways' CA").pem())

    def gateway(name, extra=()):
        return Sluice(tmp_dir / name, [
            "--metadata", f"etcd://{etcd.endpoint}/tls-peers",
            "--object-store", f"s3://{s3.bucket}/tls-peers",
            "--cluster-secret-file", str(secret), *extra,
        ], env=s3.env(), mode="gateway", kafka_listeners=["SSL"], tls=certs).start()

    # a's certificate file is a full chain: it trusts the chain's issuer, the CA.
    leaf_only = certs.cert_path
    full = certs.dir / "fullchain.pem"
    full.write_bytes(leaf_only.read_bytes() + certs.ca.pem())
    certs.cert_path = full
    a = gateway("gw-a")
    certs.cert_path = leaf_only
    b = gateway("gw-b")
    live = Client(b.mqtt, "tls-sub")
    live.subscribe("tls/#", 1)
    wait_for("a knows b", lambda: a.metric("sluice_peer_targets") == 1)
    publish(a.mqtt, "tls/x", [b"t1", b"t2"])
    assert payloads(live.wait_for(2)) == [b"t1", b"t2"]
    wait_for("forwards over TLS", lambda: b.metric('sluice_peer_forwards_total{outcome="received"}') >= 1)
    assert a.metric('sluice_peer_forwards_total{outcome="sent"}') >= 1
    live.stop()
    a.stop()

    # A caller that trusts another CA does not talk to b (its handshake fails).
    c = gateway("gw-c", ["--tls-peer-ca", str(other_ca)])
    live = Client(b.mqtt, "tls-sub-2")
    live.subscribe("tls/#", 1)
    wait_for("c knows b", lambda: c.metric("sluice_peer_targets") == 1)
    received = b.metric('sluice_peer_forwards_total{outcome="received"}')
    publish(c.mqtt, "tls/y", [b"t3"])
    assert payloads(live.wait_for(1)) == [b"t3"]
    wait_for("the failed forward counted",
             lambda: c.metric('sluice_peer_forwards_total{outcome="failed"}') >= 1)
    assert b.metric('sluice_peer_forwards_total{outcome="received"}') == received
    live.stop()

    # Mutual TLS: a receiver that requires client certificates gets the caller's own.
    # (b stays up: a stopped gateway's registration lasts until a sweep removes it.)
    certs.client_auth = "required"
    d = gateway("gw-d")
    certs.client_auth = "none"
    certs.cert_path = full
    e = gateway("gw-e")
    certs.cert_path = leaf_only
    live = Client(d.mqtt, "mtls-sub")
    live.subscribe("tls/#", 1)
    wait_for("e knows b and d", lambda: e.metric("sluice_peer_targets") == 2)
    publish(e.mqtt, "tls/z", [b"t4"])
    assert payloads(live.wait_for(1)) == [b"t4"]
    wait_for("a forward over mutual TLS", lambda: d.metric('sluice_peer_forwards_total{outcome="received"}') >= 1)
    live.stop()
    for g in (b, c, d, e):
        g.stop()


def test_a_drain_publishes_no_will_for_clients_that_come_back(tmp_dir, etcd, s3):
    """Scale-in is not the devices going offline: a draining gateway tells 5.0 clients it
    is shutting down (DISCONNECT 0x8B) and keeps their wills back; a client that connects
    again to another gateway within the drain's will delay has its will dropped (with a
    persistent session, resumed), and one that does not has it published once the delay
    has passed."""
    a, b = start_gateways(tmp_dir, etcd, s3, 2, "drain-wills", ["--mqtt-drain-will-delay", "2s"])
    watcher = Client(b.mqtt, "status-watcher")
    watcher.subscribe("status/#", 1)
    stays, _ = raw_connect(a.mqtt, "stays", True, 600, will=("status/stays", b"offline", 0))
    clean, _ = raw_connect(a.mqtt, "clean", True, 0, will=("status/clean", b"offline", 0))
    gone, _ = raw_connect(a.mqtt, "gone", True, 600, will=("status/gone", b"offline", 0))
    stays.sendall(b"\x82" + varint(2 + 1 + 2 + 5 + 1) + b"\x00\x01\x00" + utf8("cmd/#") + b"\x01")
    assert read_packet(stays)[0] == 9
    a.stop()
    for s in (stays, clean, gone):
        kind, _, body = read_packet(s)
        assert (kind, body[:1]) == (14, b"\x8b"), (kind, body)
        s.close()
    # Back on the other gateway at once: the persistent session resumes.
    stays, present = raw_connect(b.mqtt, "stays", False, 600)
    assert present
    clean, _ = raw_connect(b.mqtt, "clean", True, 0)
    # Only the client that stayed away gets its will published, once its delay is over.
    got = watcher.wait_for(1)
    assert [(m.topic, m.payload) for m in got] == [("status/gone", b"offline")]
    wait_for("both returned clients' wills dropped",
             lambda: b.metric('sluice_mqtt_wills_total{outcome="dropped"}') == 2)
    assert b.metric('sluice_mqtt_wills_total{outcome="published"}') == 1
    publish(b.mqtt, "status/marker", [b"marker"])
    assert [(m.topic, m.payload) for m in watcher.wait_for(2)] == [
        ("status/gone", b"offline"), ("status/marker", b"marker")]
    for s in (stays, clean):
        s.sendall(b"\xe0\x00")
        s.close()
    watcher.stop()
    b.stop()


def test_a_drain_names_another_server_when_one_is_configured(tmp_dir):
    from conftest import Sluice  # noqa: PLC0415
    s = Sluice(tmp_dir / "data", ["--mqtt-server-reference", "mqtt.example.com:1883"]).start()
    sock, _ = raw_connect(s.mqtt, "referred", True, 0)
    s.stop()
    kind, _, body = read_packet(sock)
    assert (kind, body[:1]) == (14, b"\x9c"), (kind, body)
    assert b"\x1c" + utf8("mqtt.example.com:1883") in body, body
    sock.close()
