"""Gateways scaled 1 -> 4 -> 1, twice, under continuous load behind HAProxy: as a Docker
swarm service from the image built here (plain processes where Docker cannot run, or with
SCALING_ORCHESTRATOR=processes). No acknowledged record is lost or written twice and
offsets stay dense; every MQTT message acknowledged to a publisher reaches every subscriber
(QoS 2 exactly once); no will is published; every session resumes; the group keeps
consuming."""

import json
import os
import time
from collections import Counter

from conftest import wait_for
from docker_env import IMAGE
from scaling import (SLOTS, Haproxy, KafkaLoad, MqttLoad, Processes, Swarm, cluster_env,
                     connections, drain_times_ms, percentile, port_prefixes)

# How long the load runs in each state between scaling steps.
HOLD = float(os.environ.get("SCALING_HOLD_SECONDS", "8"))


def orchestrate(request, tmp_dir, prefixes, env):
    """A swarm service, or plain processes where swarm cannot run here."""
    name = os.environ.get("SCALING_ORCHESTRATOR", "swarm")
    if name == "swarm":
        try:
            request.getfixturevalue("docker").swarm()
            request.getfixturevalue("images")
            return Swarm(request.getfixturevalue("docker"), IMAGE, prefixes, env)
        except Exception as e:
            if os.environ.get("SCALING_ORCHESTRATOR") == "swarm":
                raise
            print(f"swarm cannot run here ({e}); plain processes behind HAProxy instead")
    return Processes(tmp_dir, prefixes, env)


def test_scale_out_and_in_twice_under_load(tmp_dir, etcd, s3, request):
    secret = tmp_dir / "cluster-secret"
    secret.write_text("scaling e2e cluster secret\n")
    secret.chmod(0o644)
    prefixes = port_prefixes()
    env = cluster_env(etcd, s3, "scaling", str(secret))
    orchestrator = orchestrate(request, tmp_dir, prefixes, env)
    lb = kafka = mqtt = None
    steps = []
    spread = []
    try:
        lb = Haproxy(tmp_dir, prefixes)
        orchestrator.scale(1)
        kafka = KafkaLoad(lb.kafka, "scaling")
        mqtt = MqttLoad(lb.mqtt)
        wait_for("the group consuming", lambda: kafka.consumed, timeout=60)
        # Steady state from here on (the topic's creation and the group's first join are
        # behind).
        steady_from = time.monotonic()
        time.sleep(HOLD)  # the load runs
        for _ in range(2):
            for n in (SLOTS, 1):
                began = time.monotonic()
                orchestrator.scale(n)
                steps.append((n, began, time.monotonic()))
                if n == SLOTS:
                    spread.append({"after_scale_out": connections(prefixes, orchestrator.running())})
                time.sleep(HOLD)  # the load runs on the new number of gateways
                if n == SLOTS:
                    spread[-1][f"after_{HOLD:g}s"] = connections(prefixes, orchestrator.running())

        mqtt.stop_publishing()
        kafka.stop_producing()
        assert kafka.errors == []
        # Everything acknowledged reaches the group and every subscriber.
        acked = set(kafka.acked)
        wait_for("the group caught up",
                 lambda: acked <= {v for _, v in kafka.consumed}, timeout=120)
        kafka.stop_consuming()
        expected = {topic: d.acked() for d, topic, _ in mqtt.publishers}
        for sub in mqtt.subscribers:
            def missing():
                got = {(t, p) for t, p in sub.messages}
                return sorted((t, p) for t in expected for p in expected[t] if (t, p) not in got)
            try:
                wait_for(f"{sub.client_id} caught up", lambda: not missing(), timeout=60)
            except AssertionError:
                gone = missing()
                at = kafka_where(lb.kafka, "mqtt", {p for _, p in gone})
                raise AssertionError(f"{sub.client_id} is missing {len(gone)}: {gone[:20]} "
                                     f"at {at}; connections {sub.connects}, "
                                     f"disconnects {sub.disconnects}") from None

        # The log: dense offsets from 0, each acknowledged record once, where acknowledged.
        ends, log = kafka.log()
        values = []
        for p, records in log.items():
            assert [o for o, _ in records] == list(range(ends[p][0], ends[p][1])), p
            assert ends[p][0] == 0
            values += [v for _, v in records]
        dupes = [v for v, n in Counter(values).items() if n > 1]
        assert dupes == [], dupes[:10]
        where = {v: (p, o) for p, records in log.items() for o, v in records}
        assert all(where.get(v) == at for v, at in kafka.acked.items())

        # The group kept consuming: records consumed after every scaling step.
        for n, began, ended in steps:
            assert any(ended <= t <= ended + HOLD for t, _ in kafka.consumed), (n, began)

        # MQTT: QoS 2 exactly once, QoS 1 at least once, sessions resumed, no will.
        for sub in mqtt.subscribers:
            q2 = Counter(p for t, p in sub.messages if t == "scaling/q2")
            assert [p for p, n in q2.items() if n > 1] == [], sub.client_id
        for d in mqtt.devices():
            assert d.connects[0] is False and all(d.connects[1:]), (d.client_id, d.connects)
        if env["SLUICE_REBALANCE_CONNECTIONS"] == "true":
            # Sessions moved off the first gateway, and again when their gateways drained.
            assert sum(len(d.connects) - 1 for d in mqtt.devices()) >= 2, "no device ever moved"
        mqtt.watcher.c.publish("scaling/wills/marker", b"marker", qos=1)
        wait_for("the watcher's marker", lambda: mqtt.watcher.messages, timeout=30)
        assert mqtt.watcher.messages == [("scaling/wills/marker", b"marker")]

        logs = orchestrator.logs_text()
        drains = drain_times_ms(logs)
        assert len(drains) == 6, "\n".join(line for line in logs.splitlines() if "drain" in line or "ERROR" in line or "panick" in line)
        report(orchestrator.name, kafka, mqtt, steady_from, steps, drains, spread)
    finally:
        if os.environ.get("SCALING_LOGS"):
            # The gateways' logs, for a failure's investigation.
            with open(os.environ["SCALING_LOGS"], "w") as f:
                f.write(orchestrator.logs_text())
        for load in (mqtt, kafka):
            if load:
                try:
                    load.stop()
                except Exception:
                    pass
        orchestrator.stop()
        if lb:
            lb.stop()


def report(orchestrator, kafka, mqtt, steady_from, steps, drains, spread):
    """Produce latency in steady state and while scaling, drain times, reconnections:
    printed, and written as JSON to $SCALING_REPORT when set."""
    def during(t):
        return any(began <= t <= ended + 2 for _, began, ended in steps)
    steady = [lat for t, lat in kafka.latency if t >= steady_from and not during(t)]
    scaling = [lat for t, lat in kafka.latency if during(t)]
    out = {
        "orchestrator": orchestrator,
        "records_acknowledged": len(kafka.acked),
        "mqtt_messages_acknowledged": sum(len(d.acked()) for d, _, _ in mqtt.publishers),
        "produce_p50_ms": {"steady": ms(percentile(steady, 0.5)),
                           "scaling": ms(percentile(scaling, 0.5))},
        "produce_p99_ms": {"steady": ms(percentile(steady, 0.99)),
                           "scaling": ms(percentile(scaling, 0.99))},
        "produce_max_ms": {"steady": ms(max(steady)), "scaling": ms(max(scaling))},
        "scale_seconds": [{"to": n, "took": round(ended - began, 2)} for n, began, ended in steps],
        "drain_ms": drains,
        "mqtt_reconnections": sum(len(d.connects) - 1 for d in mqtt.devices()),
        "connections_by_slot_kafka_mqtt": spread,
    }
    print("SCALING-REPORT", json.dumps(out))
    if os.environ.get("SCALING_REPORT"):
        with open(os.environ["SCALING_REPORT"], "w") as f:
            json.dump(out, f, indent=2)


def ms(seconds):
    return None if seconds is None else round(seconds * 1000, 1)


def kafka_where(bootstrap, topic, values):
    """Where records with these values are in the topic: {value: (partition, offset)}."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "scaling-where"})
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.assign([TopicPartition(topic, p, 0) for p in parts])
    out, idle = {}, 0
    while idle < 3:
        m = c.poll(1)
        if m is None:
            idle += 1
        elif not m.error() and m.value() in values:
            out[m.value()] = (m.partition(), m.offset())
    c.close()
    return out
