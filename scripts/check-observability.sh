#!/usr/bin/env bash
# Checks the monitoring files offline (no Prometheus or Grafana server needed):
#   - prometheus/prometheus.yml: `promtool check config` (which also checks the rule files);
#   - prometheus/rules/*.yml: `promtool test rules prometheus/tests/*.yml`;
#   - grafana/dashboards/*.json: generated from grafana/generate.py and up to date; valid
#     against ../shared/schemas/grafana-dashboard.schema.json (check-jsonschema), when
#     ../shared exists (it does in this project's workspace, not on users' machines);
#     every datasource they name is the uid of grafana/provisioning/datasources; every
#     panel and variable query parses as PromQL (each is written into a rule file as a
#     recording rule, with Grafana's variables substituted, for `promtool check rules`);
#     every metric listed in docs/observability.md has a panel.
# The same dashboards' queries also run against a live Prometheus scraping the real
# services in the Rust test crates/chat/tests/prometheus.rs.
# Installs what is missing first (the Debian package prometheus, which has promtool;
# check-jsonschema into .venv-test).
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh

command -v promtool >/dev/null || { echo "check-observability: installing prometheus (promtool)"; apt_install prometheus; }

SCHEMA=../shared/schemas/grafana-dashboard.schema.json
VENV=.venv-test
CHECK_JSONSCHEMA=check-jsonschema==0.39.0
if [ -f "$SCHEMA" ] && [ ! -x "$VENV/bin/check-jsonschema" ]; then
    echo "check-observability: installing check-jsonschema into $VENV"
    venv_install "$VENV" "$CHECK_JSONSCHEMA"
fi

begin_checks

# --- Prometheus --------------------------------------------------------------------
check "promtool check config prometheus/prometheus.yml" \
    promtool check config prometheus/prometheus.yml
check "promtool test rules prometheus/tests/*.yml" \
    promtool test rules prometheus/tests/*.yml

# --- Grafana -----------------------------------------------------------------------
check "grafana/dashboards match grafana/generate.py" python3 grafana/generate.py --check

if [ -f "$SCHEMA" ]; then
    check "dashboards valid against $SCHEMA" \
        "$VENV/bin/check-jsonschema" --schemafile "$SCHEMA" grafana/dashboards/*.json
else
    echo "SKIPPED: ../shared not present (dashboard JSON schema check)"
fi

# Datasource uids, panel queries (into a rule file for promtool), metric coverage.
check "dashboard datasources use the provisioned uid; every metric has a panel" \
    python3 - grafana/provisioning/datasources/prometheus.yml docs/observability.md \
    "$tmp/panels.rules.yml" grafana/dashboards/*.json <<'EOF'
import json, re, sys

provisioning, doc, rules_out, *boards = sys.argv[1:]
uids = re.findall(r"^\s*uid:\s*(\S+)\s*$", open(provisioning).read(), re.M)
if len(uids) != 1:
    sys.exit(f"{provisioning}: expected one datasource uid, found {uids}")
uid = uids[0]

# Grafana's variables, replaced by values that keep the query valid PromQL.
SUBST = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h", "$instance": ".*"}
problems, exprs = [], []

def walk(node, where):
    if isinstance(node, dict):
        ds = node.get("datasource")
        if isinstance(ds, dict) and (ds.get("uid") != uid or ds.get("type") != "prometheus"):
            problems.append(f"{where}: datasource {ds} is not the provisioned uid {uid!r}")
        if isinstance(node.get("expr"), str):
            exprs.append((where, node["expr"]))
        for key, value in node.items():
            walk(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            walk(value, f"{where}[{i}]")

for path in boards:
    board = json.load(open(path))
    walk(board, path)
    for var in board.get("templating", {}).get("list", []):
        query = var.get("query", "")
        m = re.fullmatch(r"label_values\((.*),\s*\w+\)", query) if isinstance(query, str) else None
        if var.get("type") == "query":
            if not m:
                problems.append(f"{path}: variable {var.get('name')}: unexpected query {query!r}")
            else:
                exprs.append((f"{path}: variable {var['name']}", m.group(1)))
    panels = [p for p in board.get("panels", []) if p.get("type") != "row"]
    for p in panels:
        if not p.get("targets"):
            problems.append(f"{path}: panel {p.get('title')!r} has no query")

def substitute(expr):
    for var, value in SUBST.items():
        expr = expr.replace(var, value)
    if "$" in expr:
        problems.append(f"unknown Grafana variable in {expr!r}")
    return expr

with open(rules_out, "w") as out:
    out.write("groups:\n  - name: dashboard-panels\n    rules:\n")
    for i, (where, expr) in enumerate(exprs):
        out.write(f"      # {where}\n      - record: panel:query_{i}\n        expr: {json.dumps(substitute(expr))}\n")

# Every metric named in the reference's tables has a panel.
listed = [name for name in re.findall(r"^\|\s*`([a-z_:][a-z0-9_:]*)`", open(doc).read(), re.M)
          if "_" in name]
if not listed:
    problems.append(f"{doc}: no metric table found")
text = "\n".join(expr for _, expr in exprs)
for name in listed:
    if not re.search(rf"\b{re.escape(name)}(_bucket|_count|_sum)?\b", text):
        problems.append(f"{name} (listed in {doc}) has no dashboard panel")

if problems:
    sys.exit("\n".join(problems))
print(f"{len(exprs)} queries, {len(listed)} metrics covered, datasource uid {uid}")
EOF
if [ -f "$tmp/panels.rules.yml" ]; then
    check "every dashboard query parses (promtool check rules)" \
        promtool check rules "$tmp/panels.rules.yml"
fi

if [ "$failed" != 0 ]; then
    echo "check-observability: FAILED"
    exit 1
fi
echo "check-observability: all checks passed"
