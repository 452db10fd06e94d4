#!/usr/bin/env bash
# Builds Sluice (the first build takes several minutes) and runs `sluice serve` with the
# embedded defaults: Kafka on :9092, HTTP on :8080, data under ./sluice-data. Arguments
# are passed on, e.g. `scripts/serve.sh --kafka-listen 127.0.0.1:9092`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v protoc >/dev/null; then
  # The etcd client's build compiles etcd's protobuf definitions.
  echo "installing protobuf-compiler (needed to build the etcd client)"
  if [ "$(id -u)" = 0 ]; then SUDO=(); else SUDO=(sudo); fi
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler
fi

exec cargo run --release --quiet --bin sluice -- serve "$@"
