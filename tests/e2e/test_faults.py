"""Object store failures: producers get a retriable error, nothing acknowledged is lost,
and the gateway recovers once the store does."""

import json
import urllib.request

from confluent_kafka import KafkaError, Producer
from kafka import errors as kafka_errors

from conftest import Sluice, wait_for
from records import PARTITIONS
from test_restart import consume_all


def faults(server, query=""):
    req = urllib.request.Request(f"http://{server.http}/admin/faults?{query}", method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_put_failures_are_retriable_and_lose_nothing(tmp_dir):
    server = Sluice(tmp_dir / "data", ["--default-partitions", str(PARTITIONS), "--fault-injection"]).start()
    topic = "faults"
    acked, failed = [], []

    def on_delivery(err, msg):
        if err is None:
            acked.append((msg.partition(), msg.offset(), msg.value()))
        else:
            failed.append(err)

    # Without retries the producer sees the error itself: retriable, a storage error.
    faults(server, "fail_next_puts=1000")
    p = Producer({"bootstrap.servers": server.bootstrap, "retries": 0, "linger.ms": 0})
    p.produce(topic, value=b"first", partition=0, on_delivery=on_delivery)
    p.flush(30)
    assert len(failed) == 1 and not acked
    # librdkafka's delivery errors do not carry the protocol's retriable flag; the code
    # does: KAFKA_STORAGE_ERROR is retriable in the Kafka protocol.
    assert failed[0].code() == KafkaError.KAFKA_STORAGE_ERROR, failed[0]
    assert kafka_errors.for_code(failed[0].code()).retriable
    faults(server, "clear=1")

    # With retries, a write outage is invisible to the application once it ends.
    p = Producer({"bootstrap.servers": server.bootstrap, "linger.ms": 2, "retry.backoff.ms": 50,
                  "message.timeout.ms": 60000})
    before = faults(server, "fail_all_puts=true")["injected_put_failures"]
    for i in range(2000):
        p.produce(topic, value=f"v{i}".encode(), partition=i % PARTITIONS, on_delivery=on_delivery)
        p.poll(0)
    # Let the outage span several retries of every request.
    wait_for("injected failures", lambda: faults(server)["injected_put_failures"] >= before + 5)
    faults(server, "clear=1")
    assert p.flush(60) == 0
    assert len(acked) == 2000 and len(failed) == 1
    assert server.metric('sluice_flush_errors_total{stage="put"}') > 0

    log = consume_all(server.bootstrap, topic)
    for part, offset, val in acked:
        assert log[part][offset] == val
    assert sum(len(r) for r in log.values()) == 2000, "a failed write left a trace"
    server.stop()
