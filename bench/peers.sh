#!/usr/bin/env bash
# Peer comparison: scenario 2's load (1,000 connections, 10 rooms, 200 msg/s in, then a
# ramp to p99 <= 50 ms) with the same chat-bench client against
#   - the all-in-one chat (`chat`)
#   - the split chat: 2 gateways + Redis + history + presence (`split`,
#     `start_split_stack` in bench/lib.sh)
#   - Node.js Socket.IO v4, one process (bench/peers/node/socketio.js, --protocol socketio)
#   - Node.js Socket.IO v4 with the Redis adapter, two processes (`socketio-redis`)
#   - a Node.js `ws` relay (bench/peers/node/ws.js, --protocol raw): no storage at all
#   - a FastAPI + Redis pub/sub relay, two processes (bench/peers/python/relay.py,
#     --protocol raw): the architecture this project replaces, storing nothing (`fastapi`)
# all in the same session, for a like-for-like table. The peers store nothing and
# promise nothing; the chat stores every message durably.
# Then, per stack, the marginal CPU per delivery at 200 msg/s (`cpu_per_delivery` in
# bench/lib.sh: servers on CPU 0, client on CPU 1, a 20 s run minus a 5 s run) and the
# marginal CPU per connection (`cpu_per_connect`: 5,000 connections minus 1,000).
#
#   bench/peers.sh                 # RUNS=3 fixed-rate runs per stack, a ramp, CPU runs
#   CPU=only STACKS="chat split fastapi" bench/peers.sh   # only the CPU figures
#   CPU=0 bench/peers.sh           # no CPU runs
source "$(dirname "$0")/lib.sh"
raise_nofile
build chat chat-gateway chat-history chat-presence chat-bench
STACKS=${STACKS:-chat split socketio socketio-redis ws fastapi}
if [[ " $STACKS " == *" socketio"* || " $STACKS " == *" ws "* ]]; then
    (cd "$ROOT/bench/peers/node" && npm ci --no-audit --no-fund --silent)
fi
PYPEER="$ROOT/bench/peers/python"
if [[ " $STACKS " == *" fastapi "* ]]; then
    [ -x "$PYPEER/.venv/bin/python" ] || python3 -m venv "$PYPEER/.venv"
    "$PYPEER/.venv/bin/pip" install --quiet --disable-pip-version-check -r "$PYPEER/requirements.txt"
fi
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

# A Node.js peer (SCRIPT, a file in $PEERS) on a free port with extra NAME=VALUE
# environment; sets NODE_PORT once it listens.
start_node() {
    local name=$1 script=$2
    shift 2
    NODE_PORT=$(free_port)
    start "$name" env PORT="$NODE_PORT" "$@" node "$PEERS/$script"
    wait_port "$NODE_PORT"
}

# Each starts one stack and sets TARGET_ARGS.
stack_chat() {
    start_chat
    TARGET_ARGS=(--target "ws://127.0.0.1:$CHAT_PORT")
}
stack_split() {
    start_redis
    start_split_stack "redis://127.0.0.1:$REDIS_PORT"
    TARGET_ARGS=(--target "$TARGET")
}
stack_socketio() {
    start_node socketio socketio.js
    TARGET_ARGS=(--protocol socketio --target "ws://127.0.0.1:$NODE_PORT")
}
stack_socketio-redis() {
    local p1
    start_redis
    start_node socketio-r1 socketio.js REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
    p1=$NODE_PORT
    start_node socketio-r2 socketio.js REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
    TARGET_ARGS=(--protocol socketio --target "ws://127.0.0.1:$p1,ws://127.0.0.1:$NODE_PORT")
}
stack_ws() {
    start_node ws ws.js
    TARGET_ARGS=(--protocol raw --target "ws://127.0.0.1:$NODE_PORT")
}
stack_fastapi() {
    local i port targets=()
    start_redis
    for i in 1 2; do
        port=$(free_port)
        start "fastapi-$i" env PORT="$port" REDIS_URL="redis://127.0.0.1:$REDIS_PORT" \
            "$PYPEER/.venv/bin/python" "$PYPEER/relay.py"
        targets+=("ws://127.0.0.1:$port")
    done
    for port in "${targets[@]}"; do wait_port "${port##*:}"; done
    TARGET_ARGS=(--protocol raw --target "$(IFS=,; echo "${targets[*]}")")
}

for stack in $STACKS; do
    if [ "${CPU:-1}" != only ]; then
        "stack_$stack"
        measure "$stack" "${TARGET_ARGS[@]}"
        # Stop this stack before the next one so they never compete for the two cores.
        stop_all
    fi
    if [ "${CPU:-1}" != 0 ]; then
        cpu_per_delivery "peers-$stack" "stack_$stack" "${LOAD[@]}" --rate 200
        cpu_per_connect "peers-$stack" "stack_$stack"
    fi
done

