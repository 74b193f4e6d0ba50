#!/usr/bin/env bash
# The whole test suite, from a fresh machine of this kind: services, binaries, every test.
#
#   tests/run.sh            set up the test environment, build, run unit + integration + e2e
#                           tests, then the packaging checks (tests/packaging/check.sh)
#   tests/run.sh -- ARGS    extra arguments for `cargo test` (e.g. a test name filter)
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
# Each section says when it starts, so a slow run shows where its time went.
section() { echo "== $* (at $(( $(date +%s) - start )) s)"; }

section "test environment"
bash tests/env/setup.sh

section "build"
# The end-to-end suite drives the real binaries, so they are built first.
cargo build --workspace --bins

section "Odoo test image"
bash tests/odoo-image/build.sh

section "tests"
[ "${1:-}" = "--" ] && shift
cargo test --workspace "$@"

section "packaging"
# The deb and rpm packages, built from the debug binaries above (`packaging/build.sh` builds
# release ones from the same definitions), linted, installed, run and removed on this host,
# then run under a real systemd in a container.
if ! bash tests/packaging/check.sh --profile dev --systemd; then
    echo "tests/run.sh: FAILED: the packaging checks (the FAIL lines of tests/packaging/check.sh above)" >&2
    exit 1
fi
