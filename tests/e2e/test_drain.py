"""A drain is bounded by --drain-timeout: what cannot finish in time is abandoned and
logged, and only what was never acknowledged is abandoned."""

import signal
import time

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
