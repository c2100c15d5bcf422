#!/usr/bin/env bash
# The web client's tests in a real browser: installs what is missing (Debian `chromium`,
# the pinned npm packages of tests/browser), builds the `chat` binary, then runs the unit
# tests of the client's logic and the end-to-end tests in headless Chromium (dev names,
# JWT, and the accounts journey), one file at a time.
#
#   scripts/browser-test.sh
#
# CHAT_BIN=<path> uses that binary instead of building one; CHROMIUM_BIN=<path> another
# Chromium (default /usr/bin/chromium). Screenshots and the server's log are written to
# tests-artifacts/browser/.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "browser-test: need root or sudo to run: $*" >&2
        return 1
    fi
}

export CHROMIUM_BIN="${CHROMIUM_BIN:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM_BIN" ]; then
    echo "browser-test: installing chromium (Debian package)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "browser-test: node (>= 20.19) and npm are required" >&2
    exit 1
fi

# playwright-core never downloads a browser on install; this makes sure nothing else does.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
installed_matches_pin() {
    node -e '
        const pin = require("./tests/browser/package.json").devDependencies["playwright-core"];
        const got = require("./tests/browser/node_modules/playwright-core/package.json").version;
        process.exit(pin === got ? 0 : 1);
    ' 2>/dev/null
}
if ! installed_matches_pin; then
    echo "browser-test: npm ci in tests/browser"
    (cd tests/browser && npm ci --ignore-scripts --no-audit --no-fund)
fi

if [ -z "${CHAT_BIN:-}" ]; then
    cargo build --locked -p chat
    CHAT_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/chat"
fi
export CHAT_BIN

cd tests/browser
# The suite bounds every wait itself; this is the backstop if something hangs anyway.
exec timeout --kill-after=10 900 \
    node --test --test-concurrency=1 --test-reporter=spec rooms.test.mjs auth.test.mjs e2e.test.mjs accounts.test.mjs
