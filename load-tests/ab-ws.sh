#!/usr/bin/env bash
# A/B in one sitting: the same WebSocket idle run (5,000 sessions in rooms of 20: RSS per
# session, setup rate) and fan-out run (2 rooms of 1,000, 40,000 deliveries/s: latency) against
# two echo-server binaries, alternated ROUNDS times, so a change is compared with its parent on
# the same machine in the same hour. Bounded; stops by itself.
#
#   load-tests/ab-ws.sh BIN_A BIN_B [ROUNDS=2]     (e.g. a copy of the parent's release build)
set -u
[ $# -ge 2 ] || { echo "usage: $0 BIN_A BIN_B [ROUNDS]" >&2; exit 2; }
cd "$(dirname "$0")/.."
SECRET="bench-secret-bench-secret-bench-secret"
cargo build --release -q -p echo-load
LOAD=./target/release/echo-load
BIN_A="$1"; BIN_B="$2"; ROUNDS="${3:-2}"
for round in $(seq 1 "$ROUNDS"); do
for name in A B; do
  if [ $name = A ]; then BIN="$BIN_A"; else BIN="$BIN_B"; fi
  DATA=$(mktemp -d); PORT=18610
  env SUPABASE_JWT_SECRET="$SECRET" ECHO_DATA_DIR="$DATA" PORT=$PORT RUST_LOG=warn WS_RATE_PER_SEC=1000 WS_RATE_BURST=2000 DATABASE_POOL_SIZE=16 "$BIN" serve >/dev/null 2>&1 &
  S=$!
  for _ in $(seq 1 100); do curl -sf http://127.0.0.1:$PORT/ >/dev/null && break; sleep 0.1; done
  BASE_RSS=$(awk '/^VmRSS/ {print $2}' /proc/$S/status)
  $LOAD ws idle --url http://127.0.0.1:$PORT --secret "$SECRET" --no-progress --sessions 5000 --room-size 20 --duration 8 --out $DATA/idle.json > $DATA/idle.txt 2>&1 &
  L=$!; P=$BASE_RSS
  while kill -0 $L 2>/dev/null; do R=$(awk '/^VmRSS/ {print $2}' /proc/$S/status); [ "$R" -gt "$P" ] && P=$R; sleep 0.5; done
  IDLE=$(python3 -c "import json;d=json.load(open('$DATA/idle.json'));print(d['checks'].get('setup_sessions_per_sec'), d['counters'].get('alive_at_end'))")
  $LOAD ws fanout --url http://127.0.0.1:$PORT --secret "$SECRET" --no-progress --sessions 2000 --room-size 1000 --senders 10 --rate 40 --duration 10 --out $DATA/fan.json > $DATA/fan.txt 2>&1
  FAN=$(python3 -c "import json;d=json.load(open('$DATA/fan.json'));s=d['latency']['delivery']['stats_us'];print(d['rates']['delivered_per_sec'], s['p50'], s['p99'], d['checks'].get('delivery_ratio'))")
  echo "round=$round bin=$name($BIN) idle_kib_per_session=$(( (P-BASE_RSS)/5 ))e-3 setup_per_s_alive=[$IDLE] fanout_delivered_per_s_p50us_p99us_ratio=[$FAN] load=$(cut -d' ' -f1 /proc/loadavg)"
  kill $S; wait $S 2>/dev/null; rm -rf $DATA
done
done
