#!/usr/bin/env bash
# WebSocket benchmarks against a release echo-server (SQLite; the realtime path does not touch
# the database after subscribe): idle sessions and memory per session, fan-out in rooms of
# 1,000, and new sessions per second. Every run is bounded and stops by itself.
#
#   load-tests/ws-bench.sh idle   [SESSIONS=19000] [HOLD_SECS=20]
#   load-tests/ws-bench.sh fanout [RATE_MSGS_PER_SEC=100] [DURATION=15] [ROOMS=2]
#   load-tests/ws-bench.sh churn  [CONCURRENCY=64] [DURATION=15]
#
# Prints the load generator's JSON summary path and a one-line result with the machine load.
set -euo pipefail
cd "$(dirname "$0")/.."
SCENARIO="${1:-idle}"
PORT="${PORT:-18600}"
SECRET="bench-secret-bench-secret-bench-secret"
cargo build --release -q --bin echo-server -p echo-server
cargo build --release -q -p echo-load
DATA="$(mktemp -d)"
SERVER_ENV=(SUPABASE_JWT_SECRET="$SECRET" ECHO_DATA_DIR="$DATA" PORT="$PORT" RUST_LOG=warn
  WS_RATE_PER_SEC=1000 WS_RATE_BURST=2000 DATABASE_POOL_SIZE=16)
env "${SERVER_ENV[@]}" ./target/release/echo-server serve & SERVER=$!
trap 'kill $SERVER 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/" >/dev/null && break; sleep 0.1; done
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$SERVER/status"; }
LOAD=(./target/release/echo-load ws "$SCENARIO" --url "http://127.0.0.1:$PORT" --secret "$SECRET" --no-progress)
case "$SCENARIO" in
  idle)
    SESSIONS="${2:-19000}"; HOLD="${3:-20}"
    BEFORE=$(rss_kib)
    "${LOAD[@]}" --sessions "$SESSIONS" --room-size 20 --duration "$HOLD" > "$DATA/out.txt" 2>&1 &
    LOADER=$!
    # Sample the server's RSS while all sessions are held (the generator reports when ready).
    PEAK=$BEFORE
    while kill -0 $LOADER 2>/dev/null; do
      R=$(rss_kib); [ "$R" -gt "$PEAK" ] && PEAK=$R; sleep 1
    done
    wait $LOADER || true
    tail -n 4 "$DATA/out.txt"
    python3 - "$BEFORE" "$PEAK" "$SESSIONS" <<'PY'
import sys
before, peak, n = map(int, sys.argv[1:])
print(f'{{"scenario":"idle","sessions":{n},"rss_before_kib":{before},"rss_peak_kib":{peak},'
      f'"kib_per_session":{(peak-before)/n:.2f}}}')
PY
    ;;
  fanout)
    RATE="${2:-100}"; DURATION="${3:-15}"; ROOMS="${4:-2}"
    "${LOAD[@]}" --sessions $((ROOMS * 1000)) --room-size 1000 --senders 10 --rate "$RATE" \
      --duration "$DURATION" 2>&1 | tail -n 4
    ;;
  churn)
    CONC="${2:-64}"; DURATION="${3:-15}"
    "${LOAD[@]}" --concurrency "$CONC" --duration "$DURATION" 2>&1 | tail -n 4
    ;;
  *) echo "unknown scenario $SCENARIO" >&2; exit 1 ;;
esac
echo "{\"loadavg\":\"$(cut -d' ' -f1-3 /proc/loadavg)\",\"server_rss_kib\":$(rss_kib)}"
