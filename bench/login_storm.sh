#!/usr/bin/env bash
# Scenario 2 during a log-in storm: the fan-out load of bench/fanout.sh (1,000
# connections, 10 rooms, 200 msg/s = 20,000 deliveries/s, 20 s) on the all-in-one,
# alternately alone and while `chat-bench logins` saturates the same process's accounts
# service (its loopback gRPC port, 32 log-ins in flight, argon2id with OWASP's
# parameters). Target: p99 at most 10% worse during the storm.
#
# Runs each pair per hashing pool in CONFIGS, `threads:priority` (CHAT_HASH_THREADS and
# CHAT_HASH_PRIORITY), by default the cores at idle and the same pool at the process's
# own priority (normal, how hashes ran before CHAT_HASH_PRIORITY): on a machine with few cores a pool as wide as the machine takes
# the CPU the deliveries need unless it yields to them.
#
#   bench/login_storm.sh                          # RUNS=3 pairs per pool
#   CONFIGS="2:low 1:normal" bench/login_storm.sh
source "$(dirname "$0")/lib.sh"
raise_nofile
build chat chat-bench
machine | tee "$RESULTS/login-storm-$STAMP-machine.txt"
TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(32))')

# The all-in-one in dev mode (the load's ?user=) with a known internal token; its
# accounts' loopback port is the third `grpc listening on` it logs.
start_storm_chat() {
    local threads=$1 priority=$2
    CHAT_PORT=$(free_port)
    start chat env RUST_LOG=warn,chat_runtime=info CHAT_HTTP_ADDR="127.0.0.1:$CHAT_PORT" \
        CHAT_DATA_DIR="$WORK/data-storm-$CHAT_PORT" CHAT_AUTH_MODE=dev CHAT_REDIS_URL= \
        CHAT_MONGODB_URL= CHAT_INTERNAL_TOKEN="$TOKEN" CHAT_HASH_THREADS="$threads" \
        CHAT_HASH_PRIORITY="$priority" CHAT_HASH_QUEUE=256 "$SERVER_BIN/chat"
    CHAT_PID=$LAST_PID
    wait_port "$CHAT_PORT"
    ACCOUNTS=$(grep -o 'grpc listening on [0-9.:]*' "$WORK/chat.log" | sed -n 3p | awk '{print $4}')
    [ -n "$ACCOUNTS" ] || { log "no accounts address in $WORK/chat.log"; exit 1; }
}

for config in ${CONFIGS:-$(nproc):idle $(nproc):normal}; do
    threads=${config%%:*}
    priority=${config#*:}
    start_storm_chat "$threads" "$priority"
    log "all-in-one on $CHAT_PORT, accounts on $ACCOUNTS, $threads hashing thread(s), $priority"
    tag="$threads-$priority"
    for ((run = 1; run <= ${RUNS:-3}; run++)); do
        bench "storm-$tag-quiet-$run" run --target "ws://127.0.0.1:$CHAT_PORT" \
            --connections 1000 --rooms 10 --rate 200 --duration "${DURATION:-20}"
        # The storm outlasts the load's connecting and measuring.
        CHAT_INTERNAL_TOKEN=$TOKEN "$BIN/chat-bench" logins --target "http://$ACCOUNTS" \
            --users 50 --concurrency 32 --seconds $((${DURATION:-20} + 25)) --floor-seconds 0 \
            --out "$RESULTS/storm-$tag-logins-$run-$STAMP.json" >"$WORK/storm-$run.txt" 2>&1 &
        STORM=$!
        sleep 3
        bench "storm-$tag-storm-$run" run --target "ws://127.0.0.1:$CHAT_PORT" \
            --connections 1000 --rooms 10 --rate 200 --duration "${DURATION:-20}"
        wait "$STORM" || log "the storm exited non-zero: $(cat "$WORK/storm-$run.txt")"
        cat "$WORK/storm-$run.txt"
    done
    log "$threads thread(s), $priority: p99 alone $(median .rounds[0].latency_ms.p99 "$RESULTS"/storm-"$tag"-quiet-*-"$STAMP".json) ms," \
        "during the storm $(median .rounds[0].latency_ms.p99 "$RESULTS"/storm-"$tag"-storm-*-"$STAMP".json) ms," \
        "log-ins $(median .per_sec "$RESULTS"/storm-"$tag"-logins-*-"$STAMP".json)/s"
    kill "$CHAT_PID"
    wait "$CHAT_PID" 2>/dev/null || true
done
