"""Compatibility gaps real clients and their test suites hit: list-valued configs, topic
configs that mean nothing here, broker-side recompression, manual replica assignments,
the legacy AlterConfigs, broker configs, DescribeTopicPartitions, ListGroups v5, Kafka 4.0
API versions, authorized operations, and static members expiring on time."""

import time

import pytest
from confluent_kafka import (Consumer, ConsumerGroupState, ConsumerGroupType, KafkaException, Producer,
                             TopicCollection)
from confluent_kafka.admin import (AclOperation, AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   NewPartitions, NewTopic)
from kafka.admin import ConfigResource as KpConfigResource
from kafka.admin import ConfigResourceType as KpConfigResourceType
from kafka.admin import KafkaAdminClient

from conftest import FAST_GROUPS, Sluice
from readers import with_kafka_python, with_kafkajs, with_librdkafka
from records import PARTITIONS, check
from test_confluent_kafka import produce

TOPIC = ConfigResource.Type.TOPIC


def described(admin, topic):
    res = ConfigResource(TOPIC, topic)
    return {k: v.value for k, v in admin.describe_configs([res])[res].result(30).items()}


def incremental(admin, topic, *entries):
    res = ConfigResource(TOPIC, topic, incremental_configs=[
        ConfigEntry(name, value, incremental_operation=op) for name, value, op in entries])
    admin.incremental_alter_configs([res])[res].result(30)


def error_of(future):
    with pytest.raises(KafkaException) as e:
        future.result(30)
    return e.value.args[0]


def test_cleanup_policy_is_a_list(sluice):
    admin = AdminClient({"bootstrap.servers": sluice.bootstrap})
    admin.create_topics([NewTopic("policies", 1)])["policies"].result(30)
    assert described(admin, "policies")["cleanup.policy"] == "delete"
    incremental(admin, "policies", ("cleanup.policy", "delete", AlterConfigOpType.APPEND))
    assert described(admin, "policies")["cleanup.policy"] == "delete"
    # An empty list keeps data forever, as in Kafka.
    incremental(admin, "policies", ("cleanup.policy", "delete", AlterConfigOpType.SUBTRACT))
    assert described(admin, "policies")["cleanup.policy"] == ""
    incremental(admin, "policies", ("cleanup.policy", "delete", AlterConfigOpType.APPEND))
    assert described(admin, "policies")["cleanup.policy"] == "delete"
    # Log compaction is not supported yet: refused, not stored.
    res = ConfigResource(TOPIC, "policies", incremental_configs=[
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND)])
    assert error_of(admin.incremental_alter_configs([res])[res]).name() == "INVALID_CONFIG"
    # APPEND and SUBTRACT apply to lists only.
    res = ConfigResource(TOPIC, "policies", incremental_configs=[
        ConfigEntry("retention.ms", "5", incremental_operation=AlterConfigOpType.APPEND)])
    assert error_of(admin.incremental_alter_configs([res])[res]).name() == "INVALID_CONFIG"
    assert described(admin, "policies")["cleanup.policy"] == "delete"


NO_EFFECT = {
    "flush.ms": "1000",
    "flush.messages": "10",
    "segment.index.bytes": "4096",
    "index.interval.bytes": "8192",
    "min.insync.replicas": "2",
    "unclean.leader.election.enable": "true",
    "preallocate": "true",
    "segment.jitter.ms": "10",
    "file.delete.delay.ms": "1000",
    "leader.replication.throttled.replicas": "*",
    "message.downconversion.enable": "false",
}


def test_configs_without_effect_are_accepted_stored_and_described(sluice):
    # kafka-python's admin, as infrastructure tools drive it.
    admin = KafkaAdminClient(bootstrap_servers=sluice.bootstrap)
    admin.create_topics({"noop": {"num_partitions": 2, "replication_factor": 1, "configs": NO_EFFECT}})
    conf = AdminClient({"bootstrap.servers": sluice.bootstrap})
    got = described(conf, "noop")
    for k, v in NO_EFFECT.items():
        assert got[k] == v, k
    # Unset ones are described with Kafka's defaults.
    assert got["min.cleanable.dirty.ratio"] == "0.5"
    res = ConfigResource(TOPIC, "noop")
    entries = conf.describe_configs([res])[res].result(30)
    assert entries["flush.ms"].source == 1  # DYNAMIC_TOPIC_CONFIG: stored with the topic
    # Bad values are still refused.
    fut = conf.create_topics([NewTopic("noop-bad", 1, config={"min.insync.replicas": "0"})])["noop-bad"]
    assert error_of(fut).name() == "INVALID_CONFIG"
    admin.close()


@pytest.mark.parametrize("codec,producer_codec", [("zstd", "none"), ("gzip", "lz4"),
                                                  ("uncompressed", "snappy"), ("lz4", "zstd"),
                                                  ("snappy", "gzip")])
def test_compression_type_recompresses_on_append(sluice, codec, producer_codec):
    topic = f"stored-{codec}"
    admin = AdminClient({"bootstrap.servers": sluice.bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, config={"compression.type": codec})])[topic].result(30)
    before = sluice.metric("sluice_recompressed_batches_total")
    n = 2000
    produce(sluice.bootstrap, topic, producer_codec, n)
    assert sluice.metric("sluice_recompressed_batches_total") > before
    # Every client reads the recompressed batches back byte for byte.
    check(topic, n, with_librdkafka(sluice.bootstrap, topic, PARTITIONS))
    check(topic, n, with_kafka_python(sluice.bootstrap, topic, PARTITIONS))
    check(topic, n, with_kafkajs(sluice.bootstrap, topic, PARTITIONS))


def test_compressible_data_is_stored_compressed(sluice):
    admin = AdminClient({"bootstrap.servers": sluice.bootstrap})
    admin.create_topics([NewTopic("squeezed", 1, config={"compression.type": "zstd"})])["squeezed"].result(30)
    flushed = sluice.metric("sluice_flush_bytes_sum")
    p = Producer({"bootstrap.servers": sluice.bootstrap, "compression.type": "none", "linger.ms": 20})
    for i in range(2000):
        p.produce("squeezed", (b"%08d" % i) + b"a" * 1000, partition=0)
    assert p.flush(30) == 0
    written = sluice.metric("sluice_flush_bytes_sum") - flushed
    assert 0 < written < 2000 * 1000 / 10, f"{written} bytes written for 2 MB of repetitive values"
    c = Consumer({"bootstrap.servers": sluice.bootstrap, "group.id": "sq", "auto.offset.reset": "earliest"})
    c.subscribe(["squeezed"])
    got = []
    while len(got) < 2000:
        m = c.poll(10)
        assert m is not None
        if not m.error():
            got.append(int(m.value()[:8]))
    c.close()
    assert got == list(range(2000))


def test_mqtt_publishes_follow_the_topic_codec(sluice):
    from test_mqtt import hostport, publish_all_5  # noqa: PLC0415
    admin = AdminClient({"bootstrap.servers": sluice.bootstrap})
    # MQTT messages land in the log topic "mqtt" by default.
    admin.create_topics([NewTopic("mqtt", 1, config={"compression.type": "zstd"})])["mqtt"].result(30)
    before = sluice.metric("sluice_recompressed_batches_total")
    host, port = hostport(sluice.mqtt)
    publish_all_5(host, port, "codec-pub", [(f"codec/{i}", b"reading %d " % i * 20) for i in range(20)])
    assert sluice.metric("sluice_recompressed_batches_total") >= before + 1
    c = Consumer({"bootstrap.servers": sluice.bootstrap, "group.id": "codec", "auto.offset.reset": "earliest"})
    c.subscribe(["mqtt"])
    got = []
    while len(got) < 20:
        m = c.poll(10)
        assert m is not None, f"stalled after {len(got)}"
        if not m.error():
            got.append((m.key(), m.value()))
    c.close()
    assert got == [(f"codec/{i}".encode(), b"reading %d " % i * 20) for i in range(20)]


def test_manual_replica_assignments(sluice):
    # kafka-python sends CreateTopics and CreatePartitions with replica assignments.
    admin = KafkaAdminClient(bootstrap_servers=sluice.bootstrap)
    me = sluice.node_id

    def create(name, assignments):
        r = admin.create_topics({name: {"assignments": assignments}}, raise_errors=False)
        (topic,) = r["topics"]
        return topic

    created = create("manual", {0: [me], 1: [me], 2: [me]})
    assert created["error_code"] == 0, created
    assert (created["num_partitions"], created["replication_factor"]) == (3, 1)
    conf = AdminClient({"bootstrap.servers": sluice.bootstrap})
    assert len(conf.list_topics("manual", timeout=10).topics["manual"].partitions) == 3
    admin.create_partitions({"manual": {"count": 5, "assignments": [[me], [me]]}})
    assert len(conf.list_topics("manual", timeout=10).topics["manual"].partitions) == 5
    # Kafka's checks: an unknown broker, a broker twice, gaps in partition indexes.
    for bad in [{0: [me + 1]}, {0: [me, me]}, {0: [me], 2: [me]}]:
        assert create("manual-bad", bad)["error_code"] == 39, bad  # INVALID_REPLICA_ASSIGNMENT
    assert "manual-bad" not in conf.list_topics(timeout=10).topics
    # Two new partitions, one assignment.
    r = admin.create_partitions({"manual": {"count": 7, "assignments": [[me]]}}, raise_errors=False)
    assert r.results[0].error_code == 39, r
    # confluent-kafka's NewPartitions with an assignment, too.
    conf.create_partitions([NewPartitions("manual", 6, [[me]])])["manual"].result(30)
    assert len(conf.list_topics("manual", timeout=10).topics["manual"].partitions) == 6
    admin.close()


def test_legacy_alter_configs_replaces_the_set(sluice):
    admin = KafkaAdminClient(bootstrap_servers=sluice.bootstrap)
    admin.create_topics({"legacy": {"num_partitions": 1,
                                    "configs": {"retention.ms": "1000", "flush.ms": "5"}}})

    def legacy(configs):
        # kafka-python's non-incremental path: the legacy AlterConfigs request.
        res = KpConfigResource(KpConfigResourceType.TOPIC, "legacy", configs=configs)
        return admin._manager.run(admin._send_alter_configs_requests, [res], False, False)

    assert legacy({"retention.bytes": "4096"}) == {"topic": {"legacy": "OK"}}
    got = described(AdminClient({"bootstrap.servers": sluice.bootstrap}), "legacy")
    assert got["retention.bytes"] == "4096"
    assert got["retention.ms"] == "604800000", "configs left out return to their defaults"
    assert got["flush.ms"] == "9223372036854775807"
    assert "InvalidConfig" in legacy({"retention.ms": "x"})["topic"]["legacy"]
    assert described(AdminClient({"bootstrap.servers": sluice.bootstrap}), "legacy")["retention.bytes"] == "4096"
    admin.close()


def test_broker_configs_clients_read(sluice):
    admin = AdminClient({"bootstrap.servers": sluice.bootstrap})
    res = ConfigResource(ConfigResource.Type.BROKER, str(sluice.node_id))
    got = admin.describe_configs([res])[res].result(30)
    for key in ["advertised.listeners", "listeners", "log.retention.ms", "num.partitions",
                "auto.create.topics.enable", "message.max.bytes", "default.replication.factor",
                "log.segment.bytes", "log.cleanup.policy", "broker.id"]:
        assert key in got, key
    assert got["advertised.listeners"].value == f"PLAINTEXT://{sluice.bootstrap}"
    assert got["num.partitions"].value == "4"  # the fixture's --default-partitions
    assert got["num.partitions"].source == 4  # STATIC_BROKER_CONFIG
    assert got["log.retention.ms"].value == "604800000"
    assert got["log.retention.ms"].source == 5  # DEFAULT_CONFIG


def test_describe_topic_partitions_paginates(sluice):
    admin = AdminClient({"bootstrap.servers": sluice.bootstrap})
    fs = admin.create_topics([NewTopic("paged-a", 5), NewTopic("paged-b", 3)])
    for f in fs.values():
        f.result(30)
    # kafka-python speaks DescribeTopicPartitions (KIP-966); page through with a small limit.
    kp = KafkaAdminClient(bootstrap_servers=sluice.bootstrap)
    seen, unknown, cursor, pages = [], [], None, 0
    while True:
        r = kp.describe_topic_partitions(["paged-b", "paged-a", "absent"], response_partition_limit=3,
                                         cursor=cursor)
        pages += 1
        for t in r["topics"]:
            if t["error_code"] == 0:
                seen += [(t["name"], p["partition_index"]) for p in t["partitions"]]
                assert t["topic_authorized_operations"] > 0
            else:
                unknown.append((t["name"], t["error_code"]))
        if r["next_cursor"] is None:
            break
        cursor = r["next_cursor"]
    assert seen == [("paged-a", i) for i in range(5)] + [("paged-b", i) for i in range(3)]
    assert pages == 3
    assert ("absent", 3) in unknown  # UNKNOWN_TOPIC_OR_PARTITION
    kp.close()


def test_kafka_4_api_versions_and_list_groups_v5(sluice):
    admin = KafkaAdminClient(bootstrap_servers=sluice.bootstrap)
    # kafka-python infers the broker's version from what ApiVersions advertises.
    assert admin._client.check_version() >= (4, 0)
    conf = AdminClient({"bootstrap.servers": sluice.bootstrap})
    conf.create_topics([NewTopic("listed", 1)])["listed"].result(30)
    c = Consumer({"bootstrap.servers": sluice.bootstrap, "group.id": "lister", "session.timeout.ms": 6000})
    c.subscribe(["listed"])
    deadline = time.monotonic() + 30
    while not c.assignment() and time.monotonic() < deadline:
        c.poll(0.1)
    listed = conf.list_consumer_groups(types={ConsumerGroupType.CLASSIC},
                                       states={ConsumerGroupState.STABLE}).result(30)
    groups = {g.group_id: g for g in listed.valid}
    assert "lister" in groups
    assert groups["lister"].type == ConsumerGroupType.CLASSIC
    none = conf.list_consumer_groups(types={ConsumerGroupType.CONSUMER}).result(30)
    assert none.valid == []
    c.close()
    admin.close()


def test_authorized_operations_when_asked(sluice):
    admin = AdminClient({"bootstrap.servers": sluice.bootstrap})
    admin.create_topics([NewTopic("authz", 1)])["authz"].result(30)
    cluster = admin.describe_cluster(include_authorized_operations=True).result(30)
    assert AclOperation.DESCRIBE in cluster.authorized_operations
    assert AclOperation.ALTER_CONFIGS in cluster.authorized_operations
    topics = admin.describe_topics(TopicCollection(["authz"]), include_authorized_operations=True)
    ops = topics["authz"].result(30).authorized_operations
    assert {AclOperation.READ, AclOperation.WRITE, AclOperation.DESCRIBE} <= set(ops)
    c = Consumer({"bootstrap.servers": sluice.bootstrap, "group.id": "authz-g", "session.timeout.ms": 6000})
    c.subscribe(["authz"])
    deadline = time.monotonic() + 30
    while not c.assignment() and time.monotonic() < deadline:
        c.poll(0.1)
    g = admin.describe_consumer_groups(["authz-g"], include_authorized_operations=True)["authz-g"].result(30)
    assert {AclOperation.READ, AclOperation.DESCRIBE, AclOperation.DELETE} <= set(g.authorized_operations)
    c.close()


def test_static_member_expires_on_time(tmp_dir):
    server = Sluice(tmp_dir / "data", ["--group-min-session-timeout", "1s", *FAST_GROUPS]).start()
    admin = AdminClient({"bootstrap.servers": server.bootstrap})
    admin.create_topics([NewTopic("static", 1)])["static"].result(30)
    c = Consumer({"bootstrap.servers": server.bootstrap, "group.id": "static-g", "group.instance.id": "i-1",
                  "session.timeout.ms": 5000, "heartbeat.interval.ms": 500})
    c.subscribe(["static"])
    deadline = time.monotonic() + 30
    while not c.assignment() and time.monotonic() < deadline:
        c.poll(0.1)
    # A static member leaves no LeaveGroup behind: it stays until its session runs out.
    c.close()
    closed = time.monotonic()
    assert admin.describe_consumer_groups(["static-g"])["static-g"].result(30).members
    # librdkafka's own test (0081) deletes the group a second after the timeout.
    time.sleep(max(0.0, closed + 5.6 - time.monotonic()))
    admin.delete_consumer_groups(["static-g"])["static-g"].result(30)
    server.stop()
