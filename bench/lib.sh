# Shared helpers of the benchmark scenarios; sourced, not run.
#
# Everything a scenario starts runs on 127.0.0.1 on free ports and is stopped on exit.
# Results go to bench/results/<scenario>-<UTC time>.{json,txt}.

set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
# The server binaries can be swapped for a before/after comparison of a patch, e.g.
# SERVER_BIN=/tmp/patched/target/release bench/fanout.sh
SERVER_BIN="${SERVER_BIN:-$BIN}"
RESULTS="$ROOT/bench/results"
mkdir -p "$RESULTS"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "${BENCH_TMP:-$ROOT/target}"
WORK="$(mktemp -d -p "${BENCH_TMP:-$ROOT/target}" bench.XXXXXX)"
PIDS=()
# Command prefixes: `start` runs every server under SERVER_WRAP, `bench` runs chat-bench
# under CLIENT_WRAP (both empty unless a measurement pins them to CPUs or runs the
# server under valgrind).
SERVER_WRAP=()
CLIENT_WRAP=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

log() { printf '== %s\n' "$*" >&2; }

# The descriptor limit: as high as the hard limit allows (here 20,000 per process).
raise_nofile() {
    ulimit -n 65535 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    log "open files limit: $(ulimit -n)"
}

# Release builds of the given packages (BUILD=0: use what is built).
build() {
    [ "${BUILD:-1}" = 0 ] && return
    local args=()
    for p in "$@"; do args+=(-p "$p"); done
    log "cargo build --release ${args[*]}"
    (cd "$ROOT" && cargo build --release --quiet "${args[@]}")
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Waits until something accepts TCP connections on 127.0.0.1:$1.
wait_port() {
    local port=$1 deadline=$((SECONDS + ${2:-30}))
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        if ((SECONDS > deadline)); then
            log "nothing listening on port $port"
            return 1
        fi
        sleep 0.1
    done
}

# Starts a process in the background (its output in $WORK/<name>.log) and records it
# for cleanup; sets LAST_PID.
start() {
    local name=$1
    shift
    "${SERVER_WRAP[@]}" "$@" >"$WORK/$name.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# Stops everything started so far (the next stack then has the cores to itself).
stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}

# "user system" CPU seconds used so far by the processes $@ (default: every process
# started), all their threads.
server_cpu() {
    local pid user=0 sys=0 u s
    (($# > 0)) || set -- "${PIDS[@]}"
    for pid in "$@"; do
        read -r u s < <(sed 's/^.*) //' "/proc/$pid/stat" | awk '{print $12, $13}')
        user=$((user + u))
        sys=$((sys + s))
    done
    awk -v u="$user" -v s="$sys" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f %.2f\n", u / hz, s / hz}'
}

# Marginal CPU per delivery of a stack (docs/benchmarks.md, "CPU per delivery"):
#   cpu_per_delivery NAME START_FN CHAT-BENCH-RUN-ARGS...
# START_FN starts the stack's servers with `start` and sets TARGET_ARGS (chat-bench's
# --target and --protocol). Every server runs on CPU 0, chat-bench on CPU 1. Each of
# RUNS (default 3) runs starts fresh servers twice, for a 5 s and a 20 s run at the
# given load, and reads the servers' utime and stime after each; the difference over the
# difference in deliveries is the CPU per delivery, so connecting, joining and start-up
# cancel out. Prints one line per run and the medians; also in $RESULTS/NAME-cpu-<time>.txt.
cpu_per_delivery() {
    local name=$1 start_fn=$2
    shift 2
    local out="$RESULTS/$name-cpu-$STAMP.txt" i d cpu p99
    local -A user sys dlv
    SERVER_WRAP=(taskset -c 0)
    CLIENT_WRAP=(taskset -c 1)
    for ((i = 1; i <= ${RUNS:-3}; i++)); do
        for d in 5 20; do
            log "$name: CPU run $i of ${RUNS:-3}, $d s"
            "$start_fn"
            bench "$name-cpu$d-$i" run "${TARGET_ARGS[@]}" "$@" --duration "$d" >/dev/null
            cpu=$(server_cpu)
            stop_all
            user[$d]=${cpu% *}
            sys[$d]=${cpu#* }
            dlv[$d]=$(jq '.rounds[0].deliveries' "$RESULTS/$name-cpu$d-$i-$STAMP.json")
        done
        p99=$(jq '.rounds[0].latency_ms.p99' "$RESULTS/$name-cpu20-$i-$STAMP.json")
        awk -v n="$name" -v i="$i" -v u5="${user[5]}" -v u20="${user[20]}" -v s5="${sys[5]}" \
            -v s20="${sys[20]}" -v d5="${dlv[5]}" -v d20="${dlv[20]}" -v p99="$p99" 'BEGIN {
                d = d20 - d5; u = (u20 - u5) * 1e6 / d; s = (s20 - s5) * 1e6 / d
                printf "%s run %d: %.2f us CPU per delivery (user %.2f, system %.2f) over %d extra deliveries; p99 %.2f ms\n", n, i, u + s, u, s, d, p99
            }' | tee -a "$out"
    done
    awk -v n="$name" '{t[NR] = $4; u[NR] = $10; s[NR] = $12; p[NR] = $(NF - 1)}
        function med(a, k, m) { m = asort(a, k); return k[int((m + 1) / 2)] }
        END { printf "%s median: %.2f us CPU per delivery (user %.2f, system %.2f), p99 %.2f ms\n", n, med(t), med(u), med(s), med(p) }' \
        <(grep " run " "$out") | tee -a "$out"
    SERVER_WRAP=()
    CLIENT_WRAP=()
}

# A private redis-server without persistence; sets REDIS_PORT.
start_redis() {
    REDIS_PORT=$(free_port)
    start redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --maxclients 10000
    wait_port "$REDIS_PORT"
}

# The all-in-one on a free port, embedded store in $WORK/data; sets CHAT_PORT, CHAT_PID.
start_chat() {
    CHAT_PORT=$(free_port)
    start chat env RUST_LOG=warn CHAT_HTTP_ADDR="127.0.0.1:$CHAT_PORT" \
        CHAT_DATA_DIR="$WORK/data-chat-$CHAT_PORT" CHAT_AUTH_MODE=dev CHAT_REDIS_URL= CHAT_MONGODB_URL= \
        "$SERVER_BIN/chat"
    CHAT_PID=$LAST_PID
    wait_port "$CHAT_PORT"
}

# Machine facts for the record.
machine() {
    echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)," \
        "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
        "(working tree $(git -C "$ROOT" status --porcelain 2>/dev/null | wc -l) changed paths)"
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
}

# Runs chat-bench with its arguments; the JSON report goes to $RESULTS/$1-<time>.json,
# the table to the terminal and $RESULTS/$1-<time>.txt. A non-zero exit (problems found)
# is reported, not fatal, so the remaining runs still happen.
bench() {
    local name=$1
    shift
    local out="$RESULTS/$name-$STAMP"
    "${CLIENT_WRAP[@]}" "$BIN/chat-bench" "$@" --out "$out.json" | tee "$out.txt" ||
        log "chat-bench exited non-zero (see $out.txt)"
}

# Runs `bench` $RUNS times (default 3); the JSON files get suffixes -1, -2, ...
bench_runs() {
    local name=$1
    shift
    local i
    for ((i = 1; i <= ${RUNS:-3}; i++)); do
        log "$name run $i of ${RUNS:-3}"
        bench "$name-$i" "$@"
    done
}

# The median of a JSON field (jq path) over result files.
median() {
    local path=$1
    shift
    jq -s "[.[] | $path] | sort | .[(length - 1) / 2 | floor]" "$@"
}
