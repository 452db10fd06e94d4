"""HTTP endpoints: health, readiness, and the metrics the gateway promises."""

import subprocess

from conftest import http_get


def test_health_ready_and_metrics(sluice):
    assert http_get(f"http://{sluice.http}/healthz") == (200, "ok\n")
    assert http_get(f"http://{sluice.http}/readyz")[0] == 200
    subprocess.run(["kcat", "-P", "-b", sluice.bootstrap, "-t", "http"], input=b"a\nb\n", check=True, timeout=30)
    subprocess.run(["kcat", "-C", "-b", sluice.bootstrap, "-t", "http", "-e"], capture_output=True, check=True,
                   timeout=30)
    text = sluice.metrics()
    for family in [
        'sluice_kafka_requests_total{api="produce"}',
        'sluice_kafka_requests_total{api="fetch"}',
        'sluice_kafka_request_seconds_bucket{api="produce"',
        'sluice_kafka_request_seconds_bucket{api="fetch"',
        "sluice_bytes_in_total",
        "sluice_bytes_out_total",
        'sluice_object_store_requests_total{op="put"}',
        'sluice_object_store_request_seconds_bucket{op="put"',
        "sluice_flush_bytes_bucket",
        'sluice_cache_lookups_total{result="lookup"}',
    ]:
        assert family in text, family
    assert sluice.metric("sluice_bytes_in_total") > 0
    assert sluice.metric("sluice_bytes_out_total") > 0
