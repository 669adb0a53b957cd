#!/usr/bin/env bash
# REST benchmark: GET /, GET /chats/ and POST /messages/ (over 100 chats) with wrk, against a
# release build of echo-server on SQLite or Postgres. Bounded: each scenario runs $DURATION s.
#
#   load-tests/rest-bench.sh sqlite|postgres [DURATION=10] [CONNECTIONS=64] [THREADS=1]
#
# Server and wrk share the machine's cores unless PIN=1 (server on core 0, wrk on core 1).
# Postgres runs with the database's synchronous_commit as set by SYNC_COMMIT (default: on).
# ECHO_BIN=path runs that binary instead of building one (to compare two builds in one sitting);
# SCENARIOS="post" runs only POST /messages/ (default: "root chats post").
set -euo pipefail
cd "$(dirname "$0")/.."
BACKEND="${1:-sqlite}"; DURATION="${2:-10}"; CONNS="${3:-64}"; THREADS="${4:-1}"
PORT="${PORT:-18400}"; SYNC_COMMIT="${SYNC_COMMIT:-on}"
command -v wrk >/dev/null || { echo "wrk is required: apt-get install -y wrk" >&2; exit 1; }
ECHO_BIN="${ECHO_BIN:-}"
if [ -z "$ECHO_BIN" ]; then
  cargo build --release --bin echo-server -q
  ECHO_BIN=./target/release/echo-server
fi
SCENARIOS="${SCENARIOS:-root chats post}"
DATA="$(mktemp -d)"
export ECHO_DATA_DIR="$DATA" PORT RUST_LOG=warn
unset SUPABASE_JWT_SECRET
if [ "$BACKEND" = postgres ]; then
  psql -h 127.0.0.1 -U postgres -qc "drop database if exists echo_bench" -c "create database echo_bench" \
    -c "alter database echo_bench set synchronous_commit = $SYNC_COMMIT" >/dev/null
  export DATABASE_URL="postgres://postgres@127.0.0.1:5432/echo_bench" DATABASE_POOL_SIZE="${POOL:-16}"
fi
SERVER_CMD=("$ECHO_BIN" serve)
WRK_CMD=(wrk)
if [ "${PIN:-0}" = 1 ]; then SERVER_CMD=(taskset -c 0 "${SERVER_CMD[@]}"); WRK_CMD=(taskset -c 1 wrk); fi
"${SERVER_CMD[@]}" & SERVER=$!
trap 'kill $SERVER 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/" >/dev/null && break; sleep 0.1; done
USER_ID=$(python3 -c 'import uuid; print(uuid.uuid4())')
export ECHO_TOKEN=$("$ECHO_BIN" token --user "$USER_ID" 2>/dev/null)
export CHATS_FILE="$DATA/chats.txt"
for i in $(seq 1 100); do
  curl -sf -H "Authorization: Bearer $ECHO_TOKEN" -H 'content-type: application/json' \
    -d "{\"title\":\"bench $i\"}" "http://127.0.0.1:$PORT/chats/" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' >> "$CHATS_FILE"
done
run() { # name, script, path
  local out script="$DATA/$2"
  # wrk reads the script once per thread, so it must be a real file (not a pipe).
  cat "load-tests/wrk/$2" load-tests/wrk/report.lua > "$script"
  out=$("${WRK_CMD[@]}" -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency -s "$script" "http://127.0.0.1:$PORT$3" | tail -n1)
  echo "{\"backend\":\"$BACKEND\",\"scenario\":\"$1\",\"connections\":$CONNS,\"pinned\":${PIN:-0},\"synchronous_commit\":\"$SYNC_COMMIT\",\"loadavg\":\"$(cut -d' ' -f1-3 /proc/loadavg)\",\"result\":$out}"
}
for scenario in $SCENARIOS; do
  case "$scenario" in
    root) run "GET /" auth.lua / ;;
    chats) run "GET /chats/" auth.lua /chats/ ;;
    post) run "POST /messages/ (100 chats)" post_messages.lua /messages/ ;;
    *) echo "unknown scenario $scenario (root, chats, post)" >&2; exit 2 ;;
  esac
done
