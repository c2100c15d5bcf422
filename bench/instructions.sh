#!/usr/bin/env bash
# Instructions per delivery on the all-in-one, under callgrind (repeatable where CPU time
# on a shared machine is not): one chat process under `valgrind --tool=callgrind`, a
# short and a long chat-bench run at a small fixed load, a callgrind dump after each;
# the difference in instructions over the difference in deliveries is the marginal cost
# of a delivery (connecting and joining cancel out). The second dump is kept for
# callgrind_annotate.
#
#   bench/instructions.sh    # 100 connections, 2 rooms, 10 msg/s; 5 s and 15 s
source "$(dirname "$0")/lib.sh"
raise_nofile
build chat chat-bench
machine | tee "$RESULTS/instructions-$STAMP-machine.txt"
LOAD=(--connections "${CONNECTIONS:-100}" --rooms 2 --rate "${RATE:-10}")
# --trace-children: start_chat runs the server through `env`, which execs it.
SERVER_WRAP=(valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$WORK/callgrind.out")
start_chat
log "chat under callgrind, pid $CHAT_PID"
TARGET="ws://127.0.0.1:$CHAT_PORT"
# Asks for dump number $1 and waits until callgrind has written it (it writes when the
# process next runs, not when asked).
dump() {
    local file="$WORK/callgrind.out.$1" i
    callgrind_control --dump "$CHAT_PID" >"$WORK/dump-$1.log" 2>&1
    for ((i = 0; i < 600; i++)); do
        [ -s "$file" ] && grep -q '^totals:' "$file" && return
        sleep 0.1
    done
    log "callgrind wrote no $file: $(cat "$WORK/dump-$1.log")"
    exit 1
}
# Each dump holds what was counted since the previous one: exactly one run each.
callgrind_control --zero "$CHAT_PID" >/dev/null
bench instructions-5 run --target "$TARGET" "${LOAD[@]}" --duration 5 >/dev/null
dump 1
bench instructions-15 run --target "$TARGET" "${LOAD[@]}" --duration 15 >/dev/null
dump 2
ir() { awk '/^summary:/ {print $2}' "$1"; }
short="$WORK/callgrind.out.1"
long="$WORK/callgrind.out.2"
cp "$long" "$RESULTS/instructions-$STAMP.callgrind"
d5=$(jq '.rounds[0].deliveries' "$RESULTS/instructions-5-$STAMP.json")
d15=$(jq '.rounds[0].deliveries' "$RESULTS/instructions-15-$STAMP.json")
awk -v a="$(ir "$short")" -v b="$(ir "$long")" -v d5="$d5" -v d15="$d15" 'BEGIN {
    printf "instructions per delivery: %.0f (%d vs %d instructions, %d vs %d deliveries)\n",
        (b - a) / (d15 - d5), b, a, d15, d5
}' | tee "$RESULTS/instructions-$STAMP.txt"
log "profile: callgrind_annotate $RESULTS/instructions-$STAMP.callgrind"
