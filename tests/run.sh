#!/usr/bin/env bash
# The whole test suite, from a fresh machine of this kind: services, binaries, every test.
#
#   tests/run.sh            set up the test environment, build, run unit + integration + e2e tests
#   tests/run.sh -- ARGS    extra arguments for `cargo test` (e.g. a test name filter)
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== test environment"
bash tests/env/setup.sh

echo "== build"
# The end-to-end suite drives the real binaries, so they are built first.
cargo build --workspace --bins

echo "== Odoo test image"
bash tests/odoo-image/build.sh

echo "== tests"
[ "${1:-}" = "--" ] && shift
cargo test --workspace "$@"
