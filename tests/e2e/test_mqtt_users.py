"""MQTT clients against the user store (`--mqtt-user-store`): passwords checked against SCRAM
credentials made with a Kafka admin client, users of the --mqtt-auth file kept, devices known
by their client certificate on mqtts://, anonymous clients refused, and MQTT on a SASL
Kafka listener always authenticated; with mosquitto clients and paho (3.1.1 and 5.0)."""

import subprocess
import threading

import paho.mqtt.client as mqtt
from confluent_kafka.admin import AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion
from paho.mqtt.enums import CallbackAPIVersion

from conftest import BIN, Sluice
from test_mqtt import hostport, kafka_records
from tls import CertSet

BAD_CREDENTIALS = (0x86, 4)
NOT_AUTHORIZED = (0x87, 5)


def add_user(bootstrap, admin_conf, name, password, mechanism=ScramMechanism.SCRAM_SHA_256):
    admin = AdminClient({"bootstrap.servers": bootstrap, **admin_conf})
    for f in admin.alter_user_scram_credentials([
        UserScramCredentialUpsertion(name, ScramCredentialInfo(mechanism, 4096), password.encode()),
    ]).values():
        f.result(30)


def connect(addr, protocol, user=None, password=None, client_id=None, certs=None, client=None):
    """A paho connection; returns (client, CONNACK code as an int)."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"c-{user}-{password}-{protocol}",
                    protocol=protocol)
    if user:
        c.username_pw_set(user, password)
    if certs:
        kw = {"certfile": str(client[0]), "keyfile": str(client[1])} if client else {}
        c.tls_set(ca_certs=str(certs.ca_path), **kw)
    codes = []
    ready = threading.Event()
    c.on_connect = lambda cl, userdata, flags, rc, props=None: (codes.append(rc), ready.set())
    host, port = hostport(addr)
    c.connect(host, port)
    c.loop_start()
    assert ready.wait(10)
    rc = codes[0]
    return c, (rc.value if hasattr(rc, "value") else int(rc))


def refused_with(addr, expected, **kw):
    """Refused in 5.0 and 3.1.1 with `expected` (the 5.0 reason code and the 3.1.1 return
    code: paho reports the latter as the former)."""
    for protocol in (mqtt.MQTTv5, mqtt.MQTTv311):
        c, rc = connect(addr, protocol, **kw)
        c.loop_stop()
        assert rc in expected, (kw, protocol, rc)


def publish_ok(c, topic, payload):
    info = c.publish(topic, payload, qos=1)
    info.wait_for_publish(10)
    assert info.is_published()
    c.loop_stop()
    c.disconnect()


def test_passwords_from_the_store_and_users_of_the_file(tmp_dir):
    hashed = subprocess.run([str(BIN), "mqtt-password", "--iterations", "1000"], input="file-pw\n",
                            capture_output=True, text=True, check=True).stdout.strip()
    auth = tmp_dir / "auth.toml"
    auth.write_text(f'''
allow_anonymous = false
[[users]]
name = "legacy"
password = "{hashed}"
publish = ["legacy/#"]
''')
    s = Sluice(tmp_dir / "data", ["--mqtt-user-store", "--mqtt-auth", str(auth)]).start()
    try:
        add_user(s.bootstrap, {}, "sensor", "store-pw")
        add_user(s.bootstrap, {}, "strong", "store-pw-512", ScramMechanism.SCRAM_SHA_512)
        for user, password in [("sensor", "store-pw"), ("strong", "store-pw-512")]:
            c, rc = connect(s.mqtt, mqtt.MQTTv5, user, password)
            assert rc == 0
            publish_ok(c, f"store/{user}", user.encode())
        # mosquitto_pub with a user from the store.
        host, port = hostport(s.mqtt)
        subprocess.run(["mosquitto_pub", "-h", host, "-p", str(port), "-u", "sensor", "-P", "store-pw",
                        "-t", "store/mosquitto", "-m", "m", "-q", "1"], check=True, timeout=30)
        bad = subprocess.run(["mosquitto_pub", "-h", host, "-p", str(port), "-u", "sensor", "-P", "nope",
                              "-t", "store/x", "-m", "x", "-q", "1"], capture_output=True, text=True, timeout=30)
        assert bad.returncode != 0
        # The file's user keeps its password and its rules.
        c, rc = connect(s.mqtt, mqtt.MQTTv5, "legacy", "file-pw")
        assert rc == 0
        publish_ok(c, "legacy/a", b"legacy")
        refused_with(s.mqtt, BAD_CREDENTIALS, user="legacy", password="store-pw")
        refused_with(s.mqtt, BAD_CREDENTIALS, user="sensor", password="wrong")
        refused_with(s.mqtt, BAD_CREDENTIALS, user="nobody", password="x")
        refused_with(s.mqtt, NOT_AUTHORIZED)
        assert s.metric('sluice_auth_failures_total{listener="mqtt",mechanism="password"}') == 7
        assert s.metric('sluice_auth_failures_total{listener="mqtt",mechanism="anonymous"}') == 2
        keys = sorted(r[0] for r in kafka_records(s.bootstrap, "mqtt", 1))
        assert keys == [b"legacy/a", b"store/mosquitto", b"store/sensor", b"store/strong"]
    finally:
        s.stop()


def test_devices_known_by_their_certificate(tmp_dir):
    certs = CertSet(tmp_dir / "certs", client_auth="optional", principal="cn")
    device = certs.client_cert("device", {"O": "Acme", "CN": "device-7"})
    s = Sluice(tmp_dir / "data", ["--mqtt-user-store"], mqtt_listeners=["mqtts"], tls=certs).start()
    try:
        c, rc = connect(s.mqtt, mqtt.MQTTv5, certs=certs, client=device, client_id="device-7")
        assert rc == 0
        publish_ok(c, "devices/7", b"by certificate")
        host, port = hostport(s.mqtt)
        subprocess.run(["mosquitto_pub", "-h", host, "-p", str(port), "--cafile", str(certs.ca_path),
                        "--cert", str(device[0]), "--key", str(device[1]), "-t", "devices/7", "-m", "mosquitto",
                        "-q", "1"], check=True, timeout=30)
        # TLS without a certificate (optional) and without a user name: refused.
        refused_with(s.mqtt, NOT_AUTHORIZED, certs=certs)
        values = [r[1] for r in kafka_records(s.bootstrap, "mqtt", 1)]
        assert values == [b"by certificate", b"mosquitto"]
    finally:
        s.stop()


def test_mqtt_on_a_sasl_kafka_listener_authenticates(tmp_dir):
    s = Sluice(tmp_dir / "data", ["--admin-user", "admin"], env={"SLUICE_ADMIN_PASSWORD": "admin-pw"},
               kafka_protocol="SASL_PLAINTEXT").start()
    try:
        admin_conf = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-256",
                      "sasl.username": "admin", "sasl.password": "admin-pw"}
        add_user(s.bootstrap, admin_conf, "sensor", "pw")
        # On the Kafka listener: anonymous MQTT is refused, the store's users get in.
        refused_with(s.bootstrap, NOT_AUTHORIZED)
        refused_with(s.bootstrap, BAD_CREDENTIALS, user="sensor", password="wrong")
        c, rc = connect(s.bootstrap, mqtt.MQTTv311, "sensor", "pw")
        assert rc == 0
        publish_ok(c, "via/kafka-port", b"authenticated")
        # The MQTT listener, without --mqtt-user-store, is open as before.
        c, rc = connect(s.mqtt, mqtt.MQTTv5)
        assert rc == 0
        publish_ok(c, "via/mqtt-port", b"open")
    finally:
        s.stop()
