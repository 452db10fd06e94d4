#!/usr/bin/env bash
# Runs librdkafka's own test suite (the tests that run against an external broker) against
# a Sluice with a SASL_SSL listener (SCRAM-SHA-512, sessions re-authenticated every 10 s),
# and prints one line per test: PASSED, FAILED or SKIPPED with librdkafka's reason.
#
# librdkafka's sources are those of the rdkafka-sys crate the load generator builds (the
# same release as its librdkafka), fetched by cargo; they are built with OpenSSL (TLS and
# SASL SCRAM) under target/librdkafka-tests. Needs what scripts/test-deps.sh installs
# (make, a C compiler, OpenSSL's headers, openssl) and a built `target/debug/sluice`.
#
#   scripts/librdkafka-tests.sh                 # the TLS and SASL tests and a few basics
#   scripts/librdkafka-tests.sh 0001 0012 0142  # the tests named
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$root/target/librdkafka-tests
bin=$root/target/debug/sluice
[ -x "$bin" ] || { echo "build first: cargo build" >&2; exit 1; }

# TLS and SASL tests (0097 ssl_verify runs its local part; the trivup one needs trivup's
# files), then produce/consume basics over SASL_SSL.
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(0097 0124 0128 0133 0134 0135 0142 0001 0012 0013 0014 0015)

src=$(cargo metadata --format-version 1 --manifest-path benches/loadgen/Cargo.toml 2>/dev/null \
  | python3 -c 'import json,sys; d=json.load(sys.stdin); print(next(p["manifest_path"] for p in d["packages"] if p["name"]=="rdkafka-sys"))')
src=$(dirname "$src")/librdkafka
mkdir -p "$work"
if [ ! -x "$work/librdkafka/tests/test-runner" ]; then
  echo "building librdkafka and its tests from $src (a few minutes)"
  rm -rf "$work/librdkafka"
  cp -r "$src" "$work/librdkafka"
  (cd "$work/librdkafka" \
    && CC=cc CXX=c++ ./configure --disable-gssapi --disable-curl --disable-zstd --disable-lz4-ext >"$work/build.log" 2>&1 \
    && make -j"$(nproc)" libs >>"$work/build.log" 2>&1 \
    && make -j"$(nproc)" -C tests build >>"$work/build.log" 2>&1) \
    || { echo "build failed: see $work/build.log" >&2; exit 1; }
fi

# A CA and a server certificate for 127.0.0.1.
certs=$work/certs
rm -rf "$certs" "$work/data"
mkdir -p "$certs"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=librdkafka tests CA" -keyout "$certs/ca.key" -out "$certs/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=sluice" \
  -keyout "$certs/server.key" -out "$certs/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$certs/server.ext"
openssl x509 -req -in "$certs/server.csr" -CA "$certs/ca.pem" -CAkey "$certs/ca.key" \
  -CAcreateserial -days 2 -extfile "$certs/server.ext" -out "$certs/server.pem" 2>/dev/null

# Sluice on free ports, as trivup's broker would be configured (4 partitions by default).
SLUICE_ADMIN_PASSWORD=admin-secret "$bin" serve --data-dir "$work/data" \
  --kafka-listen SASL_SSL://127.0.0.1:0 --http-listen 127.0.0.1:0 --mqtt-listen 127.0.0.1:0 \
  --tls-cert "$certs/server.pem" --tls-key "$certs/server.key" --admin-user admin \
  --connections-max-reauth 10s --default-partitions 4 >"$work/sluice.out" 2>"$work/sluice.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -qx ready "$work/sluice.out" 2>/dev/null && break; sleep 0.1; done
grep -qx ready "$work/sluice.out" || { echo "sluice did not start: see $work/sluice.log" >&2; exit 1; }
addr=$(awk '/^kafka listening on/ {print $4}' "$work/sluice.out")
cat >"$work/test.conf" <<EOF
bootstrap.servers=$addr
security.protocol=SASL_SSL
ssl.ca.location=$certs/ca.pem
sasl.mechanism=SCRAM-SHA-512
sasl.username=admin
sasl.password=admin-secret
EOF

echo "librdkafka $(basename "$(dirname "$src")") tests against Sluice over SASL_SSL ($addr)"
failed=0
cd "$work/librdkafka/tests"
for t in "${tests[@]}"; do
  log=$work/$t.log
  # (A test that fails aborts the runner: the shell's word of it is not kept.)
  (LD_LIBRARY_PATH=../src:../src-cpp RDKAFKA_TEST_CONF=$work/test.conf TEST_KAFKA_VERSION=3.9.0 \
    TESTS=$t timeout 600 ./test-runner >"$log" 2>&1 || true) 2>/dev/null
  plain=$(sed 's/\x1b\[[0-9;]*m//g; s/\x1b(B//g' "$log")
  # One row per test that ran: name, state, and a skip's reason.
  rows=$(grep -E '^\| [0-9]{4}_' <<<"$plain" | awk -F'|' '{gsub(/ +/, " "); print $2 "|" $3 "|" $5}' || true)
  if [ -z "$rows" ]; then
    # An aborted run has no table: its passed sub-tests, and why it stopped.
    subs=$(grep -oE '\[ [a-z_]+:[0-9]+: .*: PASS \(' <<<"$plain" | sed -E 's/^\[ ([a-z_]+):[0-9]+: (.*): PASS \($/  \1 (\2) | PASSED |/' || true)
    why=$(grep -A1 -m1 '^### Test' <<<"$plain" | tail -1)
    rows=$(printf '%s | FAILED | %s\n%s' "$t" "${why:-no report; see $log}" "$subs")
  fi
  echo "$rows"
  grep -q 'FAILED' <<<"$rows" && failed=$((failed + 1))
done
echo "$failed of ${#tests[@]} failed; logs in $work"
