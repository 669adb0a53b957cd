#!/usr/bin/env bash
# AI-streaming benchmark: a release echo-server (SQLite) whose OpenAI provider is
# `echo-load openai-mock` (tokens stamped with their emit time), driven by `echo-load ws ai`:
# REPLIES chats of WATCHERS sessions each, every chat's owner prompting in a loop for DURATION
# seconds, every session measuring provider-emit → receive latency per token; the prompter
# measures time to first token, compared with DIRECT_SAMPLES calls made straight to the mock.
# Everything is bounded (the mock exits by itself) and cleaned up on exit.
#
#   load-tests/ai-bench.sh [REPLIES=1000] [WATCHERS=5] [TOKENS=200] [RATE=50] [DURATION=10]
#
# Environment: PORT (server, 18610), MOCK_PORT (18710), FIRST_TOKEN_MS (0), DIRECT_SAMPLES (200),
# RAMP (seconds to spread the first prompts; default TOKENS/RATE), OUT (summary JSON path),
# CARGO_TARGET_DIR (binaries are taken from there), SKIP_BUILD=1 (use the binaries as they are),
# ECHO_BIN (run that echo-server instead, to compare two builds in one sitting), POSTGRES=1
# (a fresh Postgres database instead of SQLite, on DATABASE_ADMIN_URL
# (postgres://postgres@127.0.0.1:5432/postgres), with PG_SYNCHRONOUS_COMMIT if set),
# SERVER_CPUS / CLIENT_CPUS (taskset lists: pin the server, and the mock with the load
# generator, e.g. 1 and 0 on a 2-core machine, so they do not take turns on one core).
# The result includes the server's own account of where a reply's start-up went
# (`echo_ai_start_seconds` by stage: mean and count).
# Prints the load generator's summary path and a one-line JSON result with the machine load.
set -euo pipefail
cd "$(dirname "$0")/.."
REPLIES="${1:-1000}"; WATCHERS="${2:-5}"; TOKENS="${3:-200}"; RATE="${4:-50}"; DURATION="${5:-10}"
PORT="${PORT:-18610}"; MOCK_PORT="${MOCK_PORT:-18710}"
FIRST_TOKEN_MS="${FIRST_TOKEN_MS:-0}"; DIRECT_SAMPLES="${DIRECT_SAMPLES:-200}"
SECRET="bench-secret-bench-secret-bench-secret"
BIN="${CARGO_TARGET_DIR:-target}/release"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release -q -p echo-server --bin echo-server
  cargo build --release -q -p echo-load
fi
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="${OUT:-load-tests/results/ai-${REPLIES}x${WATCHERS}-${STAMP}.json}"
mkdir -p "$(dirname "$OUT")"
DATA="$(mktemp -d)"
PIDS=()
ADMIN="${DATABASE_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
PG_DB=""
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "$PG_DB" ] && psql "$ADMIN" -qc "drop database if exists \"$PG_DB\"" >/dev/null 2>&1
  rm -rf "$DATA"
}
trap cleanup EXIT
DB_ENV=()
if [ "${POSTGRES:-0}" = 1 ]; then
  PG_DB="echo_ai_bench_$(date +%s)_$$"
  psql "$ADMIN" -qc "create database \"$PG_DB\"" >/dev/null
  [ -n "${PG_SYNCHRONOUS_COMMIT:-}" ] &&
    psql "$ADMIN" -qc "alter database \"$PG_DB\" set synchronous_commit = '$PG_SYNCHRONOUS_COMMIT'" >/dev/null
  DB_ENV=(DATABASE_URL="${ADMIN%/*}/$PG_DB")
fi

# Long enough for seeding + setup + the window + the replies in flight; the mock then exits.
MOCK_SECS=$(( DURATION + 600 ))
CLIENT_PIN=(); [ -n "${CLIENT_CPUS:-}" ] && CLIENT_PIN=(taskset -c "$CLIENT_CPUS")
SERVER_PIN=(); [ -n "${SERVER_CPUS:-}" ] && SERVER_PIN=(taskset -c "$SERVER_CPUS")
"${CLIENT_PIN[@]}" "$BIN/echo-load" openai-mock --port "$MOCK_PORT" --tokens "$TOKENS" --rate "$RATE" \
  --first-token-ms "$FIRST_TOKEN_MS" --duration "$MOCK_SECS" --out "${OUT%.json}.mock.json" \
  > "$DATA/mock.out" 2> "$DATA/mock.log" & MOCK=$!

PIDS+=("$MOCK")

SERVER_ENV=("${DB_ENV[@]}" SUPABASE_JWT_SECRET="$SECRET" ECHO_DATA_DIR="$DATA" PORT="$PORT" RUST_LOG=warn
  WS_RATE_PER_SEC=1000 WS_RATE_BURST=2000 DATABASE_POOL_SIZE="${DB_POOL:-16}"
  AI_PROVIDER=openai OPENAI_BASE_URL="http://127.0.0.1:$MOCK_PORT/v1" OPENAI_API_KEY=bench
  AI_MODEL=bench-model AI_MAX_CONCURRENT_PER_NODE=$(( REPLIES * 2 + 64 ))
  AI_MAX_CONCURRENT_PER_USER=8)
"${SERVER_PIN[@]}" env "${SERVER_ENV[@]}" "${ECHO_BIN:-$BIN/echo-server}" serve > "$DATA/server.log" 2>&1 & SERVER=$!
PIDS+=("$SERVER")
up=0
for _ in $(seq 1 150); do
  if curl -sf "http://127.0.0.1:$PORT/" >/dev/null && curl -sf "http://127.0.0.1:$MOCK_PORT/health" >/dev/null; then
    up=1; break
  fi
  sleep 0.2
done
if [ "$up" != 1 ]; then
  echo "server or mock did not come up" >&2
  tail -n 20 "$DATA/server.log" "$DATA/mock.log" >&2
  exit 1
fi

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# Load average sampled every 2 s while the load generator runs (the 1-minute peak is reported).
( while true; do cut -d' ' -f1 /proc/loadavg; sleep 2; done ) > "$DATA/load.txt" & SAMPLER=$!
PIDS+=("$SAMPLER")
S0=$(cpu_ticks "$SERVER"); M0=$(cpu_ticks "$MOCK")
set +e
/usr/bin/time -f '%U %S' -o "$DATA/loadgen.time" "${CLIENT_PIN[@]}" \
  "$BIN/echo-load" ws ai --url "http://127.0.0.1:$PORT" --secret "$SECRET" \
  --replies "$REPLIES" --watchers "$WATCHERS" --tokens "$TOKENS" --token-rate "$RATE" \
  --duration "$DURATION" ${RAMP:+--ramp "$RAMP"} \
  --direct-ttft-samples "$DIRECT_SAMPLES" --mock-url "http://127.0.0.1:$MOCK_PORT/v1" \
  --setup-timeout 300 --no-progress --out "$OUT" > "$DATA/load.out" 2> "$DATA/load.err"
RC=$?
set -e
LOADAVG="$(cut -d' ' -f1-3 /proc/loadavg)"
curl -sf "http://127.0.0.1:$PORT/metrics" > "$DATA/metrics.txt" || true
S1=$(cpu_ticks "$SERVER"); M1=$(cpu_ticks "$MOCK")
kill "$SAMPLER" 2>/dev/null || true
kill -INT "$MOCK" 2>/dev/null || true
for _ in $(seq 1 50); do kill -0 "$MOCK" 2>/dev/null || break; sleep 0.1; done
grep -v '^\[' "$DATA/load.err" | tail -n 5 >&2 || true
echo "summary: $OUT (exit status $RC)"
HZ=$(getconf CLK_TCK)
python3 - "$OUT" "$LOADAVG" "$DATA/load.txt" "$(( S1 - S0 ))" "$(( M1 - M0 ))" "$HZ" \
  "$DATA/loadgen.time" "${OUT%.json}.mock.json" "$DATA/metrics.txt" <<'PY'
import json, os, re, sys
out, loadavg, samples, s_ticks, m_ticks, hz, lg_time, mock_path, metrics_path = sys.argv[1:]
stages = {}
try:
    for line in open(metrics_path):
        m = re.match(r'echo_ai_start_seconds_(sum|count)\{.*stage="(\w+)".*\} (\S+)', line)
        if m:
            stages.setdefault(m.group(2), {})[m.group(1)] = float(m.group(3))
except OSError:
    pass
start_stages = {k: {"mean_ms": round(v["sum"] / v["count"] * 1000, 2), "count": int(v["count"])}
                for k, v in stages.items() if v.get("count")}
hz = int(hz)
try:
    s = json.load(open(out))
except Exception as e:
    print(json.dumps({"error": f"no summary: {e}", "loadavg": loadavg})); sys.exit(0)
lat, c, chk = s["latency"], s["counters"], s["checks"]
ms = lambda b, q: round(lat.get(b, {}).get("stats_us", {}).get(q, 0) / 1000, 2)
peak = max([float(x) for x in open(samples).read().split()] or [0.0])
try:
    u, sy = open(lg_time).read().split()[-2:]
    lg_cpu = round(float(u) + float(sy), 1)
except Exception:
    lg_cpu = None
mock = {}
if os.path.exists(mock_path):
    try:
        mock = json.load(open(mock_path))
    except Exception:
        pass
diff = chk.get("ttft_server_minus_direct_us", {})
p = s["params"]
print(json.dumps({
    "database": "postgres" if os.environ.get("POSTGRES") == "1" else "sqlite",
    "replies": p.get("replies"), "watchers": p.get("watchers"), "tokens": p.get("tokens"),
    "token_rate": p.get("token_rate"), "duration_secs": p.get("duration_secs"),
    "max_in_flight": c.get("max_in_flight_seen"),
    "generations_finished": c.get("generations_finished"),
    "tokens_received": c.get("tokens_received"),
    "tokens_per_sec": s["rates"].get("tokens_received_per_sec"),
    "token_ms": {q: ms("token", q) for q in ("p50", "p90", "p99", "max")},
    "ttft_server_ms": {q: ms("ttft_server", q) for q in ("p50", "p90", "p99", "max")},
    "start_stages_ms": start_stages,
    "ttft_direct_ms": {q: ms("ttft_direct", q) for q in ("p50", "p90", "p99", "max")},
    "ttft_added_ms": {k: round(v / 1000, 2) for k, v in diff.items()},
    "direct_token_ms": {q: ms("direct_token", q) for q in ("p50", "p99")},
    "watcher_finished": c.get("watcher_finished"),
    "expected_watcher_finished": chk.get("expected_watcher_finished"),
    "token_delivery_ratio": chk.get("token_delivery_ratio"),
    "token_streams_ok": chk.get("token_streams_ok"),
    "targets": chk.get("targets"),
    "problems": s.get("problems"),
    "mock_emit_lag_ms_p99": round(mock.get("emit_lag_us", {}).get("p99", 0) / 1000, 2),
    "cpu_secs": {"server": round(int(s_ticks) / hz, 1), "mock": round(int(m_ticks) / hz, 1),
                 "loadgen": lg_cpu},
    "loadavg": loadavg, "loadavg_1m_peak": peak,
}))
PY
exit "$RC"
