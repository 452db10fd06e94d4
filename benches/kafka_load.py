#!/usr/bin/env python3
"""Kafka load generator over librdkafka (confluent-kafka): produce throughput and latency,
then consume throughput, against any bootstrap address (Sluice or another broker).

    python3 benches/kafka_load.py --bootstrap 127.0.0.1:9092 --messages 200000 --size 1024

Produce latency is measured per record, from produce() to its delivery report (acks=all):
what an application waits for. Results are printed and, with --json, written as JSON.
"""

import argparse
import json
import os
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def percentile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, int(q * len(sorted_values)))
    return sorted_values[i]


def object_store_counters(url):
    """{(metric, op): value} of the object store request and byte counters at `url`."""
    import urllib.request
    out = {}
    with urllib.request.urlopen(url, timeout=10) as r:
        for line in r.read().decode().splitlines():
            for metric in ("sluice_object_store_requests_total", "sluice_object_store_bytes_total"):
                if line.startswith(metric + "{"):
                    op = line.split('op="', 1)[1].split('"', 1)[0]
                    out[(metric, op)] = float(line.rsplit(" ", 1)[1])
    return out


def object_store_report(before, after, op, data_bytes):
    """Requests of `op` between two scrapes, per GiB of `data_bytes` moved by clients."""
    requests = after.get(("sluice_object_store_requests_total", op), 0) - \
        before.get(("sluice_object_store_requests_total", op), 0)
    moved = after.get(("sluice_object_store_bytes_total", op), 0) - \
        before.get(("sluice_object_store_bytes_total", op), 0)
    gib = data_bytes / (1 << 30)
    return {f"{op}s": int(requests), f"{op}_bytes": int(moved),
            f"{op}s_per_gib": round(requests / gib, 1) if gib else None}


def produce(args, topic):
    p = Producer({
        "bootstrap.servers": args.bootstrap,
        "acks": "all",
        "linger.ms": args.linger_ms,
        "compression.type": args.compression,
        "batch.size": 1 << 20,
        "queue.buffering.max.kbytes": 1 << 20,
    })
    payload = os.urandom(args.size)
    latencies = []
    errors = []

    interval = 1.0 / args.rate if args.rate else 0.0
    start = time.perf_counter()
    next_send = start
    for i in range(args.messages):
        if interval:
            now = time.perf_counter()
            if now < next_send:
                time.sleep(next_send - now)
            next_send += interval
        t0 = time.perf_counter()

        def cb(err, msg, t0=t0):
            latencies.append(time.perf_counter() - t0)
            if err is not None:
                errors.append(err)

        while True:
            try:
                p.produce(topic, value=payload, partition=i % args.partitions, on_delivery=cb)
                break
            except BufferError:
                p.poll(0.001)
        p.poll(0)
    p.flush(120)
    elapsed = time.perf_counter() - start
    latencies.sort()
    mb = args.messages * args.size / 1e6
    return {
        "messages": args.messages,
        "errors": len(errors),
        "seconds": round(elapsed, 3),
        "msgs_per_s": round(args.messages / elapsed),
        "mb_per_s": round(mb / elapsed, 1),
        "latency_ms_p50": round(percentile(latencies, 0.50) * 1000, 2),
        "latency_ms_p99": round(percentile(latencies, 0.99) * 1000, 2),
        "latency_ms_max": round(latencies[-1] * 1000, 2) if latencies else None,
    }


def consume(args, topic):
    c = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": "kafka-load",
        "enable.auto.commit": False,
        "fetch.max.bytes": 50 << 20,
        "max.partition.fetch.bytes": 8 << 20,
        "queued.max.messages.kbytes": 1 << 20,
    })
    c.assign([TopicPartition(topic, p, 0) for p in range(args.partitions)])
    count = 0
    size = 0
    start = time.perf_counter()
    while count < args.messages:
        batch = c.consume(10000, timeout=10)
        if not batch:
            raise SystemExit(f"consume stalled after {count} records")
        for m in batch:
            if m.error():
                continue
            count += 1
            size += len(m.value())
    elapsed = time.perf_counter() - start
    c.close()
    return {"messages": count, "seconds": round(elapsed, 3), "mb_per_s": round(size / 1e6 / elapsed, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--topic", default=f"load-{int(time.time())}")
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--linger-ms", type=int, default=5)
    ap.add_argument("--compression", default="none")
    ap.add_argument("--rate", type=float, default=0, help="messages per second; 0: as fast as possible")
    ap.add_argument("--json", help="write results to this file")
    ap.add_argument("--metrics", help="the broker's Prometheus URL (Sluice: http://HTTP_LISTEN/metrics): "
                    "object store requests per GiB written and read are reported")
    args = ap.parse_args()

    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    admin.create_topics([NewTopic(args.topic, args.partitions, 1)])[args.topic].result(30)
    scrape = (lambda: object_store_counters(args.metrics)) if args.metrics else (lambda: {})
    before = scrape()
    results = {"produce": produce(args, args.topic)}
    produced = scrape()
    results["consume"] = consume(args, args.topic)
    consumed = scrape()
    if args.metrics:
        data = args.messages * args.size
        results["object_store"] = {
            "produce": object_store_report(before, produced, "put", data),
            "consume": object_store_report(produced, consumed, "get", data),
        }
    results["config"] = {k: v for k, v in vars(args).items() if k not in ("json", "metrics")}
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0 if results["produce"]["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
