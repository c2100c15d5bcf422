# Shared helpers of the benchmark scenarios; sourced, not run.
#
# Everything a scenario starts runs on 127.0.0.1 on free ports and is stopped on exit.
# Results go to bench/results/<scenario>-<UTC time>.{json,txt}.

# -E: the ERR trap below also fires inside functions.
set -Eeuo pipefail
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
# The name each of PIDS was started under (`start`), in the same order.
NAMES=()
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

# A scenario that stops on an error says which command failed, and shows the end of
# every server's log before cleanup removes them.
on_error() {
    local status=$? line=$1 command=$2 f
    log "failed (exit $status) at line $line: $command"
    for f in "$WORK"/*.log; do
        [ -e "$f" ] || continue
        log "last lines of $(basename "$f"):"
        tail -n 5 "$f" >&2
    done
}
trap 'on_error "$LINENO" "$BASH_COMMAND"' ERR

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
    NAMES+=("$name")
}

# Stops everything started so far (the next stack then has the cores to itself).
stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
    NAMES=()
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

# "role cpu-seconds" per role of the processes started so far, user and system
# together: a role is the name given to `start` without its instance suffix
# (gateway-1 and gateway-2 are `gateway`, redis-<port> is `redis`).
cpu_by_role() {
    local i
    for i in "${!PIDS[@]}"; do
        echo "$(sed -E 's/-r?[0-9]+$//' <<<"${NAMES[$i]}") $(server_cpu "${PIDS[$i]}")"
    done | awk '{cpu[$1] += $2 + $3} END {for (r in cpu) printf "%s %.2f\n", r, cpu[r]}' | sort
}

# One run's marginal CPU by role: role_line NAME RUN BEFORE AFTER UNITS UNIT FORMAT, where
# BEFORE and AFTER are `cpu_by_role` readings of the smaller and the larger run and
# UNITS the extra units (deliveries, connections) between them. Prints
# "NAME roles RUN: gateway 1.23, redis 0.45 us per UNIT".
role_line() {
    join <(echo "$3") <(echo "$4") |
        awk -v n="$1" -v i="$2" -v c="$5" -v unit="$6" -v f="$7" '
            {printf "%s%s " f, (NR > 1 ? ", " : n " roles " i ": "), $1, ($3 - $2) * 1e6 / c}
            END {print " us per " unit}'
}

# The median per role of the `role_line` lines in FILE: role_medians NAME FILE UNIT FORMAT.
role_medians() {
    grep " roles " "$2" | sed 's/^.*: //; s/ us per .*$//' | tr ',' '\n' |
        awk -v n="$1" -v unit="$3" -v f="$4" '{v[$1][++k[$1]] = $2}
            END {
                printf "%s median per role:", n
                for (r in v) { m = asort(v[r]); printf " %s " f, r, v[r][int((m + 1) / 2)] }
                print " us per " unit
            }'
}

# Marginal CPU per delivery of a stack (docs/benchmarks.md, "CPU per delivery"):
#   cpu_per_delivery NAME START_FN CHAT-BENCH-RUN-ARGS...
# START_FN starts the stack's servers with `start` and sets TARGET_ARGS (chat-bench's
# --target and --protocol). Every server runs on CPU 0, chat-bench on CPU 1. Each of
# RUNS (default 3) runs starts fresh servers twice, for a 5 s and a 20 s run at the
# given load, and reads the servers' utime and stime after each; the difference over the
# difference in deliveries is the CPU per delivery, so connecting, joining and start-up
# cancel out. Prints one line per run, the same by role (`role_line`) and the medians;
# also in $RESULTS/NAME-cpu-<time>.txt.
cpu_per_delivery() {
    local name=$1 start_fn=$2
    shift 2
    local out="$RESULTS/$name-cpu-$STAMP.txt" i d p99
    local -A user sys dlv roles
    SERVER_WRAP=(taskset -c 0)
    CLIENT_WRAP=(taskset -c 1)
    for ((i = 1; i <= ${RUNS:-3}; i++)); do
        for d in 5 20; do
            log "$name: CPU run $i of ${RUNS:-3}, $d s"
            cpu_point "$start_fn" "$name-cpu$d-$i" 0 "$@" --duration "$d"
            user[$d]=$POINT_USER
            sys[$d]=$POINT_SYS
            roles[$d]=$POINT_ROLES
            dlv[$d]=$(jq '.rounds[0].deliveries' "$RESULTS/$name-cpu$d-$i-$STAMP.json")
        done
        p99=$(jq '.rounds[0].latency_ms.p99' "$RESULTS/$name-cpu20-$i-$STAMP.json")
        awk -v n="$name" -v i="$i" -v u5="${user[5]}" -v u20="${user[20]}" -v s5="${sys[5]}" \
            -v s20="${sys[20]}" -v d5="${dlv[5]}" -v d20="${dlv[20]}" -v p99="$p99" 'BEGIN {
                d = d20 - d5; u = (u20 - u5) * 1e6 / d; s = (s20 - s5) * 1e6 / d
                printf "%s run %d: %.2f us CPU per delivery (user %.2f, system %.2f) over %d extra deliveries; p99 %.2f ms\n", n, i, u + s, u, s, d, p99
            }' | tee -a "$out"
        role_line "$name" "$i" "${roles[5]}" "${roles[20]}" $((dlv[20] - dlv[5])) delivery "%.2f" |
            tee -a "$out"
    done
    awk -v n="$name" '{t[NR] = $4; u[NR] = $10; s[NR] = $12; p[NR] = $(NF - 1)}
        function med(a, k, m) { m = asort(a, k); return k[int((m + 1) / 2)] }
        END { printf "%s median: %.2f us CPU per delivery (user %.2f, system %.2f), p99 %.2f ms\n", n, med(t), med(u), med(s), med(p) }' \
        <(grep " run " "$out") | tee -a "$out"
    role_medians "$name" "$out" delivery "%.2f" | tee -a "$out"
    SERVER_WRAP=()
    CLIENT_WRAP=()
}

# One point of a marginal CPU measurement (cpu_per_delivery, cpu_per_connect):
#   cpu_point START_FN NAME SETTLE [CHAT-BENCH-RUN-ARGS...]
# Starts fresh servers with START_FN, runs chat-bench as NAME against them, waits SETTLE
# seconds, reads the servers' CPU since they started and stops them. Sets POINT_USER and
# POINT_SYS (seconds, `server_cpu`) and POINT_ROLES (`cpu_by_role`).
cpu_point() {
    local start_fn=$1 name=$2 settle=$3 cpu
    shift 3
    "$start_fn"
    bench "$name" run "${TARGET_ARGS[@]}" "$@" >/dev/null
    sleep "$settle"
    cpu=$(server_cpu)
    POINT_ROLES=$(cpu_by_role)
    stop_all
    POINT_USER=${cpu% *}
    POINT_SYS=${cpu#* }
}

# Marginal CPU per connection of a stack (docs/benchmarks.md, "CPU per connect"):
#   cpu_per_connect NAME START_FN [CHAT-BENCH-RUN-ARGS...]
# As cpu_per_delivery, but the two runs of each of RUNS (default 3) differ in
# connections, not in duration: fresh servers for $CONNECT_FEW (default 1,000) and for
# $CONNECT_MANY (default 5,000) connections, rooms of $CONNECT_ROOM (default 20: a join
# tells about 10 members `online`, the traffic model's rooms), each held 1 s at 1 msg/s;
# the servers' CPU is read 1 s after chat-bench has closed every connection. The
# difference over the extra connections is the CPU of a connection's whole life: TCP
# accept, upgrade, token, `hello`, one `join` (history and presence calls included),
# the close and the leave. Prints one line per run, the same split by role
# (`cpu_by_role`: gateway, presence, redis, ...) and the medians; also in
# $RESULTS/NAME-connect-<time>.txt.
cpu_per_connect() {
    local name=$1 start_fn=$2
    shift 2
    local out="$RESULTS/$name-connect-$STAMP.txt" i n
    local few=${CONNECT_FEW:-1000} many=${CONNECT_MANY:-5000} room=${CONNECT_ROOM:-20}
    local -A user sys roles
    SERVER_WRAP=(taskset -c 0)
    CLIENT_WRAP=(taskset -c 1)
    for ((i = 1; i <= ${RUNS:-3}; i++)); do
        for n in "$few" "$many"; do
            log "$name: connect run $i of ${RUNS:-3}, $n connections"
            cpu_point "$start_fn" "$name-connect$n-$i" 1 "$@" --connections "$n" \
                --rooms $((n / room)) --rate 1 --duration 1 --quiet-ms 200
            user[$n]=$POINT_USER
            sys[$n]=$POINT_SYS
            roles[$n]=$POINT_ROLES
        done
        awk -v n="$name" -v i="$i" -v few="$few" -v many="$many" -v uf="${user[$few]}" \
            -v um="${user[$many]}" -v sf="${sys[$few]}" -v sm="${sys[$many]}" 'BEGIN {
                c = many - few; u = (um - uf) * 1e6 / c; s = (sm - sf) * 1e6 / c
                printf "%s run %d: %.0f us CPU per connection (user %.0f, system %.0f) over %d extra connections\n", n, i, u + s, u, s, c
            }' | tee -a "$out"
        role_line "$name" "$i" "${roles[$few]}" "${roles[$many]}" $((many - few)) connection "%.0f" |
            tee -a "$out"
    done
    awk -v n="$name" '{t[NR] = $4; u[NR] = $10; s[NR] = $12}
        function med(a, k, m) { m = asort(a, k); return k[int((m + 1) / 2)] }
        END { printf "%s median: %.0f us CPU per connection (user %.0f, system %.0f)\n", n, med(t), med(u), med(s) }' \
        <(grep " run " "$out") | tee -a "$out"
    role_medians "$name" "$out" connection "%.0f" | tee -a "$out"
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

# A 3-master Redis Cluster without replicas; sets CLUSTER_URL and REDIS_PIDS. (The bus
# ports are free ports too: the default, port + 10,000, may be taken or past 65,535.)
start_redis_cluster() {
    local ports=() port nodes=() i
    REDIS_PIDS=()
    for i in 1 2 3; do
        port=$(free_port)
        mkdir -p "$WORK/cluster-$port"
        start "redis-$port" redis-server --port "$port" --bind 127.0.0.1 \
            --cluster-enabled yes --cluster-port "$(free_port)" \
            --cluster-config-file "$WORK/cluster-$port/nodes.conf" \
            --dir "$WORK/cluster-$port" --save '' --appendonly no --maxclients 10000
        REDIS_PIDS+=("$LAST_PID")
        ports+=("$port")
    done
    for port in "${ports[@]}"; do
        wait_port "$port"
        nodes+=("127.0.0.1:$port")
    done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
    for port in "${ports[@]}"; do
        until redis-cli -p "$port" cluster info | grep -q 'cluster_state:ok'; do sleep 0.1; done
    done
    CLUSTER_URL="redis-cluster://${nodes[0]}?node=${nodes[1]}&node=${nodes[2]}"
}

# The split stack behind a Redis (or Redis Cluster) at URL $1, which carries both the
# gateways' fan-out and presence: chat-history on its embedded store, chat-presence, and
# two chat-gateways in dev auth, plus the NAME=VALUE settings in GATEWAY_ENV (later ones
# win). Sets TARGET (the gateways' URLs, comma-separated: chat-bench alternates
# connections between them), GATEWAY_PIDS, HISTORY_PORT and PRESENCE_PORT.
GATEWAY_ENV=()
start_split_stack() {
    local url=$1 port gw targets=()
    HISTORY_PORT=$(free_port)
    start history env RUST_LOG=warn CHAT_GRPC_ADDR="127.0.0.1:$HISTORY_PORT" \
        CHAT_METRICS_ADDR="127.0.0.1:$(free_port)" \
        CHAT_DATA_DIR="$WORK/data-history-$HISTORY_PORT" CHAT_MONGODB_URL= \
        "$SERVER_BIN/chat-history"
    PRESENCE_PORT=$(free_port)
    start presence env RUST_LOG=warn CHAT_GRPC_ADDR="127.0.0.1:$PRESENCE_PORT" \
        CHAT_METRICS_ADDR="127.0.0.1:$(free_port)" CHAT_REDIS_URL="$url" \
        "$SERVER_BIN/chat-presence"
    wait_port "$HISTORY_PORT"
    wait_port "$PRESENCE_PORT"
    GATEWAY_PIDS=()
    for gw in 1 2; do
        port=$(free_port)
        start "gateway-$gw" env RUST_LOG=warn CHAT_HTTP_ADDR="127.0.0.1:$port" \
            CHAT_HISTORY_URL="http://127.0.0.1:$HISTORY_PORT" \
            CHAT_PRESENCE_URL="http://127.0.0.1:$PRESENCE_PORT" CHAT_REDIS_URL="$url" \
            CHAT_AUTH_MODE=dev CHAT_GATEWAY_ID="gw-bench-$gw" "${GATEWAY_ENV[@]}" \
            "$SERVER_BIN/chat-gateway"
        GATEWAY_PIDS+=("$LAST_PID")
        targets+=("ws://127.0.0.1:$port")
    done
    for port in "${targets[@]}"; do wait_port "${port##*:}"; done
    TARGET=$(IFS=,; echo "${targets[*]}")
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
