"""Kafka ACLs (`--authorizer acl`) with real clients: bindings made, listed and removed with
confluent-kafka's admin client, and every denial answered with Kafka's code (produce,
fetch, group join, offset commit, metadata filtering, topic creation, ACL calls); Deny
over Allow; PREFIXED patterns; bindings and users made through one gateway enforced on a
second one over etcd; SECURITY_DISABLED without an authorizer."""

import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType,
                                   AdminClient, NewTopic, ResourcePatternType, ResourceType,
                                   ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion)

from conftest import Sluice, gateways, wait_for

ADMIN_PW = "admin-secret"


def conf(bootstrap, user, password):
    return {"bootstrap.servers": bootstrap, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": user, "sasl.password": password}


def admin(bootstrap, user="admin", password=ADMIN_PW):
    return AdminClient(conf(bootstrap, user, password))


def add_users(a, *names):
    for f in a.alter_user_scram_credentials([
        UserScramCredentialUpsertion(n, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), f"{n}-pw".encode())
        for n in names
    ]).values():
        f.result(30)


def allow(resource, name, principal, op, pattern=ResourcePatternType.LITERAL, permission=AclPermissionType.ALLOW):
    return AclBinding(resource, name, pattern, principal, "*", op, permission)


def create(a, *bindings):
    for f in a.create_acls(list(bindings)).values():
        f.result(30)


def produce_error(bootstrap, user, topic):
    """The delivery error of one record (None: delivered)."""
    errors = []
    p = Producer({**conf(bootstrap, user, f"{user}-pw"), "message.timeout.ms": 10000,
                  "allow.auto.create.topics": False})
    p.produce(topic, b"v", partition=0, on_delivery=lambda err, msg: errors.append(err))
    p.flush(20)
    assert errors, "no delivery report"
    return errors[0]


def consume_error(bootstrap, user, topic, group):
    """The first error a consumer meets, or the first value it reads."""
    c = Consumer({**conf(bootstrap, user, f"{user}-pw"), "group.id": group,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    try:
        for _ in range(30):
            m = c.poll(1)
            if m is None:
                continue
            if m.error():
                return m.error().code()
            return m.value()
        return None
    finally:
        c.close()


@pytest.fixture
def server(tmp_dir):
    s = Sluice(tmp_dir / "data", ["--admin-user", "admin", "--authorizer", "acl"],
               env={"SLUICE_ADMIN_PASSWORD": ADMIN_PW}, kafka_protocol="SASL_PLAINTEXT").start()
    yield s
    s.stop()


def test_every_denial_has_kafka_s_code(server):
    b = server.bootstrap
    a = admin(b)
    add_users(a, "alice", "bob")
    for t in ["orders", "secret"]:
        a.create_topics([NewTopic(t, 1)])[t].result(30)
    # No binding yet: alice may do nothing.
    assert produce_error(b, "alice", "orders").code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    alice = admin(b, "alice", "alice-pw")
    assert list(alice.list_topics(timeout=30).topics) == []
    with pytest.raises(KafkaException) as e:
        alice.create_topics([NewTopic("mine", 1)])["mine"].result(30)
    assert e.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    with pytest.raises(KafkaException) as e:
        for f in alice.create_acls(
                [allow(ResourceType.TOPIC, "orders", "User:alice", AclOperation.ALL)]).values():
            f.result(30)
    assert e.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED

    create(a,
           allow(ResourceType.TOPIC, "orders", "User:alice", AclOperation.WRITE),
           allow(ResourceType.TOPIC, "ord", "User:alice", AclOperation.READ, ResourcePatternType.PREFIXED),
           allow(ResourceType.GROUP, "g1", "User:alice", AclOperation.READ),
           allow(ResourceType.TOPIC, "orders", "User:bob", AclOperation.DESCRIBE))
    listed = a.describe_acls(AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                              AclOperation.ANY, AclPermissionType.ANY)).result(30)
    assert len(listed) == 4
    # Bindings apply at once on this gateway (it follows them from metadata).
    wait_for("the bindings", lambda: produce_error(b, "alice", "orders") is None)
    assert produce_error(b, "alice", "secret").code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert consume_error(b, "alice", "orders", "g1") == b"v"
    assert consume_error(b, "alice", "orders", "g2") == KafkaError.GROUP_AUTHORIZATION_FAILED
    assert consume_error(b, "alice", "secret", "g1") == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # Metadata lists only what each may describe (Read implies Describe).
    assert sorted(admin(b, "alice", "alice-pw").list_topics(timeout=30).topics) == ["orders"]
    assert sorted(admin(b, "bob", "bob-pw").list_topics(timeout=30).topics) == ["orders"]
    assert sorted(a.list_topics(timeout=30).topics) == ["orders", "secret"]
    # Authorized operations are the caller's own: Read on g1 implies Describe, not Delete;
    # the super user may do everything on the cluster; bob may not describe it.
    g1 = alice.describe_consumer_groups(["g1"], include_authorized_operations=True)["g1"].result(30)
    assert sorted(op.name for op in g1.authorized_operations) == ["DESCRIBE", "READ"]
    ops = a.describe_cluster(include_authorized_operations=True).result(30).authorized_operations
    assert {"ALTER", "CREATE", "DESCRIBE", "IDEMPOTENT_WRITE"} <= {op.name for op in ops}
    bob = admin(b, "bob", "bob-pw")
    assert not bob.describe_cluster(include_authorized_operations=True).result(30).authorized_operations
    # An offset commit for a topic alice may not read, in a group she may use.
    c = Consumer({**conf(b, "alice", "alice-pw"), "group.id": "g1", "enable.auto.commit": False})
    with pytest.raises(KafkaException) as e:
        c.commit(offsets=[TopicPartition("secret", 0, 1)], asynchronous=False)
    assert e.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    c.close()
    # Deny wins over the prefixed Allow.
    create(a, allow(ResourceType.TOPIC, "orders", "User:alice", AclOperation.READ,
                    permission=AclPermissionType.DENY))
    wait_for("the deny", lambda: consume_error(b, "alice", "orders", "g1") == KafkaError.TOPIC_AUTHORIZATION_FAILED)
    # Removing alice's bindings closes orders to her again.
    deleted = a.delete_acls([AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, "User:alice", None,
                                              AclOperation.ANY, AclPermissionType.ANY)])
    assert len(list(deleted.values())[0].result(30)) == 4
    wait_for("the removal", lambda: produce_error(b, "alice", "orders").code() == KafkaError.TOPIC_AUTHORIZATION_FAILED)
    assert len(a.describe_acls(AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                                AclOperation.ANY, AclPermissionType.ANY)).result(30)) == 1


def test_acls_without_an_authorizer_are_security_disabled(sluice):
    a = AdminClient({"bootstrap.servers": sluice.bootstrap})
    with pytest.raises(KafkaException) as e:
        for f in a.create_acls([allow(ResourceType.TOPIC, "t", "User:x", AclOperation.READ)]).values():
            f.result(30)
    assert e.value.args[0].code() == KafkaError.SECURITY_DISABLED


def test_users_and_bindings_made_on_one_gateway_apply_on_another(tmp_dir, etcd, s3):
    gws = gateways(tmp_dir, etcd, s3, 2, "acl", ["--admin-user", "admin", "--authorizer", "acl"],
                   env_extra={"SLUICE_ADMIN_PASSWORD": ADMIN_PW}, kafka_protocol="SASL_PLAINTEXT")
    try:
        a0 = admin(gws[0].bootstrap)
        add_users(a0, "carol")
        a0.create_topics([NewTopic("shared", 1)])["shared"].result(30)
        create(a0, allow(ResourceType.TOPIC, "shared", "User:carol", AclOperation.WRITE))
        started = time.monotonic()
        # The user and the binding reach the second gateway within a second or so.
        wait_for("carol on the second gateway",
                 lambda: produce_error(gws[1].bootstrap, "carol", "shared") is None, timeout=15)
        print(f"applied on the second gateway after {time.monotonic() - started:.2f} s")
        assert produce_error(gws[1].bootstrap, "carol", "other").code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    finally:
        for g in gws:
            g.stop()


def test_mqtt_publishes_and_subscriptions_follow_the_acls_of_their_log_topic(tmp_dir):
    import threading
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from test_mqtt import hostport

    s = Sluice(tmp_dir / "data", ["--admin-user", "admin", "--authorizer", "acl", "--mqtt-user-store",
                                  "--mqtt-topic-map", "sensors/#=sensors"],
               env={"SLUICE_ADMIN_PASSWORD": ADMIN_PW}, kafka_protocol="SASL_PLAINTEXT").start()
    try:
        a = admin(s.bootstrap)
        add_users(a, "dev")
        for t in ["sensors", "mqtt"]:
            a.create_topics([NewTopic(t, 1)])[t].result(30)

        def client(protocol):
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{protocol}", protocol=protocol)
            c.username_pw_set("dev", "dev-pw")
            ready = threading.Event()
            c.on_connect = lambda *args: ready.set()
            host, port = hostport(s.mqtt)
            c.connect(host, port)
            c.loop_start()
            assert ready.wait(10)
            return c

        def suback(c, topic_filter):
            got = []
            done = threading.Event()
            c.on_subscribe = lambda cl, ud, mid, codes, props: (got.extend(codes), done.set())
            c.subscribe(topic_filter, 1)
            assert done.wait(10)
            return got[0].value

        def puback(c, topic):
            got = []
            done = threading.Event()
            c.on_publish = lambda cl, ud, mid, rc, props: (got.append(rc), done.set())
            c.publish(topic, b"reading", qos=1)
            assert done.wait(10)
            return got[0].value

        c = client(mqtt.MQTTv5)
        assert puback(c, "sensors/1") == 0x87
        assert suback(c, "sensors/#") == 0x87
        create(a, allow(ResourceType.TOPIC, "sensors", "User:dev", AclOperation.WRITE),
               allow(ResourceType.TOPIC, "sensors", "User:dev", AclOperation.READ))
        wait_for("the bindings", lambda: puback(c, "sensors/1") == 0)
        assert suback(c, "sensors/#") == 1
        # Other MQTT topics go to the default log topic, which dev may not use; a
        # subscription to everything reads it too.
        assert puback(c, "other/1") == 0x87
        assert suback(c, "#") == 0x87
        c.loop_stop()
        c.disconnect()
        # 3.1.1: the refused subscription gets 0x80; a refused QoS 0 publish is dropped.
        old = client(mqtt.MQTTv311)
        assert suback(old, "other/#") == 0x80
        info = old.publish("other/2", b"dropped", qos=0)
        info.wait_for_publish(10)
        old.loop_stop()
        old.disconnect()
        wait_for("the drop", lambda: s.metric('sluice_mqtt_denied_total{action="publish"}') >= 3)
        c = Consumer({**conf(s.bootstrap, "admin", ADMIN_PW), "group.id": "check", "enable.auto.commit": False})
        c.assign([TopicPartition("sensors", 0, 0)])
        keys = []
        while True:
            m = c.poll(5)
            if m is None:
                break
            if not m.error():
                keys.append(m.key())
        c.close()
        assert keys == [b"sensors/1"]
    finally:
        s.stop()
