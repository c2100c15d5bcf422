#!/usr/bin/env bash
# The whole test suite: installs the test dependencies (scripts/test-deps.sh), checks that
# every reference in docs and code leads somewhere (scripts/check-docs.sh), then runs
# every unit, behaviour and integration test of the workspace against real redis-server
# and MongoDB-wire processes the tests start themselves on free ports (crates/e2e runs
# the service binaries behind real nginx, so they are built first); then the deployment
# files are validated offline (scripts/check-deploy.sh), so are the Prometheus rules and
# Grafana dashboards (scripts/check-observability.sh), and the web client is tested end
# to end in headless Chromium (scripts/browser-test.sh).
#
#   scripts/test.sh              # everything, then deployment checks and the browser test
#   scripts/test.sh -p chat      # extra arguments go to `cargo test` (nothing after it)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/test-deps.sh
scripts/check-docs.sh
export CHAT_TEST_NX27017="${CHAT_TEST_NX27017:-$PWD/.venv-test/bin/nx-27017}"
# crates/e2e starts these binaries itself; cargo test does not build them for it.
cargo build --locked --bins -p chat-gateway -p chat-history -p chat-presence -p chat-probe
if [ "$#" -gt 0 ]; then
    exec cargo test --locked "$@"
fi
cargo test --locked --workspace
scripts/check-deploy.sh
scripts/check-observability.sh
exec scripts/browser-test.sh
