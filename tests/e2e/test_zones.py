"""Zones: gateways started with --zone keep Kafka clients that name their zone inside it:
leaders and new group coordinators of their zone (a `zone=` item in client.id), and
fetches sent to a gateway of their zone as the preferred read replica (client.rack,
KIP-392)."""

import socket
import struct
import uuid

from confluent_kafka import Consumer, TopicPartition as CTopicPartition
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from conftest import FAST_GROUPS, gateways

PARTITIONS = 32


def find_coordinator(bootstrap, group, client_id):
    """FindCoordinator v0, sent as `client_id`: the coordinator's node id."""
    host, port = bootstrap.rsplit(":", 1)
    client = client_id.encode()
    body = struct.pack(">hhih", 10, 0, 1, len(client)) + client
    body += struct.pack(">h", len(group)) + group.encode()
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", s.recv(4))[0]
        resp = b""
        while len(resp) < size:
            resp += s.recv(size - len(resp))
    _correlation, error, node = struct.unpack(">ihi", resp[:10])
    assert error == 0, error
    return node


def leaders(bootstrap, topic, client_id):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, client_id=client_id)
    try:
        assert consumer.partitions_for_topic(topic) is not None
        cluster = consumer._client.cluster
        return {cluster.leader_for_partition(TopicPartition(topic, p)) for p in range(PARTITIONS)}
    finally:
        consumer.close()


def test_clients_are_kept_in_their_zone(tmp_dir, etcd, s3):
    gw_a, gw_b = gateways(tmp_dir, etcd, s3, 2, "zones", FAST_GROUPS,
                          each=[["--zone", "zone-a"], ["--zone", "zone-b"]])
    try:
        admin = KafkaAdminClient(bootstrap_servers=gw_a.kafka)
        brokers = admin.describe_cluster()["brokers"]
        racks = {b["broker_id"]: b["rack"] for b in brokers}
        assert racks == {gw_a.node_id: "zone-a", gw_b.node_id: "zone-b"}
        topic = "zoned"
        admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
        admin.close()

        # Leaders: of the client's zone, whichever gateway it asks; spread without one.
        for gw in (gw_a, gw_b):
            assert leaders(gw.kafka, topic, "app;zone=zone-a") == {gw_a.node_id}
            assert leaders(gw.kafka, topic, "app;zone=zone-b") == {gw_b.node_id}
            assert leaders(gw.kafka, topic, "app;zone=elsewhere") == {gw_a.node_id, gw_b.node_id}
            assert leaders(gw.kafka, topic, "app") == {gw_a.node_id, gw_b.node_id}

        # A new group is claimed for a gateway of its client's zone; without a zone, by
        # the gateway asked.
        assert find_coordinator(gw_a.kafka, "group-b", "svc;zone=zone-b") == gw_b.node_id
        assert find_coordinator(gw_a.kafka, "group-b", "svc") == gw_b.node_id
        assert find_coordinator(gw_b.kafka, "group-a", "svc zone=zone-a") == gw_a.node_id
        assert find_coordinator(gw_b.kafka, "group-plain", "svc") == gw_b.node_id

        producer = KafkaProducer(bootstrap_servers=gw_a.kafka, acks="all")
        sent = [f"r{i}".encode() for i in range(200)]
        for i, v in enumerate(sent):
            producer.send(topic, v, partition=i % PARTITIONS)
        producer.flush()
        producer.close()

        # The group claimed for gateway b works there, for a member that came through a.
        group = KafkaConsumer(topic, bootstrap_servers=gw_a.kafka, group_id="group-b",
                              client_id="svc;zone=zone-b", auto_offset_reset="earliest",
                              consumer_timeout_ms=15_000)
        got = []
        for m in group:
            got.append(m.value)
            if len(got) == len(sent):
                break
        group.close()
        assert sorted(got) == sorted(sent)

        # client.rack: a consumer of zone a that bootstraps through gateway b reads every
        # record from gateway a.
        out_a = gw_a.metric("sluice_bytes_out_total")
        out_b = gw_b.metric("sluice_bytes_out_total")
        consumer = Consumer({
            "bootstrap.servers": gw_b.kafka,
            "group.id": f"rack-{uuid.uuid4()}",
            "client.rack": "zone-a",
            "enable.auto.commit": False,
        })
        consumer.assign([CTopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        values = []
        while len(values) < len(sent):
            batch = consumer.consume(num_messages=500, timeout=15)
            assert batch, f"stalled after {len(values)} records"
            for m in batch:
                assert m.error() is None, m.error()
                values.append(m.value())
        consumer.close()
        assert sorted(values) == sorted(sent)
        assert gw_b.metric("sluice_bytes_out_total") == out_b, "gateway b sent records to a zone-a client"
        assert gw_a.metric("sluice_bytes_out_total") > out_a
    finally:
        gw_a.stop()
        gw_b.stop()
