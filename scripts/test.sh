#!/usr/bin/env bash
# The whole test suite: installs the test dependencies (scripts/test-deps.sh), then runs
# every unit, behaviour and integration test of the workspace against real redis-server
# and MongoDB-wire processes the tests start themselves on free ports.
#
#   scripts/test.sh              # everything
#   scripts/test.sh -p chat      # extra arguments go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/test-deps.sh
export CHAT_TEST_NX27017="${CHAT_TEST_NX27017:-$PWD/.venv-test/bin/nx-27017}"
if [ "$#" -eq 0 ]; then
    set -- --workspace
fi
exec cargo test --locked "$@"
