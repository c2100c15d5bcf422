#!/usr/bin/env bash
# Scenario 1: idle connections. Starts the all-in-one (release), opens 2,000 then 18,000
# idle WebSocket connections (each joined to one of 100 rooms) from worker processes
# bound to 127.0.0.1-4, and reports the server's RSS per connection as the slope of
# VmRSS between the two steps. Target: <= 8 KiB per idle connection.
#
#   bench/idle.sh            # RUNS=3 by default: a fresh server per run
source "$(dirname "$0")/lib.sh"
raise_nofile
build chat chat-bench
machine | tee "$RESULTS/idle-$STAMP-machine.txt"
for ((run = 1; run <= ${RUNS:-3}; run++)); do
    start_chat
    log "idle run $run: chat pid $CHAT_PID on port $CHAT_PORT"
    bench "idle-$run" idle --target "ws://127.0.0.1:$CHAT_PORT" --pid "$CHAT_PID" \
        --steps "${STEPS:-2000,18000}" --rooms 100 --settle 5
    kill "$CHAT_PID"
    wait "$CHAT_PID" 2>/dev/null || true
done
log "median KiB per idle connection: $(median .kib_per_connection "$RESULTS"/idle-*-"$STAMP".json)"
