"""Smoke runs of the load generator `sluice-bench` (a few seconds each): every mode
completes, and what it counts adds up."""

import json
import subprocess

import pytest

from conftest import ROOT

BENCH = ROOT / "target" / "debug" / "sluice-bench"


def bench(*args, timeout=180):
    assert BENCH.exists(), "build with `cargo build --workspace --all-targets` first"
    out = subprocess.run([str(BENCH), *args], capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def test_produce_then_consume_counts_every_record_and_the_object_store_requests(sluice):
    metrics = f"http://{sluice.http}/metrics"
    r, progress = bench("produce", "--bootstrap", sluice.bootstrap, "--topic", "bench-smoke",
                        "--partitions", "4", "--messages", "5000", "--size", "256",
                        "--metrics", metrics)
    assert r["errors"] == 0 and r["first_error"] is None
    assert r["produce"]["messages"] == 5000 and r["produce"]["bytes"] == 5000 * 256
    assert r["latency_ms"]["samples"] == 5000
    assert 0 < r["latency_ms"]["p50"] <= r["latency_ms"]["p99"] <= r["latency_ms"]["max"]
    # The records went out in some PUTs, holding at least their bytes.
    assert r["object_store"]["puts"] >= 1 and r["object_store"]["put_bytes"] >= 5000 * 256

    r, _ = bench("consume", "--bootstrap", sluice.bootstrap, "--topic", "bench-smoke",
                 "--partitions", "4", "--consumers", "2", "--metrics", metrics)
    assert r["expected"] == 5000
    assert r["consume"]["messages"] == 5000 and r["consume"]["bytes"] == 5000 * 256
    # A tail read right after the produce comes from the gateway's cache.
    assert r["object_store"]["gets"] == 0


def test_end_to_end_latency_at_a_fixed_rate(sluice):
    r, _ = bench("e2e", "--bootstrap", sluice.bootstrap, "--topic", "bench-e2e", "--partitions", "4",
                 "--rate", "1000", "--seconds", "3", "--size", "128")
    assert r["errors"] == 0
    assert r["produce"]["messages"] == r["consume"]["messages"] == 3000
    lat = r["end_to_end_latency_ms"]
    assert lat["samples"] == 3000
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"]


@pytest.mark.parametrize("qos", ["0", "1"])
def test_mqtt_counts_every_delivery(sluice, qos):
    r, progress = bench("mqtt", "--addr", sluice.mqtt, "--qos", qos, "--rate", "400", "--seconds", "3",
                        "--publishers", "2", "--subscribers", "2", "--size", "64")
    assert "delivered" in progress  # progress lines while it runs
    assert r["sent"] > 1000
    # Below any limit, QoS 0 loses nothing either.
    assert r["delivered"] == r["expected"] == 2 * r["sent"]
    assert 0 < r["latency_ms"]["p50"] <= r["latency_ms"]["p99"] <= r["latency_ms"]["max"]


def test_mqtt_idle_connections_and_server_memory(sluice):
    r, _ = bench("mqtt-idle", "--addr", sluice.mqtt, "--connections", "200", "--hold", "1",
                 "--server-pid", str(sluice.proc.pid))
    assert r["still_connected"] == 200
    assert r["server_rss_after"] > 0 and r["server_bytes_per_connection"] is not None
