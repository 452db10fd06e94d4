#!/usr/bin/env bash
# The whole test suite: installs what it needs, checks formatting and lints, runs the Rust
# tests (unit, golden files, metadata conformance against a real etcd) and the end-to-end
# tests with real clients, etcd and an S3-compatible server.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/test-deps.sh

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo build"
cargo build --workspace --all-targets --quiet

echo "== rust tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi

echo "== end-to-end tests"
python3 -m pytest tests/e2e -q -p no:cacheprovider -W ignore::DeprecationWarning "$@"
