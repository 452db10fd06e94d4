"""MQTT with real clients (mosquitto_pub/sub, paho-mqtt 3.1.1 and 5.0) on the MQTT
listener and on the Kafka port, stored in the log Kafka clients read."""

import socket
import subprocess
import threading

import paho.mqtt.client as mqtt
from confluent_kafka import Consumer, Producer, TopicPartition
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

from readers import high_watermarks


def hostport(addr):
    host, port = addr.rsplit(":", 1)
    return host, int(port)


def kafka_records(bootstrap, topic, partitions=1):
    """Every record of `topic`: (key, value, headers)."""
    ends = high_watermarks(bootstrap, topic, partitions)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "mqtt-check", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out = []
    while len(out) < sum(ends.values()):
        m = c.poll(10)
        assert m is not None, f"read {len(out)} of {sum(ends.values())}"
        if not m.error():
            out.append((m.key(), m.value(), dict(m.headers() or [])))
    c.close()
    return out


class Collector:
    """A paho client that records what it receives."""

    def __init__(self, addr, protocol, client_id):
        self.messages = []
        self.subscribed = threading.Event()
        self.got = threading.Condition()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        host, port = hostport(addr)
        self.c.connect(host, port, keepalive=30)
        self.c.loop_start()

    def _on_message(self, client, userdata, msg):
        with self.got:
            self.messages.append(msg)
            self.got.notify_all()

    def subscribe(self, topic, qos):
        self.subscribed.clear()
        self.c.subscribe(topic, qos)
        assert self.subscribed.wait(10)

    def wait_for(self, n, timeout=15):
        with self.got:
            assert self.got.wait_for(lambda: len(self.messages) >= n, timeout), self.messages
        return self.messages

    def stop(self):
        self.c.loop_stop()
        self.c.disconnect()


def test_mosquitto_publishes_reach_kafka_and_subscribers_on_both_ports(sluice):
    sub = subprocess.Popen(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(hostport(sluice.bootstrap)[1]), "-t", "sensors/#",
         "-q", "1", "-v", "-C", "3", "-i", "sub-on-kafka-port"],
        stdout=subprocess.PIPE, text=True)
    # The subscriber is known to be in place once its own probe message comes back.
    host, port = hostport(sluice.mqtt)
    probe = Collector(sluice.mqtt, mqtt.MQTTv311, "probe")
    probe.subscribe("sensors/#", 1)
    subprocess.run(["mosquitto_pub", "-h", host, "-p", str(port), "-t", "sensors/a", "-m", "hello",
                    "-q", "1"], check=True, timeout=30)
    subprocess.run(["mosquitto_pub", "-h", host, "-p", str(port), "-t", "sensors/b", "-m", "world",
                    "-q", "2", "-V", "mqttv5"], check=True, timeout=30)
    p = Producer({"bootstrap.servers": sluice.bootstrap})
    p.produce("mqtt", b"from kafka", b"sensors/k", headers=[("trace", b"t1")])
    p.flush(10)
    probe.wait_for(3)
    out, _ = sub.communicate(timeout=30)
    assert sorted(out.splitlines()) == ["sensors/a hello", "sensors/b world", "sensors/k from kafka"]
    probe.stop()
    records = kafka_records(sluice.bootstrap, "mqtt", 4)
    by_key = {k: (v, h) for k, v, h in records}
    assert by_key[b"sensors/a"][0] == b"hello" and by_key[b"sensors/a"][1]["mqtt.qos"] == b"1"
    assert by_key[b"sensors/b"][0] == b"world" and by_key[b"sensors/b"][1]["mqtt.qos"] == b"2"
    assert set(by_key[b"sensors/a"][1]) == {"mqtt.qos", "mqtt.client_id"}


def test_paho_5_properties_travel_as_headers_and_back(sluice):
    sub = Collector(sluice.mqtt, mqtt.MQTTv5, "sub5")
    sub.subscribe("dev/+/status", 1)
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pub5", protocol=mqtt.MQTTv5)
    host, port = hostport(sluice.bootstrap)
    pub.connect(host, port)  # MQTT on the Kafka port
    pub.loop_start()
    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = "application/json"
    props.ResponseTopic = "dev/1/reply"
    props.CorrelationData = b"\x01\x02"
    props.MessageExpiryInterval = 60
    props.PayloadFormatIndicator = 1
    props.UserProperty = [("site", "north"), ("site", "south")]
    info = pub.publish("dev/1/status", b'{"up": true}', qos=1, properties=props)
    info.wait_for_publish(10)
    assert info.is_published()
    [m] = sub.wait_for(1)
    assert (m.topic, m.payload, m.qos) == ("dev/1/status", b'{"up": true}', 1)
    got = m.properties
    assert got.ContentType == "application/json" and got.ResponseTopic == "dev/1/reply"
    assert got.CorrelationData == b"\x01\x02" and got.PayloadFormatIndicator == 1
    assert got.UserProperty == [("site", "north"), ("site", "south")]
    pub.loop_stop()
    pub.disconnect()
    sub.stop()
    [(key, value, headers)] = [r for r in kafka_records(sluice.bootstrap, "mqtt", 4)
                               if r[0] == b"dev/1/status"]
    assert headers["mqtt.content_type"] == b"application/json"
    assert headers["mqtt.correlation_data"] == b"\x01\x02"


def test_topic_map_rules_and_will_messages(tmp_dir):
    from conftest import Sluice
    s = Sluice(tmp_dir / "data", ["--mqtt-topic-map", "plant/+/temp=temps,plant/#=plant",
                                  "--default-partitions", "1"]).start()
    host, port = hostport(s.mqtt)
    for t in ["plant/a/temp", "plant/a/pressure", "elsewhere"]:
        subprocess.run(["mosquitto_pub", "-h", host, "-p", str(port), "-t", t, "-m", t, "-q", "1"],
                       check=True, timeout=30)
    assert [r[0] for r in kafka_records(s.bootstrap, "temps")] == [b"plant/a/temp"]
    assert [r[0] for r in kafka_records(s.bootstrap, "plant")] == [b"plant/a/pressure"]
    assert [r[0] for r in kafka_records(s.bootstrap, "mqtt")] == [b"elsewhere"]
    # A client that vanishes without DISCONNECT has its will published.
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="dies", protocol=mqtt.MQTTv311)
    c.will_set("plant/b/status", b"offline", qos=1)
    c.connect(host, port)
    c.loop(1)
    c.socket().close()
    from conftest import wait_for
    wait_for("will", lambda: [r for r in kafka_records(s.bootstrap, "plant") if r[1] == b"offline"])
    s.stop()


def test_protocol_violations_close_with_reason_and_others_go_on(sluice):
    host, port = hostport(sluice.mqtt)
    # A PUBLISH before CONNECT: closed without an answer.
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(b"\x30\x05\x00\x01a\x00\x00")
        assert s.recv(16) == b""
    # MQTT 5.0 CONNECT, then a PUBLISH with QoS 3: CONNACK, then DISCONNECT 0x81.
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(b"\x10\x0f\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x02id")
        connack = s.recv(2)
        assert connack[0] == 0x20
        rest = connack[1]
        body = b""
        while len(body) < rest:
            body += s.recv(rest - len(body))
        assert body[1] == 0x00  # success
        s.sendall(b"\x36\x03\x00\x01a")
        assert s.recv(4)[:3] == b"\xe0\x01\x81"
    # A protocol level nobody speaks: CONNACK 0x01 (3.1.1's unacceptable protocol version).
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(b"\x10\x0d\x00\x04MQTT\x09\x02\x00\x3c\x00\x01x")
        assert s.recv(4) == b"\x20\x02\x00\x01"
    # Others are still served.
    c = Collector(sluice.mqtt, mqtt.MQTTv311, "after")
    c.subscribe("x", 0)
    c.stop()


def test_5_0_aliases_identifiers_no_local_and_expiry(sluice):
    host, port = hostport(sluice.mqtt)
    me = Collector(sluice.mqtt, mqtt.MQTTv5, "self")
    other = Collector(sluice.mqtt, mqtt.MQTTv5, "other")
    # no-local: "self" does not get its own messages back; "other" does, with the
    # identifiers of both its matching subscriptions.
    opts = mqtt.SubscribeOptions(qos=1, noLocal=True)
    me.subscribed.clear()
    me.c.subscribe("room/#", options=opts)
    assert me.subscribed.wait(10)
    for filter_, ident in [("room/+", 7), ("room/#", 8)]:
        props = Properties(PacketTypes.SUBSCRIBE)
        props.SubscriptionIdentifier = ident
        other.subscribed.clear()
        other.c.subscribe(filter_, options=mqtt.SubscribeOptions(qos=1), properties=props)
        assert other.subscribed.wait(10)
    # A topic alias: set with the first publish, used alone with the second.
    first = Properties(PacketTypes.PUBLISH)
    first.TopicAlias = 3
    first.MessageExpiryInterval = 3600
    me.c.publish("room/1", b"one", qos=1, properties=first).wait_for_publish(10)
    second = Properties(PacketTypes.PUBLISH)
    second.TopicAlias = 3
    me.c.publish("", b"two", qos=1, properties=second).wait_for_publish(10)
    got = other.wait_for(2)
    assert [(m.topic, m.payload) for m in got] == [("room/1", b"one"), ("room/1", b"two")]
    assert sorted(got[0].properties.SubscriptionIdentifier) == [7, 8]
    assert 3590 <= got[0].properties.MessageExpiryInterval <= 3600
    # And "self" got nothing: once "other" has both, a marker from "other" reaches "self".
    other.c.publish("room/2", b"marker", qos=1).wait_for_publish(10)
    got = me.wait_for(1)
    assert [(m.topic, m.payload) for m in got] == [("room/2", b"marker")]
    me.stop()
    other.stop()


def test_subscriptions_made_and_dropped_between_messages_apply_to_the_next(sluice):
    a = Collector(sluice.mqtt, mqtt.MQTTv5, "gen-a")
    b = Collector(sluice.mqtt, mqtt.MQTTv5, "gen-b")
    pub = Collector(sluice.mqtt, mqtt.MQTTv5, "gen-pub")
    a.subscribe("gen/#", 1)
    pub.c.publish("gen/t", b"m1", qos=1).wait_for_publish(10)
    assert [m.payload for m in a.wait_for(1)] == [b"m1"]
    # Same topic, same publisher: who receives it is worked out again after each change.
    b.subscribe("gen/t", 1)
    pub.c.publish("gen/t", b"m2", qos=1).wait_for_publish(10)
    assert [m.payload for m in b.wait_for(1)] == [b"m2"]
    unsubscribed = threading.Event()
    a.c.on_unsubscribe = lambda *args: unsubscribed.set()
    a.c.unsubscribe("gen/#")
    assert unsubscribed.wait(10)
    pub.c.publish("gen/t", b"m3", qos=1).wait_for_publish(10)
    assert [m.payload for m in b.wait_for(2)] == [b"m2", b"m3"]
    # A marker on another topic, behind m3 in the same log topic: once "a" has it, m3
    # would have come first had it been delivered to "a".
    a.subscribe("gen2/marker", 1)
    pub.c.publish("gen2/marker", b"marker", qos=1).wait_for_publish(10)
    assert [m.payload for m in a.wait_for(3)] == [b"m1", b"m2", b"marker"]
    for c in (a, b, pub):
        c.stop()


def test_retained_messages_are_sent_to_new_subscribers_deleted_and_kept_over_restarts(tmp_dir):
    from conftest import Sluice
    s = Sluice(tmp_dir / "data").start()
    host, port = hostport(s.mqtt)

    def pub(topic, msg, *extra):
        subprocess.run(["mosquitto_pub", "-h", host, "-p", str(port), "-t", topic, "-m", msg,
                        "-q", "1", "-r", *extra], check=True, timeout=30)

    def retained_seen(filter_, protocol=mqtt.MQTTv311, n=None, options=None):
        c = Collector(s.mqtt, protocol, f"r-{filter_}-{protocol}")
        c.subscribed.clear()
        if options:
            c.c.subscribe(filter_, options=options)
        else:
            c.c.subscribe(filter_, 1)
        assert c.subscribed.wait(10)
        # A marker published after the subscription arrives after any retained message.
        c.c.publish("marker/" + filter_.replace("#", "x").replace("+", "y"), b"m", qos=1).wait_for_publish(10)
        c.subscribed.clear()
        c.c.subscribe("marker/#", 1)
        assert c.subscribed.wait(10)
        c.c.publish("marker/done", b"done", qos=1).wait_for_publish(10)
        with c.got:
            c.got.wait_for(lambda: any(m.topic == "marker/done" for m in c.messages), 10)
        c.stop()
        return sorted((m.topic, m.payload, m.retain) for m in c.messages
                      if not m.topic.startswith("marker/"))

    pub("home/a/temp", "21")
    pub("home/b/temp", "19", "-V", "mqttv5")
    pub("home/b/temp", "18")  # replaces
    assert retained_seen("home/+/temp") == [("home/a/temp", b"21", True), ("home/b/temp", b"18", True)]
    # An empty retained payload removes the retained message.
    pub("home/a/temp", "")
    assert retained_seen("home/#") == [("home/b/temp", b"18", True)]
    # Retain handling 2: none on subscribe.
    assert retained_seen("home/#", mqtt.MQTTv5, options=mqtt.SubscribeOptions(qos=1, retainHandling=2)) == []
    # They survive a restart.
    s.stop()
    s.start()
    assert retained_seen("home/#") == [("home/b/temp", b"18", True)]
    s.stop()


def test_qos_2_both_ways_exactly_once(sluice):
    for protocol in (mqtt.MQTTv311, mqtt.MQTTv5):
        sub = Collector(sluice.mqtt, protocol, f"q2-sub-{protocol}")
        sub.subscribe(f"q2/{protocol}/#", 2)
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"q2-pub-{protocol}", protocol=protocol)
        host, port = hostport(sluice.mqtt)
        pub.connect(host, port)
        pub.loop_start()
        for i in range(20):
            pub.publish(f"q2/{protocol}/t", b"%d" % i, qos=2).wait_for_publish(10)
        # Nothing more arrives: the marker comes after all of them, and each once.
        pub.publish(f"q2/{protocol}/end", b"end", qos=2).wait_for_publish(10)
        got = sub.wait_for(21)
        assert [(m.payload, m.qos) for m in got] == [(b"%d" % i, 2) for i in range(20)] + [(b"end", 2)]
        pub.loop_stop()
        pub.disconnect()
        sub.stop()


def read_packet(s):
    """(type, flags, body) of the next packet from a raw socket."""
    def exactly(n):
        out = b""
        while len(out) < n:
            chunk = s.recv(n - len(out))
            assert chunk, "connection closed"
            out += chunk
        return out
    first = exactly(1)[0]
    length, shift = 0, 0
    while True:
        b = exactly(1)[0]
        length |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    return first >> 4, first & 0x0F, exactly(length)


def raw_subscriber_5(s, client_id, props, filter_):
    """CONNECT 5.0 over the raw socket `s` with the CONNECT properties `props`, then
    SUBSCRIBE to `filter_` at QoS 1."""
    cid = client_id.encode()
    body = (b"\x00\x04MQTT\x05\x02\x00\x3c" + bytes([len(props)]) + props
            + len(cid).to_bytes(2, "big") + cid)
    s.sendall(bytes([0x10, len(body)]) + body)
    assert read_packet(s)[0] == 2  # CONNACK
    f = filter_.encode()
    sub = b"\x00\x01\x00" + len(f).to_bytes(2, "big") + f + b"\x01"
    s.sendall(bytes([0x82, len(sub)]) + sub)
    assert read_packet(s)[0] == 9  # SUBACK


def publish_all_5(host, port, client_id, messages):
    """Publishes (topic, payload) pairs at QoS 1, each acknowledged before the next."""
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    pub.connect(host, port)
    pub.loop_start()
    for topic, payload in messages:
        pub.publish(topic, payload, qos=1).wait_for_publish(10)
    pub.loop_stop()
    pub.disconnect()


def test_receive_maximum_holds_deliveries_until_acknowledged(sluice):
    host, port = hostport(sluice.mqtt)
    with socket.create_connection((host, port), timeout=10) as s:
        raw_subscriber_5(s, "rm", b"\x21\x00\x02", "fc/#")  # Receive Maximum 2
        publish_all_5(host, port, "fc-pub", [(f"fc/{i}", b"%d" % i) for i in range(5)])
        ids = []
        for _ in range(2):
            kind, flags, body = read_packet(s)
            assert kind == 3 and (flags >> 1) & 3 == 1
            topic_len = int.from_bytes(body[:2], "big")
            ids.append(body[2 + topic_len:4 + topic_len])
        # The window is full: nothing more comes until a PUBACK.
        s.settimeout(0.5)
        try:
            extra = s.recv(1)
        except socket.timeout:
            extra = b""
        assert extra == b"", "a third delivery exceeded Receive Maximum"
        s.settimeout(10)
        s.sendall(b"\x40\x02" + ids[0])
        kind, flags, body = read_packet(s)
        assert kind == 3 and body.endswith(b"2")


def test_deliveries_larger_than_the_clients_maximum_packet_size_are_dropped_for_it(sluice):
    host, port = hostport(sluice.mqtt)
    with socket.create_connection((host, port), timeout=10) as s:
        # Receive Maximum 1, Maximum Packet Size 64.
        raw_subscriber_5(s, "mp", b"\x21\x00\x01\x27" + (64).to_bytes(4, "big"), "mp/#")
        publish_all_5(host, port, "mp-pub", [("mp/big", b"x" * 200), ("mp/small", b"ok")])
        # The large one is dropped for this client and does not hold its one-message window.
        kind, flags, body = read_packet(s)
        assert kind == 3 and (flags >> 1) & 3 == 1
        assert body[2:2 + int.from_bytes(body[:2], "big")] == b"mp/small"
        assert body.endswith(b"ok")


def test_mqtt_over_websocket_on_the_http_listener(sluice):
    host, port = hostport(sluice.http)
    ws = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="ws", protocol=mqtt.MQTTv5,
                     transport="websockets")
    ws.ws_set_options(path="/mqtt")
    got = []
    done = threading.Event()
    subscribed = threading.Event()
    ws.on_subscribe = lambda *a: subscribed.set()

    def on_message(client, userdata, msg):
        got.append((msg.topic, msg.payload))
        done.set()
    ws.on_message = on_message
    ws.connect(host, port)
    ws.loop_start()
    ws.subscribe("ws/#", 1)
    assert subscribed.wait(10)
    # Published over TCP, received over WebSocket; and the other way round, into Kafka.
    mhost, mport = hostport(sluice.mqtt)
    subprocess.run(["mosquitto_pub", "-h", mhost, "-p", str(mport), "-t", "ws/in", "-m", "over tcp",
                    "-q", "1"], check=True, timeout=30)
    assert done.wait(15)
    assert got == [("ws/in", b"over tcp")]
    ws.publish("ws/out", b"over websocket", qos=1).wait_for_publish(10)
    ws.loop_stop()
    ws.disconnect()
    keys = [r[0] for r in kafka_records(sluice.bootstrap, "mqtt", 4)]
    assert b"ws/out" in keys
    # A plain GET is refused.
    import urllib.error
    import urllib.request
    try:
        urllib.request.urlopen(f"http://{sluice.http}/mqtt", timeout=5)
        raise AssertionError("a GET without an upgrade was accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 400


def test_users_passwords_and_topic_rules(tmp_dir):
    from conftest import BIN, Sluice
    hashed = subprocess.run([str(BIN), "mqtt-password", "--iterations", "1000"], input="s3cret\n",
                            capture_output=True, text=True, check=True).stdout.strip()
    auth = tmp_dir / "auth.toml"
    auth.write_text(f'''
allow_anonymous = false
[[users]]
name = "dev"
password = "{hashed}"
publish = ["sensors/dev/#"]
subscribe = ["commands/dev/#", "sensors/#"]
''')
    s = Sluice(tmp_dir / "data", ["--mqtt-auth", str(auth)]).start()
    host, port = hostport(s.mqtt)

    def connect(protocol, user, password):
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"a-{user}-{password}-{protocol}",
                        protocol=protocol)
        if user:
            c.username_pw_set(user, password)
        codes = []
        ready = threading.Event()
        c.on_connect = lambda client, userdata, flags, rc, props=None: (codes.append(rc), ready.set())
        c.connect(host, port)
        c.loop_start()
        assert ready.wait(10)
        return c, codes[0]

    for protocol in (mqtt.MQTTv311, mqtt.MQTTv5):
        c, rc = connect(protocol, "dev", "wrong")
        c.loop_stop()
        assert rc.value == 0x86 or rc == 4, rc  # bad user name or password
        c, rc = connect(protocol, None, None)
        c.loop_stop()
        assert rc.value == 0x87 or rc == 5, rc  # not authorized
    c, rc = connect(mqtt.MQTTv5, "dev", "s3cret")
    assert rc == 0
    granted = []
    done = threading.Event()
    c.on_subscribe = lambda client, userdata, mid, codes, props: (granted.extend(codes), done.set())
    c.subscribe([("commands/dev/x", 1), ("commands/#", 1)])
    assert done.wait(10)
    assert [g.value for g in granted] == [1, 0x87]
    ok = c.publish("sensors/dev/t", b"1", qos=1)
    ok.wait_for_publish(10)
    denied = c.publish("sensors/other/t", b"2", qos=1)
    denied.wait_for_publish(10)
    c.loop_stop()
    c.disconnect()
    keys = [r[0] for r in kafka_records(s.bootstrap, "mqtt", 1)]
    assert keys == [b"sensors/dev/t"]
    s.stop()


def test_mqtt_js_over_tcp_both_ports_and_websocket(sluice):
    import json
    from readers import NODE_DIR
    urls = [f"mqtt://{sluice.mqtt}", f"mqtt://{sluice.bootstrap}", f"ws://{sluice.http}/mqtt"]
    for sub_url, pub_url in [(urls[0], urls[1]), (urls[2], urls[0])]:
        out = subprocess.run(["node", str(NODE_DIR / "mqtt.js"), sub_url, pub_url],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        got = json.loads(out.stdout)
        assert [(m["topic"], m["payload"]) for m in got] == \
            [(f"js/{i % 3}", f"m{i}") for i in range(10)] + [("js/last", "q2")]
        assert [m["qos"] for m in got] == [1] * 10 + [2]


def test_qos_0_publishes_sent_right_before_disconnect_are_stored(sluice):
    host, port = hostport(sluice.mqtt)
    topic = b"burst/q0"
    packets = b"\x10\x0f\x00\x04MQTT\x04\x02\x00\x3c\x00\x03q0c"
    for i in range(200):
        payload = b"m%03d" % i
        body = len(topic).to_bytes(2, "big") + topic + payload
        packets += b"\x30" + bytes([len(body)]) + body
    packets += b"\xe0\x00"  # DISCONNECT
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(packets)
        assert read_packet(s)[0] == 2  # CONNACK
        # The server closes after DISCONNECT, once what came before it is stored.
        assert s.recv(1) == b""
    values = sorted(v for k, v, _ in kafka_records(sluice.bootstrap, "mqtt", 4) if k == topic)
    assert values == [b"m%03d" % i for i in range(200)]
