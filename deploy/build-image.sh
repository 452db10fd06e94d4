#!/usr/bin/env bash
# Builds the Sluice container image here, pulling nothing: `FROM scratch` with the stripped
# release binary, the shared libraries `ldd` says it links, the system's CA certificates
# (for S3 and etcd over TLS) and a non-root user; tagged `sluice:local` (or $TAG).
# `deploy/Dockerfile` builds the same image where a registry is reachable.
#
#   deploy/build-image.sh                     # cargo build --release, then the image
#   deploy/build-image.sh --binary PATH       # an already built binary
#
# Starts dockerd if it is not running, and stops it again afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${TAG:-sluice:local}
binary=
while [ $# -gt 0 ]; do
  case $1 in
    --binary) binary=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$binary" ]; then
  cargo build --release -p sluice
  binary=${CARGO_TARGET_DIR:-target}/release/sluice
fi

command -v dockerd >/dev/null || {
  echo "installing docker.io from Debian"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends docker.io >/dev/null
}
started=
if ! docker info >/dev/null 2>&1; then
  dockerd >/tmp/sluice-dockerd.log 2>&1 &
  started=$!
  for _ in $(seq 100); do docker info >/dev/null 2>&1 && break; sleep 0.2; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start: /tmp/sluice-dockerd.log" >&2; exit 1; }
fi
ctx=$(mktemp -d)
cleanup() {
  rm -rf "$ctx"
  if [ -n "$started" ]; then kill "$started"; wait "$started" 2>/dev/null || true; fi
}
trap cleanup EXIT

root=$ctx/rootfs
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$ctx/data" "$ctx/tmp"
# The release profile keeps debug information; the image does not.
strip -o "$root/usr/local/bin/sluice" "$binary"
# Every library the binary links, and the dynamic loader, at their paths.
for lib in $(ldd "$binary" | grep -oE '/[^ ]+'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
echo 'sluice:x:65532:65532:sluice:/var/lib/sluice:/nonexistent' >"$root/etc/passwd"
echo 'sluice:x:65532:' >"$root/etc/group"
cat >"$ctx/Dockerfile" <<'EOF'
FROM scratch
COPY rootfs/ /
COPY --chown=65532:65532 data/ /var/lib/sluice/
COPY --chown=65532:65532 tmp/ /tmp/
USER 65532:65532
WORKDIR /var/lib/sluice
ENV SLUICE_DATA_DIR=/var/lib/sluice
# Kafka, MQTT, HTTP (metrics, health, /admin, MQTT over WebSocket).
EXPOSE 9092 1883 8080
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["serve"]
EOF
DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$ctx" >/dev/null
size=$(docker image inspect "$tag" --format '{{.Size}}')
echo "$tag: $((size / 1000000)) MB"
