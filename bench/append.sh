#!/usr/bin/env bash
# Scenario 4: history append throughput per store, driving the store API directly
# (chat_history::MessageStore::append) with many concurrent appenders; each run uses a
# fresh store directory and ends by reading every room back (seqs exactly 1..n).
# Target: embedded store >= 20,000 msg/s.
#
# MongoDB runs only with CHAT_BENCH_MONGODB_URL set to a real server: the wire-protocol
# stand-in used by the tests (nx-27017) is not representative of MongoDB's performance.
#
#   bench/append.sh          # RUNS=3 per appender count
source "$(dirname "$0")/lib.sh"
build chat-bench
machine | tee "$RESULTS/append-$STAMP-machine.txt"
for appenders in ${APPENDERS:-1 16 256 1024}; do
    for ((run = 1; run <= ${RUNS:-3}; run++)); do
        # A lone appender pays one fsync per message: fewer messages keep it short.
        messages=$((appenders * 5000 < ${MESSAGES:-100000} ? appenders * 5000 : ${MESSAGES:-100000}))
        bench "append-embedded-$appenders-$run" append --dir "$WORK/store-$appenders-$run" \
            --appenders "$appenders" --messages "$messages" --rooms 100
        rm -rf "$WORK/store-$appenders-$run"
    done
    log "embedded, $appenders appenders: median $(median .per_sec "$RESULTS"/append-embedded-"$appenders"-*-"$STAMP".json) msg/s"
done
if [ -n "${CHAT_BENCH_MONGODB_URL:-}" ]; then
    for ((run = 1; run <= ${RUNS:-3}; run++)); do
        bench "append-mongodb-256-$run" append --mongodb-url "$CHAT_BENCH_MONGODB_URL" \
            --appenders 256 --messages "${MESSAGES:-100000}" --rooms 100
    done
else
    log "MongoDB skipped: set CHAT_BENCH_MONGODB_URL to a real server (nx-27017 is not representative)"
fi
