#!/usr/bin/env bash
# Runs each libFuzzer target (fuzz/) for a bounded time, starting from the seed corpora
# in fuzz/corpus/. Any crash fails the run and leaves the input in fuzz/artifacts/.
#
#   scripts/fuzz.sh          # every target, FUZZ_SECONDS each (default 30)
#   scripts/fuzz.sh store_keys
#
# cargo-fuzz needs nightly-only compiler flags (sanitizers); RUSTC_BOOTSTRAP=1 enables
# them on the stable toolchain, the only one these machines have.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-30}"
if ! command -v cargo-fuzz >/dev/null; then
    echo "fuzz: installing cargo-fuzz"
    cargo install --locked cargo-fuzz@0.13.2
fi
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=(client_frame store_keys auth_bodies)
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for target in "${targets[@]}"; do
    echo "== fuzz $target for ${seconds}s"
    # New inputs go to a scratch corpus; the seeds in the repo stay as they are.
    mkdir -p "$work/$target"
    status=0
    RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz "$target" "$work/$target" "fuzz/corpus/$target" \
        -- -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1 \
        > "$work/$target.log" 2>&1 || status=$?
    grep -E 'Done [0-9]+ runs|stat::number_of_executed_units|panicked|ERROR|SUMMARY' "$work/$target.log" || true
    if [ "$status" -ne 0 ]; then
        tail -40 "$work/$target.log" >&2
        echo "fuzz: $target FAILED (input saved under fuzz/artifacts/$target)" >&2
        exit 1
    fi
done
echo "fuzz: all targets ran without a finding"
