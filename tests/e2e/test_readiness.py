"""Readiness follows the services a gateway depends on: started before etcd or the bucket
can be reached, a gateway is alive but not ready, says why, and starts serving once they
answer; losing etcd later makes it unready until etcd is back."""

import os
import socket
import subprocess

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from conftest import BIN, S3, Etcd, Sluice, free_port, http_get, wait_for


def readyz(sluice):
    try:
        return http_get(f"http://{sluice.listen['http']}/readyz")
    except Exception as e:  # urllib raises on 503
        return getattr(e, "code", None), e.read().decode() if hasattr(e, "read") else str(e)


def fixed_listeners(s):
    s.listen = {
        "kafka": {"PLAINTEXT": f"127.0.0.1:{free_port()}"},
        "mqtt": {"mqtt": f"127.0.0.1:{free_port()}"},
        "http": f"127.0.0.1:{free_port()}",
    }
    return s


def ready_command(sluice):
    """`sluice ready` with the server's HTTP listener in SLUICE_HTTP_LISTEN, as a container
    configured through its environment runs it."""
    return subprocess.run([str(BIN), "ready"], capture_output=True, text=True, timeout=30,
                          env=dict(os.environ, SLUICE_HTTP_LISTEN=sluice.listen["http"]))


def round_trip(sluice, topic):
    producer = KafkaProducer(bootstrap_servers=sluice.kafka, acks="all")
    producer.send(topic, b"after waiting").get(timeout=30)
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=sluice.kafka, consumer_timeout_ms=10_000)
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    values = [m.value for m in consumer]
    consumer.close()
    assert values == [b"after waiting"]


def test_gateway_waits_for_etcd_and_serves_once_it_answers(tmp_dir, s3):
    port = free_port()
    gw = fixed_listeners(Sluice(tmp_dir / "gw", [
        "--metadata", f"etcd://127.0.0.1:{port}/ready",
        "--object-store", f"s3://{s3.bucket}/ready",
        "--default-partitions", "1",
    ], env=s3.env(), mode="gateway")).start(wait=False)
    # Alive, not ready, and saying what it waits for.
    wait_for("the reason", lambda: "waiting for the metadata log" in readyz(gw)[1], timeout=60)
    status, body = readyz(gw)
    assert status == 503, body
    assert f"etcd://127.0.0.1:{port}/ready" in body, body
    assert http_get(f"http://{gw.listen['http']}/healthz")[0] == 200
    wait_for("the log line", lambda: "not ready: waiting for the metadata log" in gw.log_path.read_text())
    assert gw.proc.poll() is None
    # `sluice ready`, the container health check, says the same, from the environment.
    probe = ready_command(gw)
    assert probe.returncode == 1 and "waiting for the metadata log" in probe.stderr, probe

    etcd = Etcd(tmp_dir, port=port)
    try:
        gw.ready()
        assert readyz(gw)[0] == 200
        assert ready_command(gw).returncode == 0
        round_trip(gw, "after-etcd")

        # etcd goes away: not ready, still alive; back: ready again.
        etcd.stop()
        wait_for("unready without etcd", lambda: readyz(gw)[0] == 503, timeout=60)
        assert "not following the metadata log" in readyz(gw)[1]
        etcd.start()
        wait_for("ready with etcd back", lambda: readyz(gw)[0] == 200, timeout=60)
        round_trip_again = KafkaProducer(bootstrap_servers=gw.kafka, acks="all")
        round_trip_again.send("after-etcd", b"etcd came back").get(timeout=30)
        round_trip_again.close()
    finally:
        gw.stop()
        etcd.stop()


def test_gateway_waits_for_the_bucket(tmp_dir, etcd):
    port = free_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    gw = fixed_listeners(Sluice(tmp_dir / "gw", [
        "--metadata", f"etcd://{etcd.endpoint}/bucket",
        "--object-store", "s3://sluice-e2e/bucket",
        "--default-partitions", "1",
    ], env=env, mode="gateway")).start(wait=False)
    wait_for("the reason", lambda: "waiting for the object store" in readyz(gw)[1], timeout=60)
    status, body = readyz(gw)
    assert status == 503, body
    assert "s3://sluice-e2e/bucket" in body, body
    wait_for("the log line", lambda: "not ready: waiting for the object store" in gw.log_path.read_text(), timeout=60)
    # The Kafka port is bound already (connections wait in the listen backlog).
    with socket.create_connection(gw.listen["kafka"]["PLAINTEXT"].split(":"), timeout=5):
        pass

    s3 = S3(tmp_dir, port=port)
    try:
        gw.ready()
        assert readyz(gw)[0] == 200
        round_trip(gw, "after-bucket")
    finally:
        gw.stop()
        s3.stop()
