#!/usr/bin/env bash
# Accounts: log-ins per second and their p99 at saturation with 1 and 2 chat-accounts
# replicas, against the floor: raw argon2id hashes per second on one core (OWASP's
# m = 19 MiB, t = 2, p = 1, through the service's own hasher), measured by the same
# chat-bench process just before each run. Target: log-ins/s within 20% of
# floor x the cores the replicas can use (a log-in is one hash plus a token; the hash
# is the floor). Also reported: log-ins per CPU-second the replicas used (their
# utime + stime over the run), against the same floor: the service's own overhead on
# top of the hash, whatever else shares the machine.
#
# The replicas share a store and Redis as in production: MongoDB at
# CHAT_BENCH_MONGODB_URL when set, else the nx-27017 stand-in the tests use (found at
# CHAT_TEST_NX27017 or .venv-test/bin/nx-27017; its speed is not MongoDB's, but a
# log-in's two store calls are small next to its hash). Each replica gets
# CHAT_HASH_THREADS=$THREADS (default: all cores, as the service defaults to).
#
#   bench/logins.sh                 # RUNS=3, 20 s each, 1 then 2 replicas
#
# PIN=1 gives the replica a core of its own, as a deployment would: the replica (one
# hashing thread) on the last CPU; the client, the store and Redis on CPU 0; one
# replica only. The floor is then measured on CPU 0 while the replica idles, and the
# target reads: log-ins/s within 20% of the floor.
#
#   PIN=1 bench/logins.sh
source "$(dirname "$0")/lib.sh"
build chat-accounts chat-bench
machine | tee "$RESULTS/logins-$STAMP-machine.txt"
REPLICAS=${REPLICAS:-1 2}
if [ "${PIN:-0}" = 1 ]; then
    LAST_CPU=$(($(nproc) - 1))
    ((LAST_CPU > 0)) || { log "PIN=1 needs 2 CPUs"; exit 1; }
    THREADS=${THREADS:-1}
    REPLICAS=1
    SERVER_WRAP=(taskset -c 0)
    CLIENT_WRAP=(taskset -c 0)
fi
THREADS=${THREADS:-$(nproc)}
TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
start_redis
if [ -n "${CHAT_BENCH_MONGODB_URL:-}" ]; then
    MONGO_URL=$CHAT_BENCH_MONGODB_URL
else
    NX=${CHAT_TEST_NX27017:-$ROOT/.venv-test/bin/nx-27017}
    [ -x "$NX" ] || { log "no nx-27017 at $NX: run scripts/test-deps.sh or set CHAT_BENCH_MONGODB_URL"; exit 1; }
    MONGO_PORT=$(free_port)
    start nx "$NX" --db memory --host 127.0.0.1 -p "$MONGO_PORT"
    wait_port "$MONGO_PORT"
    MONGO_URL="mongodb://127.0.0.1:$MONGO_PORT"
fi
TARGETS=()
ACCOUNTS_PIDS=()
start_accounts() {
    local port metrics
    port=$(free_port)
    metrics=$(free_port)
    local wrap=("${SERVER_WRAP[@]}")
    [ "${PIN:-0}" = 1 ] && SERVER_WRAP=(taskset -c "$LAST_CPU")
    start "accounts-$port" env RUST_LOG=warn CHAT_GRPC_ADDR="127.0.0.1:$port" \
        CHAT_METRICS_ADDR="127.0.0.1:$metrics" CHAT_INTERNAL_TOKEN="$TOKEN" \
        CHAT_MONGODB_URL="$MONGO_URL" CHAT_MONGODB_DB="bench_$STAMP" \
        CHAT_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" CHAT_HASH_THREADS="$THREADS" \
        CHAT_HASH_QUEUE=256 "$SERVER_BIN/chat-accounts"
    SERVER_WRAP=("${wrap[@]}")
    ACCOUNTS_PIDS+=("$LAST_PID")
    wait_port "$port"
    TARGETS+=("http://127.0.0.1:$port")
}
for replicas in $REPLICAS; do
    while ((${#TARGETS[@]} < replicas)); do start_accounts; done
    targets=$(IFS=,; echo "${TARGETS[*]}")
    for ((run = 1; run <= ${RUNS:-3}; run++)); do
        # The replicas' CPU over the whole run: the sign-ups (one hash each) and the
        # log-ins; the floor is measured in chat-bench's own process.
        before=$(server_cpu "${ACCOUNTS_PIDS[@]}")
        CHAT_INTERNAL_TOKEN=$TOKEN bench "logins-$replicas-$run" logins --target "$targets" \
            --users 200 --concurrency "${CONCURRENCY:-32}" --seconds "${SECONDS_PER_RUN:-20}" \
            --floor-seconds 5
        used=$(echo "$before $(server_cpu "${ACCOUNTS_PIDS[@]}")" | awk '{print $3 + $4 - $1 - $2}')
        json="$RESULTS/logins-$replicas-$run-$STAMP.json"
        log "run $run: replicas used $used CPU-s for $(jq '.ok + .users' "$json") hashes:" \
            "$(jq --argjson cpu "$used" '(.ok + .users) / $cpu | floor' "$json")/s per CPU-second"
    done
    log "$replicas replica(s): median $(median .per_sec "$RESULTS"/logins-"$replicas"-*-"$STAMP".json) log-ins/s," \
        "p99 $(median .latency_ms.p99 "$RESULTS"/logins-"$replicas"-*-"$STAMP".json) ms," \
        "floor $(median .hash_floor_per_core "$RESULTS"/logins-"$replicas"-*-"$STAMP".json)/s per core"
done
