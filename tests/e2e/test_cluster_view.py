"""Every gateway gives clients the same picture of the cluster: the live gateways as brokers
with stable node ids, and the same leader for each partition, spread over them. Consumer
group members that bootstrap to different gateways all get partitions in one rebalance, and
move to the survivors when a gateway dies."""

import json
import os
import subprocess
import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer

from conftest import FAST_GROUPS, wait_for
from conftest import gateways as start_gateways

NODE_DIR = Path(__file__).parent / "node"
PARTS = 4
STARTUPS = int(os.environ.get("SLUICE_STARTUPS", "20"))
# One rebalance takes a second or two here; a member stranded until librdkafka's next
# metadata refresh waited 300 s.
STARTUP_LIMIT_S = 20


def view(bootstrap):
    """(brokers by node id, leader by (topic, partition), controller) as one gateway says."""
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    brokers = {b.id: f"{b.host}:{b.port}" for b in md.brokers.values()}
    leaders = {(t, p.id): p.leader for t, tm in md.topics.items() for p in tm.partitions.values()}
    return brokers, leaders, md.controller_id


def cluster(tmp_dir, etcd, s3, namespace, topic, partitions=PARTS):
    gws = start_gateways(tmp_dir, etcd, s3, 3, namespace, ["--lease-ttl", "3s", *FAST_GROUPS])
    admin = AdminClient({"bootstrap.servers": gws[0].bootstrap})
    admin.create_topics([NewTopic(topic, partitions)])[topic].result(30)
    # Registrations reach every gateway through its watch.
    for g in gws:
        wait_for("every gateway listed", lambda g=g: len(view(g.bootstrap)[0]) == 3)
    return gws


def test_every_gateway_lists_the_live_gateways_and_the_same_leaders(tmp_dir, etcd, s3):
    gws = cluster(tmp_dir, etcd, s3, "view", "spread", partitions=24)
    expected = {g.node_id: g.bootstrap for g in gws}
    views = [view(g.bootstrap) for g in gws]
    for brokers, leaders, controller in views:
        assert brokers == expected
        assert leaders == views[0][1], "gateways disagree about leaders"
        assert controller == min(expected)
    led = [sum(1 for (t, _), l in views[0][1].items() if t == "spread" and l == g.node_id) for g in gws]
    assert all(n > 0 for n in led), f"leaders not spread: {led}"

    # A drained gateway leaves at once; only its partitions move.
    gone = gws[2]
    gone.stop()
    for g in gws[:2]:
        wait_for("the drained gateway dropped", lambda g=g: gone.node_id not in view(g.bootstrap)[0], 10)
    brokers, after, _ = view(gws[0].bootstrap)
    assert set(brokers) == {gws[0].node_id, gws[1].node_id}
    for tp, leader in views[0][1].items():
        if tp[0] == "spread":
            if leader != gone.node_id:
                assert after[tp] == leader, f"{tp} moved although its leader stayed"
            else:
                assert after[tp] in brokers

    # A killed gateway leaves when its lease expires; restarted, it is listed again under
    # the same node id.
    killed = gws[1]
    killed.kill9()
    wait_for("the killed gateway dropped", lambda: set(view(gws[0].bootstrap)[0]) == {gws[0].node_id}, 15)
    killed.start()
    wait_for("the restarted gateway listed",
             lambda: set(view(gws[0].bootstrap)[0]) == {gws[0].node_id, killed.node_id}, 15)
    assert view(killed.bootstrap)[0] == view(gws[0].bootstrap)[0]
    for g in gws:
        g.stop()


def test_single_gateway_leads_everything(sluice):
    admin = AdminClient({"bootstrap.servers": sluice.bootstrap})
    admin.create_topics([NewTopic("single", 3)])["single"].result(30)
    brokers, leaders, controller = view(sluice.bootstrap)
    assert brokers == {sluice.node_id: sluice.bootstrap}
    assert {l for (t, _), l in leaders.items() if t == "single"} == {sluice.node_id}
    assert controller == sluice.node_id


def settled(assignments):
    """Every member has partitions, and together they hold each partition once."""
    held = sorted(tp.partition for a in assignments for tp in a)
    return all(assignments) and held == list(range(PARTS))


def librdkafka_startup(bootstraps, topic, group):
    """Seconds until every member had partitions, or None after the limit."""
    cs = [Consumer({"bootstrap.servers": b, "group.id": group, "session.timeout.ms": 6000,
                    "heartbeat.interval.ms": 500, "auto.offset.reset": "earliest"}) for b in bootstraps]
    try:
        for c in cs:
            c.subscribe([topic])
        start = time.monotonic()
        while time.monotonic() - start < STARTUP_LIMIT_S:
            for c in cs:
                c.poll(0.05)
            if settled([c.assignment() for c in cs]):
                return time.monotonic() - start
        return None
    finally:
        for c in cs:
            c.close()


def kafka_python_startup(bootstraps, topic, group):
    # Each member polls from its own thread with a long timeout (see test_groups_kafka_python).
    assignments = [set() for _ in bootstraps]
    done = threading.Event()
    stop = threading.Event()

    def member(i, b):
        c = KafkaConsumer(topic, bootstrap_servers=b, group_id=group, auto_offset_reset="earliest",
                          session_timeout_ms=6000, heartbeat_interval_ms=500)
        try:
            while not stop.is_set():
                c.poll(timeout_ms=500)
                assignments[i] = set(c.assignment())
                if settled(assignments):
                    done.set()
        finally:
            c.close()

    threads = [threading.Thread(target=member, args=(i, b)) for i, b in enumerate(bootstraps)]
    start = time.monotonic()
    for t in threads:
        t.start()
    try:
        return time.monotonic() - start if done.wait(STARTUP_LIMIT_S) else None
    finally:
        stop.set()
        for t in threads:
            t.join(30)


def startups(tmp_dir, etcd, s3, namespace, one):
    gws = cluster(tmp_dir, etcd, s3, namespace, "startups")
    times = []
    for i in range(STARTUPS):
        # Members bootstrap to different gateways, a different pair each time.
        pair = [gws[i % 3].bootstrap, gws[(i + 1) % 3].bootstrap]
        times.append(one(pair, "startups", f"{namespace}-{i}"))
    assert None not in times, f"a member got no partitions within {STARTUP_LIMIT_S}s: {times}"
    print(f"{namespace} start-ups (s):", [round(t, 2) for t in times])
    for g in gws:
        g.stop()
    return times


def test_librdkafka_members_on_different_gateways_all_get_partitions(tmp_dir, etcd, s3):
    startups(tmp_dir, etcd, s3, "rdk", librdkafka_startup)


def test_kafka_python_members_on_different_gateways_all_get_partitions(tmp_dir, etcd, s3):
    startups(tmp_dir, etcd, s3, "kpy", kafka_python_startup)


def test_kafkajs_members_on_different_gateways_all_get_partitions(tmp_dir, etcd, s3):
    gws = cluster(tmp_dir, etcd, s3, "kjs", "startups")
    out = subprocess.run(["node", str(NODE_DIR / "startups.js"), gws[0].bootstrap, gws[1].bootstrap,
                          "startups", str(PARTS), str(STARTUPS), str(STARTUP_LIMIT_S * 1000)],
                         capture_output=True, timeout=STARTUPS * (STARTUP_LIMIT_S + 15))
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    results = json.loads(out.stdout.decode().strip().splitlines()[-1])
    assert len(results) == STARTUPS
    assert all(r["ms"] is not None for r in results), results
    print("kafkajs start-ups (ms):", [r["ms"] for r in results])
    for g in gws:
        g.stop()


def test_members_move_to_the_survivors_when_a_gateway_dies(tmp_dir, etcd, s3):
    gws = cluster(tmp_dir, etcd, s3, "die", "moving")
    seen = set()
    lock = threading.Lock()
    stop = threading.Event()

    def member(bootstrap):
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "movers", "session.timeout.ms": 6000,
                      "heartbeat.interval.ms": 500, "auto.offset.reset": "earliest"})
        c.subscribe(["moving"])
        while not stop.is_set():
            m = c.poll(0.1)
            if m is not None and not m.error():
                with lock:
                    seen.add(int(m.value()))
        c.close()

    members = [threading.Thread(target=member, args=(g.bootstrap,)) for g in gws[:2]]
    for t in members:
        t.start()

    def produce(live, start, n):
        p = Producer({"bootstrap.servers": ",".join(g.bootstrap for g in live), "linger.ms": 2})
        for i in range(start, start + n):
            p.produce("moving", value=str(i).encode(), partition=i % PARTS)
        assert p.flush(60) == 0

    def consumed(n, limit):
        wait_for(f"{n} records consumed", lambda: len(seen) >= n, limit)
        with lock:
            assert seen == set(range(n))

    produce(gws, 0, 400)
    consumed(400, 60)
    # The gateway the second member bootstrapped to dies; its partitions and (if it was the
    # coordinator) the group move once its lease expires, without waiting for a metadata
    # refresh interval (librdkafka's is 300 s).
    gws[1].kill9()
    survivors = [gws[0], gws[2]]
    produce(survivors, 400, 400)
    consumed(800, 60)
    gws[1].start()
    produce(gws, 800, 400)
    consumed(1200, 60)
    stop.set()
    for t in members:
        t.join(30)
    for g in gws:
        g.stop()
