#!/usr/bin/env python3
"""Consumer group costs through one gateway (librdkafka via confluent-kafka):

- rebalance: time for a 10-member group to settle (every partition assigned) after the
  last member subscribes, and after one member leaves;
- offset commits: synchronous commits per second, from one member and from several
  groups at once.

    python3 benches/group_bench.py --bootstrap 127.0.0.1:9092
"""

import argparse
import json
import threading
import time

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def settle(consumers, partitions, timeout=120):
    """Polls until every member owns partitions and together they own each exactly once."""
    deadline = time.monotonic() + timeout
    while True:
        for c in consumers:
            c.poll(0.01)
        assignments = [c.assignment() for c in consumers]
        owned = sorted(p.partition for a in assignments for p in a)
        if owned == list(range(partitions)) and all(assignments):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"group did not settle: {owned}")


def rebalance(args, topic):
    conf = {"bootstrap.servers": args.bootstrap, "group.id": f"bench-rb-{time.time()}",
            "session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
    members = []
    for _ in range(args.members - 1):
        c = Consumer(conf)
        c.subscribe([topic])
        members.append(c)
    settle(members, args.partitions)
    last = Consumer(conf)
    start = time.perf_counter()
    last.subscribe([topic])
    members.append(last)
    settle(members, args.partitions)
    join = time.perf_counter() - start
    leaver = members.pop(0)
    start = time.perf_counter()
    leaver.close()
    settle(members, args.partitions)
    leave = time.perf_counter() - start
    for c in members:
        c.close()
    return {"members": args.members, "join_seconds": round(join, 3), "leave_seconds": round(leave, 3)}


def commits(args, topic, groups):
    counts = [0] * groups

    def run(i):
        c = Consumer({"bootstrap.servers": args.bootstrap, "group.id": f"bench-commit-{i}-{time.time()}",
                      "enable.auto.commit": False})
        offsets = [TopicPartition(topic, p, 0) for p in range(args.partitions)]
        c.commit(offsets=offsets, asynchronous=False)  # warm up: coordinator found
        end = time.perf_counter() + args.seconds
        n = 0
        while time.perf_counter() < end:
            n += 1
            c.commit(offsets=[TopicPartition(topic, n % args.partitions, n)], asynchronous=False)
        counts[i] = n
        c.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(groups)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"groups": groups, "commits_per_second": round(sum(counts) / args.seconds)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--partitions", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=5)
    args = ap.parse_args()
    topic = f"group-bench-{int(time.time())}"
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    admin.create_topics([NewTopic(topic, args.partitions, 1)])[topic].result(30)
    results = {
        "rebalance": rebalance(args, topic),
        "commits_one_group": commits(args, topic, 1),
        "commits_eight_groups": commits(args, topic, 8),
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
