#!/usr/bin/env bash
# criterion micro-benchmarks (crates/bench/benches): frame parse/serialise and the
# in-gateway fan-out path. Output in bench/results/micro-<time>.txt.
source "$(dirname "$0")/lib.sh"
machine | tee "$RESULTS/micro-$STAMP.txt"
(cd "$ROOT" && cargo bench -p chat-bench --bench frames --bench fanout -- --warm-up-time 1 --measurement-time 3 "$@") 2>&1 | tee -a "$RESULTS/micro-$STAMP.txt"
