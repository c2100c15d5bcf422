#!/usr/bin/env bash
# Scenario 3: scenario 2 on the split deployment: redis-server, chat-history (embedded
# store), chat-presence when it is built, and two chat-gateway processes with Redis
# fan-out and JWT auth. Connections alternate between the two gateways, so every
# message crosses Redis to reach half of its room.
#
#   bench/cluster.sh         # RUNS=3 fixed-rate runs at 200 msg/s, then one ramp
source "$(dirname "$0")/lib.sh"
raise_nofile
build chat-history chat-gateway chat-bench
# Presence is optional: gateways run without it (presence queries answer unavailable).
(cd "$ROOT" && cargo build --release --quiet -p chat-presence 2>/dev/null) || true
HAVE_PRESENCE=0
[ -x "$SERVER_BIN/chat-presence" ] && HAVE_PRESENCE=1
machine | tee "$RESULTS/cluster-$STAMP-machine.txt"
SECRET="bench-secret-$(date +%s%N)"
start_redis
HISTORY_PORT=$(free_port)
start history env RUST_LOG=warn CHAT_GRPC_ADDR="127.0.0.1:$HISTORY_PORT" \
    CHAT_METRICS_ADDR="127.0.0.1:$(free_port)" CHAT_DATA_DIR="$WORK/data-history" \
    CHAT_MONGODB_URL= "$SERVER_BIN/chat-history"
wait_port "$HISTORY_PORT"
PRESENCE_PORT=$(free_port)
if [ "$HAVE_PRESENCE" = 1 ]; then
    start presence env RUST_LOG=warn CHAT_GRPC_ADDR="127.0.0.1:$PRESENCE_PORT" \
        CHAT_METRICS_ADDR="127.0.0.1:$(free_port)" CHAT_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" \
        "$SERVER_BIN/chat-presence"
    wait_port "$PRESENCE_PORT"
fi
TARGETS=()
for gw in 1 2; do
    port=$(free_port)
    start "gateway-$gw" env RUST_LOG=warn CHAT_HTTP_ADDR="127.0.0.1:$port" \
        CHAT_HISTORY_URL="http://127.0.0.1:$HISTORY_PORT" \
        CHAT_PRESENCE_URL="http://127.0.0.1:$PRESENCE_PORT" \
        CHAT_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" CHAT_AUTH_MODE=jwt \
        CHAT_JWT_SECRET="$SECRET" CHAT_GATEWAY_ID="gw-bench-$gw" "$SERVER_BIN/chat-gateway"
    wait_port "$port"
    TARGETS+=("ws://127.0.0.1:$port")
done
TARGET=$(IFS=,; echo "${TARGETS[*]}")
log "gateways $TARGET, history :$HISTORY_PORT, redis :$REDIS_PORT, presence: $HAVE_PRESENCE"
export CHAT_BENCH_JWT_SECRET="$SECRET"
bench_runs cluster-200 run --target "$TARGET" --connections 1000 --rooms 10 \
    --rate 200 --duration "${DURATION:-20}"
log "median p99 at 200 msg/s: $(median .rounds[0].latency_ms.p99 "$RESULTS"/cluster-200-*-"$STAMP".json) ms"
bench cluster-ramp run --target "$TARGET" --connections 1000 --rooms 10 \
    --rate 200 --duration 10 --ramp --p99-limit-ms 50
