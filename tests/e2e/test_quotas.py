"""Client quotas with real clients: set, listed and removed with kafka-python's
AlterClientQuotas/DescribeClientQuotas messages, refused with Kafka's error codes when
invalid or not authorized, and enforced: a producer and a consumer over their byte rate are
throttled (librdkafka reports the broker's throttle time) and slowed to the quota, while a
client without a quota is not."""

import time

import pytest
from confluent_kafka import Consumer, Producer
from kafka import KafkaAdminClient
from kafka.protocol.admin import (AlterClientQuotasRequest, DescribeClientQuotasRequest)

from conftest import Sluice, wait_for

INVALID_REQUEST = 42
CLUSTER_AUTHORIZATION_FAILED = 31
RATE = 50_000


def kp_admin(bootstrap, **sasl):
    return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000, **sasl)


def alter(a, entity, ops, validate_only=False):
    """Sends AlterClientQuotas for one entity ({type: name or None}); ops {key: value or
    None to remove}. Returns (error_code, error_message)."""
    req = AlterClientQuotasRequest(
        entries=[AlterClientQuotasRequest.EntryData(
            entity=[AlterClientQuotasRequest.EntryData.EntityData(entity_type=t, entity_name=n)
                    for t, n in entity.items()],
            ops=[AlterClientQuotasRequest.EntryData.OpData(key=k, value=v or 0.0, remove=v is None)
                 for k, v in ops.items()])],
        validate_only=validate_only)
    resp = a._manager.run(a._manager.send, req)
    e = resp.entries[0]
    return e.error_code, e.error_message or None


def describe(a, components, strict=False):
    """DescribeClientQuotas; components [(type, match_type, match)]. Returns
    (error_code, {((type, name), ...): {key: value}})."""
    req = DescribeClientQuotasRequest(
        components=[DescribeClientQuotasRequest.ComponentData(entity_type=t, match_type=m, match=n)
                    for t, m, n in components],
        strict=strict)
    resp = a._manager.run(a._manager.send, req)
    out = {}
    for entry in resp.entries or []:
        key = tuple((e.entity_type, e.entity_name) for e in entry.entity)
        out[key] = {v.key: v.value for v in entry.values}
    return resp.error_code, out


@pytest.fixture
def server(tmp_dir):
    s = Sluice(tmp_dir / "data").start()
    yield s
    s.stop()


def test_quotas_are_set_described_and_removed(server):
    a = kp_admin(server.bootstrap)
    try:
        assert alter(a, {"user": "alice", "client-id": None}, {"producer_byte_rate": 1024.0}) == (0, None)
        assert alter(a, {"client-id": "app"}, {"consumer_byte_rate": 2048.0,
                                              "producer_byte_rate": 4096.0}) == (0, None)
        assert alter(a, {"user": None}, {"producer_byte_rate": 8192.0}) == (0, None)
        # Validation only stores nothing.
        assert alter(a, {"user": "bob"}, {"producer_byte_rate": 1.0}, validate_only=True) == (0, None)

        err, everything = describe(a, [])
        assert err == 0
        assert everything == {
            (("user", "alice"), ("client-id", None)): {"producer_byte_rate": 1024.0},
            (("client-id", "app"),): {"consumer_byte_rate": 2048.0, "producer_byte_rate": 4096.0},
            (("user", None),): {"producer_byte_rate": 8192.0},
        }
        # Match types: 0 exact name, 1 default, 2 any; strict leaves out entities with more
        # types than the filter.
        assert set(describe(a, [("user", 0, "alice")])[1]) == {(("user", "alice"), ("client-id", None))}
        assert set(describe(a, [("user", 0, "alice")], strict=True)[1]) == set()
        assert set(describe(a, [("user", 1, None)])[1]) == {(("user", None),)}
        assert set(describe(a, [("user", 2, None)], strict=True)[1]) == {(("user", None),)}
        assert set(describe(a, [("client-id", 2, None)])[1]) == {
            (("user", "alice"), ("client-id", None)), (("client-id", "app"),)}

        # Removing one key keeps the other; removing the last removes the entity.
        assert alter(a, {"client-id": "app"}, {"consumer_byte_rate": None}) == (0, None)
        assert describe(a, [("client-id", 0, "app")])[1] == {
            (("client-id", "app"),): {"producer_byte_rate": 4096.0}}
        assert alter(a, {"client-id": "app"}, {"producer_byte_rate": None}) == (0, None)
        assert describe(a, [("client-id", 0, "app")])[1] == {}

        # Bad input: Kafka's INVALID_REQUEST with a message.
        for entity, ops in [
            ({"user": "x"}, {"producer_byte_rate": -5.0}),
            ({"user": "x"}, {"producer_byte_rate": 1.5}),
            ({"user": "x"}, {"no_such_quota": 1.0}),
            ({"user": "x"}, {"request_percentage": 50.0}),
            ({"ip": "1.2.3.4"}, {"connection_creation_rate": 10.0}),
            ({"team": "x"}, {"producer_byte_rate": 10.0}),
        ]:
            code, message = alter(a, entity, ops)
            assert code == INVALID_REQUEST, (entity, ops, code)
            assert message, (entity, ops)
        assert describe(a, [("team", 2, None)])[0] == INVALID_REQUEST
        assert len(describe(a, [])[1]) == 2
    finally:
        a.close()


def throttled_producer(bootstrap, client_id, records, extra=None):
    """Produces `records` values of 1 KiB; returns (seconds, throttle times reported)."""
    throttles = []
    p = Producer({"bootstrap.servers": bootstrap, "client.id": client_id, "linger.ms": 5,
                  "batch.size": 16384, "compression.type": "none",
                  "throttle_cb": lambda ev: throttles.append(ev.throttle_time), **(extra or {})})
    delivered = []
    start = time.monotonic()
    for i in range(records):
        p.produce("quota-topic", b"x" * 1024, key=str(i).encode(), on_delivery=lambda e, m: delivered.append(e))
        p.poll(0)
    p.flush(60)
    took = time.monotonic() - start
    p.poll(0.5)
    assert len(delivered) == records and all(e is None for e in delivered)
    return took, throttles


def test_produce_and_fetch_are_throttled_to_their_quota(server):
    a = kp_admin(server.bootstrap)
    try:
        assert alter(a, {"client-id": "slow-writer"}, {"producer_byte_rate": float(RATE)}) == (0, None)
        assert alter(a, {"client-id": "slow-reader"}, {"consumer_byte_rate": float(RATE)}) == (0, None)
    finally:
        a.close()
    # An alteration is answered once it is in force on the gateway that made it.
    fast, fast_throttles = throttled_producer(server.bootstrap, "fast-writer", 200)
    assert not [t for t in fast_throttles if t > 0], fast_throttles

    # 200 KiB at 50 KB/s with one second of burst: at least about 3 s.
    took, throttles = throttled_producer(server.bootstrap, "slow-writer", 200)
    assert [t for t in throttles if t > 0], "the broker reported no throttle"
    assert took >= 2.5, took
    assert server.metric('sluice_quota_throttled_total{quota="producer_byte_rate"}') > 0

    def consume(client_id, n):
        throttles = []
        c = Consumer({"bootstrap.servers": server.bootstrap, "group.id": client_id,
                      "client.id": client_id, "auto.offset.reset": "earliest",
                      "fetch.max.bytes": 65536, "message.max.bytes": 65536,
                      "max.partition.fetch.bytes": 65536,
                      "throttle_cb": lambda ev: throttles.append(ev.throttle_time)})
        c.subscribe(["quota-topic"])
        got = 0
        start = time.monotonic()
        try:
            deadline = start + 60
            while got < n and time.monotonic() < deadline:
                m = c.poll(0.5)
                if m is not None and m.error() is None:
                    got += 1
            took = time.monotonic() - start
            c.poll(0.5)
        finally:
            c.close()
        assert got == n, got
        return took, throttles

    _, free = consume("free-reader", 400)
    assert not [t for t in free if t > 0], free
    took, throttles = consume("slow-reader", 400)
    # 400 KiB at 50 KB/s: at least about 7 s, whatever the fetch sizes.
    assert [t for t in throttles if t > 0], "the broker reported no throttle"
    assert took >= 5, took
    assert server.metric('sluice_quota_throttled_total{quota="consumer_byte_rate"}') > 0


ADMIN_PW = "admin-secret"


def test_user_quotas_and_their_authorization(tmp_dir):
    s = Sluice(tmp_dir / "data", ["--admin-user", "admin", "--authorizer", "acl"],
               env={"SLUICE_ADMIN_PASSWORD": ADMIN_PW}, kafka_protocol="SASL_PLAINTEXT").start()
    try:
        def sasl(user, pw):
            return dict(security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256",
                        sasl_plain_username=user, sasl_plain_password=pw)
        admin = kp_admin(s.bootstrap, **sasl("admin", ADMIN_PW))
        from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, AdminClient,
                                           ResourcePatternType, ResourceType, ScramCredentialInfo,
                                           ScramMechanism, UserScramCredentialUpsertion)
        ck = AdminClient({"bootstrap.servers": s.bootstrap, "security.protocol": "SASL_PLAINTEXT",
                          "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "admin",
                          "sasl.password": ADMIN_PW})
        for f in ck.alter_user_scram_credentials([UserScramCredentialUpsertion(
                "alice", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), b"alice-pw")]).values():
            f.result(30)
        for f in ck.create_acls([AclBinding(ResourceType.TOPIC, "quota-topic", ResourcePatternType.LITERAL,
                                            "User:alice", "*", op, AclPermissionType.ALLOW)
                                 for op in (AclOperation.WRITE, AclOperation.CREATE,
                                            AclOperation.DESCRIBE)]).values():
            f.result(30)
        alice = kp_admin(s.bootstrap, **sasl("alice", "alice-pw"))
        try:
            # Altering needs AlterConfigs on the cluster, describing DescribeConfigs.
            assert alter(alice, {"user": "alice"}, {"producer_byte_rate": 1e9})[0] == CLUSTER_AUTHORIZATION_FAILED
            assert describe(alice, [])[0] == CLUSTER_AUTHORIZATION_FAILED
            assert alter(admin, {"user": "alice"}, {"producer_byte_rate": float(RATE)}) == (0, None)
            assert describe(admin, [("user", 0, "alice")])[1] == {
                (("user", "alice"),): {"producer_byte_rate": float(RATE)}}
        finally:
            alice.close()
            admin.close()
        conf = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-256",
                "sasl.username": "alice", "sasl.password": "alice-pw"}
        # The user's quota applies whatever client id it uses.
        took, throttles = throttled_producer(s.bootstrap, "any-id", 200, conf)
        assert [t for t in throttles if t > 0], "the broker reported no throttle"
        assert took >= 2.5, took
        wait_for("throttle counted",
                 lambda: s.metric('sluice_quota_throttled_total{quota="producer_byte_rate"}') > 0)
    finally:
        s.stop()
