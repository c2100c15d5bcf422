# Shared by scripts/check-deploy.sh, scripts/check-observability.sh and
# scripts/test-deps.sh; sourced (`. scripts/lib.sh`) from the repository root.

# Runs "$@" as root (directly, or through sudo); exits if neither is possible.
as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "need root to run: $*" >&2; exit 1
    fi
}

# Installs Debian packages, running `apt-get update` once per script at most.
apt_updated=
apt_install() {
    if [ -z "$apt_updated" ]; then
        as_root apt-get update -qq
        apt_updated=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# venv_install VENV PACKAGE...: creates the Python venv VENV unless it has a pip
# (installing python3-venv if need be), then pip-installs the packages into it.
venv_install() {
    local venv=$1
    shift
    if [ ! -x "$venv/bin/pip" ] && ! python3 -m venv "$venv" 2>/dev/null; then
        rm -rf "$venv"
        apt_install python3-venv
        python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install -q --disable-pip-version-check "$@"
}

# For check scripts: begin_checks makes $tmp (removed on exit) and sets failed=0;
# then `check WHAT COMMAND...` runs COMMAND, prints "ok" or "FAIL" and its output, and
# sets failed=1 on failure.
begin_checks() {
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    failed=0
}
check() {
    local what=$1
    shift
    if "$@" >"$tmp/out" 2>&1; then
        echo "ok    $what"
    else
        echo "FAIL  $what"
        sed 's/^/      /' "$tmp/out"
        failed=1
    fi
}
