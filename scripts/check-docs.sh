#!/usr/bin/env bash
# Checks that every reference in the repository leads somewhere a fresh clone has:
#   (a) no tracked text file cites a document that is not in the repository (the
#       design, protocol or style notes the project started from, or the directory
#       beside the checkout, which only scripts/check-observability.sh may name: it
#       reads the dashboard schema there and says SKIPPED without it), nor uses wording that only makes sense with them at hand;
#   (b) every relative Markdown link in a *.md file resolves (and so does its #anchor
#       when it points into a Markdown file), and every repository path cited in a
#       .md, .rs, .sh, .yml or .yaml file (docs/…, crates/…, scripts/…, bench/…,
#       deploy/…, prometheus/…, grafana/…, fuzz/…, tests/browser/…) exists.
# Prints file:line for each offence and exits 1 if there is any. Fast (no build), so
# scripts/test.sh runs it first.
#
#   scripts/check-docs.sh
set -euo pipefail
cd "$(dirname "$0")/.."

exec python3 - <<'EOF'
import os, re, subprocess, sys

SELF = "scripts/check-docs.sh"

# (a) Documents outside the repository. Upper case: docs/protocol.md is ours.
MISSING_DOCS = re.compile(r"\b(DESIGN|PROTOCOL|STYLE)\.md\b")
SHARED = re.compile(r"\.\./shared\b")
# The directory beside the checkout holds the Grafana dashboard JSON schema; the one
# check that reads it is skipped (and says so) without it.
SHARED_ALLOWED = {"scripts/check-observability.sh"}
# Wording that only makes sense with those documents at hand. "The seed" meant the
# system the project started from; a fuzzing "seed corpus" is fine.
PHRASES = re.compile(
    r"\bthe brief\b|\boperator contract\b|\bthe design\b(?! of\b)|\bdesign (brief|document)\b"
    r"|\bthe seed\b(?! corp)|\bseed's\b|\bseed (names?|famil\w*|metrics?|buckets?|design)\b",
    re.I,
)

# Offences in files that are being rewritten under issue #12 (items 2-4) and must not
# be edited meanwhile: (path, text of the offending line). Remove an entry once its
# file is fixed; an entry that matches nothing any more is reported as stale.
PENDING = [
]

# (b) Paths. A cited path starts with one of these directories and is not part of a
# longer path (../../deploy/… is relative to something else).
PATH_TOKEN = re.compile(
    r"(?<![\w./~$-])((?:docs|crates|scripts|bench|deploy|prometheus|grafana|fuzz|tests/browser)"
    r"/[\w./*<>{}\[\]$-]*)"
)
PATH_EXTS = (".md", ".rs", ".sh", ".yml", ".yaml")
# Created by runs and git-ignored, so absent from a fresh clone.
GENERATED = ("bench/results/", "fuzz/artifacts/", "fuzz/target/", "fuzz/coverage/")
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")

def tracked():
    out = subprocess.run(["git", "ls-files", "-z"], capture_output=True, check=True).stdout
    for path in out.decode().split("\0"):
        if not path or path == "Cargo.lock" or not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            data = f.read()
        if b"\0" in data[:8192]:
            continue
        try:
            yield path, data.decode("utf-8")
        except UnicodeDecodeError:
            continue

def slug(heading):
    # GitHub's anchors: lower case, punctuation dropped, spaces to hyphens.
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")

anchor_cache = {}
def anchors(path):
    if path not in anchor_cache:
        seen, found, fence = {}, set(), False
        for line in open(path, encoding="utf-8"):
            if line.startswith("```"):
                fence = not fence
            m = None if fence else HEADING.match(line)
            if m:
                s = slug(m.group(2))
                n = seen.get(s, 0)
                seen[s] = n + 1
                found.add(s if n == 0 else f"{s}-{n}")
        anchor_cache[path] = found
    return anchor_cache[path]

def clean(token):
    token = token.split("#", 1)[0]
    token = re.sub(r"::.*$", "", token)
    token = re.sub(r":\d.*$", "", token)
    return token.rstrip(".,;:!?'\"`)]")

offences, pending_hits = [], set()

def offend(path, n, line, what):
    for i, (p, text) in enumerate(PENDING):
        if p == path and text in line:
            pending_hits.add(i)
            return
    offences.append(f"{path}:{n}: {what}")

for path, text in tracked():
    if path == SELF:
        continue
    is_md = path.endswith(".md")
    cites_paths = path.endswith(PATH_EXTS)
    fence = False
    for n, line in enumerate(text.splitlines(), 1):
        for m in MISSING_DOCS.finditer(line):
            offend(path, n, line, f"cites {m.group(0)}, which is not in the repository")
        if SHARED.search(line) and path not in SHARED_ALLOWED:
            offend(path, n, line, "cites ../shared, which is not in the repository")
        for m in PHRASES.finditer(line):
            offend(path, n, line, f"'{m.group(0)}' points at a document not in the repository")
        if is_md:
            if line.startswith("```"):
                fence = not fence
            if not fence:
                for target in MD_LINK.findall(line):
                    if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("/"):
                        continue
                    file, _, anchor = target.partition("#")
                    dest = os.path.normpath(os.path.join(os.path.dirname(path), file)) if file else path
                    if not os.path.exists(dest):
                        offend(path, n, line, f"link to {target}: {dest} does not exist")
                    elif anchor and dest.endswith(".md") and anchor not in anchors(dest):
                        offend(path, n, line, f"link to {target}: no heading #{anchor} in {dest}")
        # An image name (grafana/grafana:11) is not a path.
        if cites_paths and not re.match(r"\s*image:", line):
            for token in PATH_TOKEN.findall(line):
                token = clean(token)
                if re.search(r"[*<>{}\[\]$]", token) or token.startswith(GENERATED):
                    continue
                if not os.path.exists(token):
                    offend(path, n, line, f"cites {token}, which does not exist")

for i, (p, text) in enumerate(PENDING):
    if i not in pending_hits:
        print(f"check-docs: stale PENDING entry (fixed? remove it): {p}: {text}")

for o in offences:
    print(o)
if offences:
    sys.exit(f"check-docs: {len(offences)} offence(s)")
print(f"check-docs: ok ({len(pending_hits)} known offence(s) in files being rewritten, see PENDING)")
EOF
