#!/usr/bin/env bash
# Peer comparison: scenario 2's load (1,000 connections, 10 rooms, 200 msg/s in, then a
# ramp to p99 <= 50 ms) with the same chat-bench client against
#   - Node.js Socket.IO v4, one process (bench/peers/node/socketio.js, --protocol socketio)
#   - Node.js Socket.IO v4 with the Redis adapter, two processes (the scaled-out design)
#   - a Node.js `ws` relay (bench/peers/node/ws.js, --protocol raw): no storage at all
# and the all-in-one chat again, in the same session, for a like-for-like table.
# The peers store nothing and promise nothing; the chat stores every message durably.
#
#   bench/peers.sh           # RUNS=3 fixed-rate runs per stack, then one ramp each
source "$(dirname "$0")/lib.sh"
raise_nofile
build chat chat-bench
(cd "$ROOT/bench/peers/node" && npm ci --no-audit --no-fund --silent)
machine | tee "$RESULTS/peers-$STAMP-machine.txt"
PEERS="$ROOT/bench/peers/node"
LOAD=(--connections 1000 --rooms 10)

measure() {
    local name=$1
    shift
    bench_runs "peers-$name-200" run "$@" "${LOAD[@]}" --rate 200 --duration "${DURATION:-20}"
    bench "peers-$name-ramp" run "$@" "${LOAD[@]}" --rate 200 --duration 10 --ramp \
        --p99-limit-ms 50
}

for stack in ${STACKS:-chat socketio socketio-redis ws}; do
    case $stack in
    chat)
        start_chat
        measure chat --target "ws://127.0.0.1:$CHAT_PORT"
        ;;
    socketio)
        port=$(free_port)
        start socketio env PORT="$port" node "$PEERS/socketio.js"
        wait_port "$port"
        measure socketio --protocol socketio --target "ws://127.0.0.1:$port"
        ;;
    socketio-redis)
        start_redis
        p1=$(free_port)
        start socketio-r1 env PORT="$p1" REDIS_URL="redis://127.0.0.1:$REDIS_PORT" node "$PEERS/socketio.js"
        p2=$(free_port)
        start socketio-r2 env PORT="$p2" REDIS_URL="redis://127.0.0.1:$REDIS_PORT" node "$PEERS/socketio.js"
        wait_port "$p1"
        wait_port "$p2"
        measure socketio-redis --protocol socketio --target "ws://127.0.0.1:$p1,ws://127.0.0.1:$p2"
        ;;
    ws)
        port=$(free_port)
        start ws env PORT="$port" node "$PEERS/ws.js"
        wait_port "$port"
        measure ws --protocol raw --target "ws://127.0.0.1:$port"
        ;;
    esac
    # Stop this stack before the next one so they never compete for the two cores.
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
done
