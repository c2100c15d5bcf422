#!/usr/bin/env bash
# Scenario 2: fan-out on the all-in-one (embedded store, in-process fan-out). 1,000
# connections in 10 rooms (100 members each), every member sending in turn: 200 msg/s
# in = 20,000 deliveries/s, 20 s per run (target p99 <= 5 ms); then a ramp from
# 200 msg/s, x1.5 per 10 s round, then bisection, to the highest delivered msg/s with
# p99 <= 50 ms and nothing missing, duplicated or out of order.
#
#   bench/fanout.sh          # RUNS=3 fixed-rate runs, then one ramp
source "$(dirname "$0")/lib.sh"
raise_nofile
build chat chat-bench
machine | tee "$RESULTS/fanout-$STAMP-machine.txt"
start_chat
log "chat pid $CHAT_PID on port $CHAT_PORT"
TARGET="ws://127.0.0.1:$CHAT_PORT"
bench_runs fanout-200 run --target "$TARGET" --connections 1000 --rooms 10 \
    --rate 200 --duration "${DURATION:-20}"
log "median p99 at 200 msg/s: $(median .rounds[0].latency_ms.p99 "$RESULTS"/fanout-200-*-"$STAMP".json) ms"
bench fanout-ramp run --target "$TARGET" --connections 1000 --rooms 10 \
    --rate 200 --duration 10 --ramp --p99-limit-ms 50
