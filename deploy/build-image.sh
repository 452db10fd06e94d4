#!/usr/bin/env bash
# Builds container images here, pulling nothing: each is `FROM scratch` with its programs,
# the shared libraries `ldd` says they link, and the system's CA certificates.
# `deploy/Dockerfile` builds the Sluice image where a registry is reachable.
#
#   deploy/build-image.sh                      # sluice:local, from cargo build --release
#   deploy/build-image.sh --binary PATH        # sluice:local from an already built binary
#   deploy/build-image.sh etcd moto haproxy    # what deploy/compose.yaml runs beside it
#   deploy/build-image.sh all
#
# Images: sluice:local (or $TAG): the stripped binary, non-root (65532).
#         sluice-etcd:local: etcd and etcdctl from Debian's etcd-server and etcd-client.
#         sluice-moto:local: moto's S3 server from PyPI on Debian's Python.
#         sluice-haproxy:local: HAProxy from Debian.
# Installs docker.io (and the Debian packages above) when missing; starts dockerd if it is
# not running, and stops it again afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
binary=
images=()
while [ $# -gt 0 ]; do
  case $1 in
    --binary) binary=$2; shift 2 ;;
    sluice|etcd|moto|haproxy) images+=("$1"); shift ;;
    all) images+=(sluice etcd moto haproxy); shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ ${#images[@]} -gt 0 ] || images=(sluice)
# The moto release the test suite runs, with S3 and the server only.
moto_version=$(grep -oP '^moto\[server\]==\K\S+' tests/e2e/requirements.txt)

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
debian() { # COMMAND PACKAGE: installs PACKAGE when COMMAND is missing
  command -v "$1" >/dev/null && return
  echo "installing $2 from Debian"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
}
debian dockerd docker.io
for image in "${images[@]}"; do
  case $image in
    etcd) debian etcd etcd-server; debian etcdctl etcd-client ;;
    haproxy) debian haproxy haproxy ;;
  esac
done

started=
if ! docker info >/dev/null 2>&1; then
  dockerd >/tmp/sluice-dockerd.log 2>&1 &
  started=$!
  for _ in $(seq 100); do docker info >/dev/null 2>&1 && break; sleep 0.2; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start: /tmp/sluice-dockerd.log" >&2; exit 1; }
fi
ctx=
cleanup() {
  [ -z "$ctx" ] || rm -rf "$ctx"
  if [ -n "$started" ]; then kill "$started"; wait "$started" 2>/dev/null || true; fi
}
trap cleanup EXIT

# Copies every library FILE links, and the dynamic loader, to their paths under the root.
libs_of() {
  local root=$1 lib
  for lib in $(ldd "$2" 2>/dev/null | grep -oE '/[^ ]+'); do
    [ -e "$root$lib" ] && continue
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
}

# Copies FILEs to the same paths under the root, with their libraries.
add() {
  local root=$1 file
  shift
  for file in "$@"; do
    mkdir -p "$root$(dirname "$file")"
    cp -L "$file" "$root$file"
    libs_of "$root" "$file"
  done
}

# A fresh context with a root file system holding CA certificates and the user 65532.
new_context() {
  ctx=$(mktemp -d)
  mkdir -p "$ctx/rootfs/etc/ssl/certs" "$ctx/rootfs/tmp"
  chmod 1777 "$ctx/rootfs/tmp"
  cp -L /etc/ssl/certs/ca-certificates.crt "$ctx/rootfs/etc/ssl/certs/"
  echo 'nonroot:x:65532:65532:nonroot:/nonexistent:/nonexistent' >"$ctx/rootfs/etc/passwd"
  echo 'nonroot:x:65532:' >"$ctx/rootfs/etc/group"
}

# TAG, then the Dockerfile lines after `FROM scratch` and `COPY rootfs/ /` on stdin.
build() {
  { printf 'FROM scratch\nCOPY rootfs/ /\n'; cat; } >"$ctx/Dockerfile"
  local out
  out=$(DOCKER_BUILDKIT=0 docker build -q -t "$1" "$ctx" 2>&1) || { echo "$out" >&2; return 1; }
  rm -rf "$ctx"
  ctx=
  echo "$1: $(($(docker image inspect "$1" --format '{{.Size}}') / 1000000)) MB"
}

image_sluice() {
  if [ -z "$binary" ]; then
    cargo build --release -p sluice
    binary=${CARGO_TARGET_DIR:-target}/release/sluice
  fi
  new_context
  local root=$ctx/rootfs
  mkdir -p "$root/usr/local/bin" "$ctx/data"
  # The release profile keeps debug information; the image does not.
  strip -o "$root/usr/local/bin/sluice" "$binary"
  libs_of "$root" "$binary"
  build "${TAG:-sluice:local}" <<'EOF'
COPY --chown=65532:65532 data/ /var/lib/sluice/
USER 65532:65532
WORKDIR /var/lib/sluice
ENV SLUICE_DATA_DIR=/var/lib/sluice
# Kafka, MQTT, HTTP (metrics, health, /admin, MQTT over WebSocket).
EXPOSE 9092 1883 8080
# `sluice ready` asks /readyz: for a health check in images without a shell.
HEALTHCHECK --interval=2s --timeout=3s CMD ["/usr/local/bin/sluice", "ready"]
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["serve"]
EOF
}

image_etcd() {
  new_context
  mkdir -p "$ctx/data"
  add "$ctx/rootfs" "$(command -v etcd)" "$(command -v etcdctl)"
  build sluice-etcd:local <<EOF
COPY --chown=65532:65532 data/ /var/lib/etcd/
USER 65532:65532
ENV ETCD_DATA_DIR=/var/lib/etcd
EXPOSE 2379 2380
ENTRYPOINT ["$(command -v etcd)"]
EOF
}

image_moto() {
  new_context
  local root=$ctx/rootfs python stdlib so
  # This machine's Python, at its own paths: the interpreter and its standard library
  # (without its tests), with moto and its dependencies beside them.
  python=$(python3 -c 'import os, sys; print(os.path.realpath(sys.executable))')
  stdlib=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
  add "$root" "$python"
  mkdir -p "$root/usr/bin" "$root$(dirname "$stdlib")"
  [ "$python" = /usr/bin/python3 ] || ln -s "$python" "$root/usr/bin/python3"
  cp -a "$stdlib" "$root$stdlib"
  rm -rf "$root$stdlib/test" "$root$stdlib"/*/tests "$root$stdlib/site-packages" "$root$stdlib/dist-packages"
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --disable-pip-version-check --no-warn-conflicts \
    --no-compile --target "$root/opt/moto" "moto[s3]==$moto_version" flask flask-cors
  while IFS= read -r so; do libs_of "$root" "$so"; done < <(find "$root$stdlib" "$root/opt/moto" -name '*.so*' -type f)
  build sluice-moto:local <<EOF
USER 65532:65532
ENV PYTHONPATH=/opt/moto PYTHONDONTWRITEBYTECODE=1
EXPOSE 5000
ENTRYPOINT ["/usr/bin/python3", "-m", "moto.server"]
CMD ["-H", "0.0.0.0", "-p", "5000"]
EOF
}

image_haproxy() {
  new_context
  mkdir -p "$ctx/rootfs/usr/local/etc/haproxy" "$ctx/rootfs/run/haproxy"
  add "$ctx/rootfs" "$(command -v haproxy)"
  build sluice-haproxy:local <<EOF
COPY --chown=65532:65532 rootfs/run/haproxy/ /run/haproxy/
USER 65532:65532
STOPSIGNAL SIGUSR1
ENTRYPOINT ["$(command -v haproxy)"]
CMD ["-W", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
EOF
}

for image in "${images[@]}"; do "image_$image"; done
