#!/usr/bin/env bash
# Installs what the test suite needs beyond Rust, idempotently:
#   - redis-server (Debian package), used by the tests' own private servers (and its
#     redis-cli, which builds the Redis Cluster of the sharded pub/sub tests);
#   - nginx (Debian package), the load balancer of the end-to-end tests;
#   - prometheus (Debian package), the real Prometheus of crates/chat/tests/prometheus.rs
#     (and its promtool, for scripts/check-observability.sh);
#   - a Python venv in .venv-test with nx-27017, the MongoDB wire-protocol stand-in
#     (see docs/testing.md).
# Safe to run again; does nothing that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh

if ! command -v redis-server >/dev/null; then
    echo "test-deps: installing redis-server"
    apt_install redis-server
fi
# The end-to-end tests (crates/e2e) put real nginx in front of the gateways.
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
    echo "test-deps: installing nginx"
    apt_install nginx
fi
# crates/chat/tests/prometheus.rs scrapes the services with a real Prometheus.
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
    echo "test-deps: installing prometheus"
    apt_install prometheus
fi

VENV=.venv-test
NX_PACKAGES=(nx-27017==0.8.1 neosqlite==1.17.2 pymongo==4.20.1 uvloop==0.23.0)
if [ ! -x "$VENV/bin/nx-27017" ]; then
    echo "test-deps: creating $VENV with nx-27017"
    venv_install "$VENV" "${NX_PACKAGES[@]}"
fi
echo "test-deps: redis-server $(redis-server --version | awk '{print $3}'), nx-27017 in $VENV"
