#!/usr/bin/env bash
# Scenario 3: scenario 2 on the split deployment: redis-server, chat-history (embedded
# store), chat-presence, and two chat-gateway processes with Redis fan-out and JWT auth
# (`start_split_stack` in bench/lib.sh). Connections alternate between the two
# gateways, so every message crosses Redis to reach half of its room.
#
#   bench/cluster.sh         # RUNS=3 fixed-rate runs at 200 msg/s, then one ramp
source "$(dirname "$0")/lib.sh"
raise_nofile
build chat-history chat-presence chat-gateway chat-bench
machine | tee "$RESULTS/cluster-$STAMP-machine.txt"
SECRET="bench-secret-$(date +%s%N)"
start_redis
GATEWAY_ENV=(CHAT_AUTH_MODE=jwt CHAT_JWT_SECRET="$SECRET")
start_split_stack "redis://127.0.0.1:$REDIS_PORT"
log "gateways $TARGET, history :$HISTORY_PORT, presence :$PRESENCE_PORT, redis :$REDIS_PORT"
export CHAT_BENCH_JWT_SECRET="$SECRET"
bench_runs cluster-200 run --target "$TARGET" --connections 1000 --rooms 10 \
    --rate 200 --duration "${DURATION:-20}"
log "median p99 at 200 msg/s: $(median .rounds[0].latency_ms.p99 "$RESULTS"/cluster-200-*-"$STAMP".json) ms"
bench cluster-ramp run --target "$TARGET" --connections 1000 --rooms 10 \
    --rate 200 --duration 10 --ramp --p99-limit-ms 50
