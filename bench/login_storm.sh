#!/usr/bin/env bash
# Scenario 2 during a log-in storm: the fan-out load of bench/fanout.sh (1,000
# connections, 10 rooms, 200 msg/s = 20,000 deliveries/s, 20 s) on the all-in-one,
# alternately alone and while `chat-bench logins` saturates the same process's accounts
# service (its loopback gRPC port, 32 log-ins in flight, argon2id with OWASP's
# parameters). Target: p99 at most 10% worse during the storm.
#
# Runs each pair per hashing pool in CONFIGS, `threads:priority` (CHAT_HASH_THREADS and
# CHAT_HASH_PRIORITY), by default the cores at idle and the same pool at the process's
# own priority (normal, how hashes ran before CHAT_HASH_PRIORITY): on a machine with
# few cores a pool as wide as the machine takes the CPU the deliveries need unless it
# yields to them.
#
#   bench/login_storm.sh                          # RUNS=3 pairs per pool
#   CONFIGS="2:low 1:normal" bench/login_storm.sh
#
# PLACEMENT=split measures the split deployment instead, where accounts runs in
# processes (containers, pods) of its own with CPU of its own: a separate
# `chat-accounts` (embedded store) and the log-in client pinned to the last CPU, the
# all-in-one (whose own accounts service then stays idle) and the load's client pinned
# to CPU 0. The storm then competes for nothing but the memory system and the kernel.
# CONFIGS default to 1:normal there (one hashing thread per core it has).
#
#   PLACEMENT=split bench/login_storm.sh
#
# STORM=spin (split placement only) is the control: instead of log-ins, a busy loop
# that touches no memory keeps the last CPU just as busy, so the difference between
# the two storms is what the hashes' 19 MiB sweeps cost the other core through the
# caches and memory they share.
#
#   PLACEMENT=split STORM=spin bench/login_storm.sh
source "$(dirname "$0")/lib.sh"
raise_nofile
PLACEMENT=${PLACEMENT:-shared}
case $PLACEMENT in
shared) build chat chat-bench ;;
split)
    build chat chat-accounts chat-bench
    LAST_CPU=$(($(nproc) - 1))
    ((LAST_CPU > 0)) || { log "PLACEMENT=split needs 2 CPUs"; exit 1; }
    ;;
*) log "PLACEMENT is shared or split, not $PLACEMENT"; exit 1 ;;
esac
STORM_KIND=${STORM:-logins}
case $PLACEMENT:$STORM_KIND in
*:logins | split:spin) ;;
*) log "STORM is logins, or spin with PLACEMENT=split, not $STORM_KIND"; exit 1 ;;
esac
machine | tee "$RESULTS/login-storm-$STAMP-machine.txt"
TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(32))')

# The all-in-one in dev mode (the load's ?user=) with a known internal token; its
# accounts' loopback port is the third `grpc listening on` it logs.
start_storm_chat() {
    local threads=$1 priority=$2
    CHAT_PORT=$(free_port)
    [ "$PLACEMENT" = split ] && SERVER_WRAP=(taskset -c 0)
    start chat env RUST_LOG=warn,chat_runtime=info CHAT_HTTP_ADDR="127.0.0.1:$CHAT_PORT" \
        CHAT_DATA_DIR="$WORK/data-storm-$CHAT_PORT" CHAT_AUTH_MODE=dev CHAT_REDIS_URL= \
        CHAT_MONGODB_URL= CHAT_INTERNAL_TOKEN="$TOKEN" CHAT_HASH_THREADS="$threads" \
        CHAT_HASH_PRIORITY="$priority" CHAT_HASH_QUEUE=256 "$SERVER_BIN/chat"
    CHAT_PID=$LAST_PID
    wait_port "$CHAT_PORT"
    ACCOUNTS=$(grep -o 'grpc listening on [0-9.:]*' "$WORK/chat.log" | sed -n 3p | awk '{print $4}')
    [ -n "$ACCOUNTS" ] || { log "no accounts address in $WORK/chat.log"; exit 1; }
    [ "$PLACEMENT" = split ] || return 0
    # The storm's target: an accounts service of its own, on the last CPU.
    local port
    port=$(free_port)
    SERVER_WRAP=(taskset -c "$LAST_CPU")
    start accounts env RUST_LOG=warn CHAT_GRPC_ADDR="127.0.0.1:$port" \
        CHAT_METRICS_ADDR="127.0.0.1:$(free_port)" CHAT_DATA_DIR="$WORK/data-accounts-$port" \
        CHAT_MONGODB_URL= CHAT_REDIS_URL= CHAT_INTERNAL_TOKEN="$TOKEN" \
        CHAT_HASH_THREADS="$threads" CHAT_HASH_PRIORITY="$priority" CHAT_HASH_QUEUE=256 \
        "$SERVER_BIN/chat-accounts"
    SERVER_WRAP=()
    CLIENT_WRAP=(taskset -c 0)
    wait_port "$port"
    ACCOUNTS="127.0.0.1:$port"
}

# The log-in client: beside the accounts service it calls when the placement is split.
storm_client() {
    if [ "$PLACEMENT" = split ]; then
        taskset -c "$LAST_CPU" "$@"
    else
        "$@"
    fi
}

if [ "$PLACEMENT" = split ]; then
    DEFAULT_CONFIGS="1:normal"
else
    DEFAULT_CONFIGS="$(nproc):idle $(nproc):normal"
fi
for config in ${CONFIGS:-$DEFAULT_CONFIGS}; do
    threads=${config%%:*}
    priority=${config#*:}
    start_storm_chat "$threads" "$priority"
    log "all-in-one on $CHAT_PORT, accounts on $ACCOUNTS, $threads hashing thread(s), $priority"
    tag="$PLACEMENT-$threads-$priority"
    [ "$STORM_KIND" = spin ] && tag="$PLACEMENT-spin"
    for ((run = 1; run <= ${RUNS:-3}; run++)); do
        bench "storm-$tag-quiet-$run" run --target "ws://127.0.0.1:$CHAT_PORT" \
            --connections 1000 --rooms 10 --rate 200 --duration "${DURATION:-20}"
        # The storm outlasts the load's connecting and measuring.
        if [ "$STORM_KIND" = spin ]; then
            storm_client timeout $((${DURATION:-20} + 25)) bash -c 'while :; do :; done' \
                >"$WORK/storm-$run.txt" 2>&1 &
        else
            CHAT_INTERNAL_TOKEN=$TOKEN storm_client "$BIN/chat-bench" logins \
                --target "http://$ACCOUNTS" --users 50 --concurrency 32 \
                --seconds $((${DURATION:-20} + 25)) --floor-seconds 0 \
                --out "$RESULTS/storm-$tag-logins-$run-$STAMP.json" >"$WORK/storm-$run.txt" 2>&1 &
        fi
        STORM=$!
        sleep 3
        bench "storm-$tag-storm-$run" run --target "ws://127.0.0.1:$CHAT_PORT" \
            --connections 1000 --rooms 10 --rate 200 --duration "${DURATION:-20}"
        if [ "$STORM_KIND" = spin ]; then
            kill "$STORM" 2>/dev/null || true
            wait "$STORM" 2>/dev/null || true
        else
            wait "$STORM" || log "the storm exited non-zero: $(cat "$WORK/storm-$run.txt")"
        fi
        cat "$WORK/storm-$run.txt"
    done
    log "$PLACEMENT, $threads thread(s), $priority: p99 alone $(median .rounds[0].latency_ms.p99 "$RESULTS"/storm-"$tag"-quiet-*-"$STAMP".json) ms," \
        "during the storm $(median .rounds[0].latency_ms.p99 "$RESULTS"/storm-"$tag"-storm-*-"$STAMP".json) ms," \
        "$([ "$STORM_KIND" = spin ] && echo "(a busy loop)" ||
            echo "log-ins $(median .per_sec "$RESULTS"/storm-"$tag"-logins-*-"$STAMP".json)/s")"
    stop_all
    CLIENT_WRAP=()
done
