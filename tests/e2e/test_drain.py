"""A drain is bounded by --drain-timeout: what cannot finish in time is abandoned and
logged, and only what was never acknowledged is abandoned."""

import re
import signal
import time

from confluent_kafka import Producer
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from conftest import Sluice, wait_for
from test_faults import faults


def test_a_drain_that_cannot_finish_is_abandoned_after_the_timeout(tmp_dir):
    s = Sluice(tmp_dir / "data", ["--fault-injection", "--drain-timeout", "1s",
                                  "--default-partitions", "1"]).start()
    producer = KafkaProducer(bootstrap_servers=s.kafka, acks="all", retries=0,
                             request_timeout_ms=60_000, max_block_ms=10_000)
    producer.send("drained", b"acknowledged").get(timeout=30)
    # Object store writes now take a minute: the next produce stays in flight.
    faults(s, "put_delay_ms=60000")
    before = s.metric("sluice_bytes_in_total")
    in_flight = producer.send("drained", b"never acknowledged")
    wait_for("the produce in flight", lambda: s.metric("sluice_bytes_in_total") > before)
    began = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    s.proc.wait(timeout=30)
    took = time.monotonic() - began
    assert took < 10, f"the drain took {took:.1f}s with a 1s timeout"
    log = s.log_path.read_text()
    assert "drain not finished in time" in log, log[-2000:]
    assert "kafka_connections=1" in log
    try:
        in_flight.get(timeout=30)
        raise AssertionError("a produce was acknowledged by a gateway that abandoned it")
    except KafkaError:
        pass
    producer.close(timeout=1)

    # What was acknowledged is there after a restart.
    s.start()
    consumer = KafkaConsumer(bootstrap_servers=s.kafka, consumer_timeout_ms=5000)
    tp = TopicPartition("drained", 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    values = [m.value for m in consumer]
    consumer.close()
    assert values == [b"acknowledged"]
    s.stop()


def test_a_drain_logs_how_long_it_took(sluice):
    sluice.proc.send_signal(signal.SIGTERM)
    sluice.proc.wait(timeout=30)
    assert "drained drain_ms=" in sluice.log_path.read_text()


def test_a_produce_in_flight_when_the_drain_begins_is_acknowledged(tmp_dir):
    """The drain's last flush commits and is seen applied before the process exits: the
    producer gets its acknowledgement, not a timeout."""
    s = Sluice(tmp_dir / "data", ["--fault-injection", "--default-partitions", "1"]).start()
    delivered = []
    producer = Producer({"bootstrap.servers": s.kafka, "acks": "all",
                         "message.send.max.retries": 0, "linger.ms": 0})

    def report(err, msg):
        delivered.append((err, msg.offset()))
    producer.produce("drained", b"before", on_delivery=report)
    producer.flush(30)
    assert delivered == [(None, 0)]
    # The next object store write takes a second and a half: the drain begins meanwhile.
    faults(s, "put_delay_ms=1500")
    before = s.metric("sluice_bytes_in_total")
    producer.produce("drained", b"in flight", on_delivery=report)
    producer.poll(0)
    wait_for("the produce in flight", lambda: s.metric("sluice_bytes_in_total") > before)
    s.proc.send_signal(signal.SIGTERM)
    producer.flush(30)
    assert delivered == [(None, 0), (None, 1)], s.log_path.read_text()[-3000:]
    s.proc.wait(timeout=30)
    log = s.log_path.read_text()
    drained = [int(ms) for ms in re.findall(r"drained drain_ms=(\d+)", log)]
    assert drained and drained[0] < 10_000, log[-2000:]

    s.start()
    consumer = KafkaConsumer(bootstrap_servers=s.kafka, consumer_timeout_ms=5000)
    tp = TopicPartition("drained", 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    assert [m.value for m in consumer] == [b"before", b"in flight"]
    consumer.close()
    s.stop()
