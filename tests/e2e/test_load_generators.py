"""Smoke runs of the load generators (a few seconds each): they complete, and what they
count adds up."""

import json
import subprocess
import sys

from conftest import ROOT

MQTT_LOAD = ROOT / "target" / "debug" / "examples" / "mqtt_load"


def test_mqtt_load_generator_counts_every_delivery(sluice):
    assert MQTT_LOAD.exists(), "build with `cargo build --all-targets` first"
    out = subprocess.run(
        [str(MQTT_LOAD), "--addr", sluice.mqtt, "--qos", "1", "--rate", "400", "--seconds", "3",
         "--publishers", "2", "--subscribers", "2", "--size", "64"],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["sent"] > 500
    assert r["delivered"] == r["expected"] == 2 * r["sent"]
    assert 0 < r["latency_ms"]["p50"] <= r["latency_ms"]["p99"] <= r["latency_ms"]["max"]


def test_kafka_load_generator_produces_and_consumes_everything(sluice, tmp_dir):
    report = tmp_dir / "kafka-load.json"
    out = subprocess.run(
        [sys.executable, str(ROOT / "benches" / "kafka_load.py"), "--bootstrap", sluice.bootstrap,
         "--messages", "5000", "--size", "256", "--partitions", "4", "--json", str(report),
         "--metrics", f"http://{sluice.http}/metrics"],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    r = json.loads(report.read_text())
    assert r["produce"]["errors"] == 0
    assert r["consume"]["messages"] == 5000
    # Object store accounting: the data went out in some PUTs; the tail read right after
    # came from the cache.
    store = r["object_store"]
    assert 1 <= store["produce"]["puts"] and store["produce"]["put_bytes"] >= 5000 * 256
    assert store["consume"]["gets"] == 0
