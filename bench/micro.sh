#!/usr/bin/env bash
# criterion micro-benchmarks (crates/bench/benches): frame parse/serialise, the
# in-gateway fan-out path, and token verification on connect (accounts' EdDSA vs an
# external HS256). Output in bench/results/micro-<time>.txt.
source "$(dirname "$0")/lib.sh"
machine | tee "$RESULTS/micro-$STAMP.txt"
(cd "$ROOT" && cargo bench -p chat-bench --bench frames --bench fanout --bench auth -- --warm-up-time 1 --measurement-time 3 "$@") 2>&1 | tee -a "$RESULTS/micro-$STAMP.txt"
