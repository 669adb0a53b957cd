#!/usr/bin/env bash
# Fan-out across several echo-server nodes sharing one Postgres database and one Redis: every
# room spans the nodes (session i of the plan goes to load process i mod P, and process p talks
# to node p mod NODES). Every run is bounded and stops everything it started.
#
#   load-tests/cluster-bench.sh NODES SESSIONS ROOM_SIZE SENDERS RATE DURATION
#
#   load-tests/cluster-bench.sh 3 50000 20 1 250 30     # 50,000 sessions on three nodes
#   load-tests/cluster-bench.sh 1 2000 1000 10 50 20    # rooms of 1,000 on one node, 50k/s
#   load-tests/cluster-bench.sh 2 2000 1000 10 50 20    # the same split over two nodes
#
# RATE is the total messages/s over all senders. Environment: DATABASE_ADMIN_URL
# (postgres://postgres@127.0.0.1:5432/postgres), REDIS_URL (redis://127.0.0.1:6379),
# PG_SYNCHRONOUS_COMMIT (the benchmark database's synchronous_commit; default: the server's),
# BASE_PORT (18800), LOAD_PROCS (load processes; default: enough for the sessions, at least
# NODES), NO_REDIS=1 (one node with the in-process broker: the single-node baseline),
# REDIS_CLUSTER=1 (a Redis Cluster of its own instead of REDIS_URL: three masters with a replica
# each on ports CLUSTER_PORT..+5 (17100); reports each master's CPU seconds and the number of
# the deployment's channels (rooms, user feeds, node control) it serves),
# SETUP_SECS (time given to connect before the window opens; default 15 + 1 per 600
# sessions), PROFILE (release; `debug` for the test suite's smoke run), RESULTS
# (load-tests/results), SKIP_BUILD=1, CARGO_TARGET_DIR (target).
#
# Prints the merged summary's path and a one-line JSON result: delivered/s, delivery latency
# p50/p99/max, delivered / (acked × room size), seq violations, each node's CPU seconds and
# peak RSS, Redis's CPU seconds during the run, the load average.
set -euo pipefail
cd "$(dirname "$0")/.."
NODES="${1:-3}"; SESSIONS="${2:-50000}"; ROOM="${3:-20}"; SENDERS="${4:-1}"
RATE="${5:-250}"; DURATION="${6:-30}"
ADMIN="${DATABASE_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
REDIS="${REDIS_URL:-redis://127.0.0.1:6379}"
BASE_PORT="${BASE_PORT:-18800}"
PROFILE="${PROFILE:-release}"
TARGET="${CARGO_TARGET_DIR:-target}/$PROFILE"
SECRET="bench-secret-bench-secret-bench-secret"
# One load process holds at most ~19,000 sockets (20,000 open files per process).
PROCS=$(( (SESSIONS + 16999) / 17000 ))
[ "$PROCS" -lt "$NODES" ] && PROCS=$NODES
PROCS="${LOAD_PROCS:-$PROCS}"
if [ "${NO_REDIS:-0}" = 1 ]; then
  [ "$NODES" = 1 ] || { echo "NO_REDIS=1 needs NODES=1" >&2; exit 1; }
  BROKER_ENV=()
else
  BROKER_ENV=(REDIS_URL="$REDIS")
fi
CLUSTER_PORT="${CLUSTER_PORT:-17100}"
SHARD_PORTS=()
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  FLAG=(); [ "$PROFILE" = release ] && FLAG=(--release)
  cargo build "${FLAG[@]}" -q --bin echo-server -p echo-server
  cargo build "${FLAG[@]}" -q -p echo-load
fi
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
DB="echo_bench_$(date +%s)_$$"
WORK="$(mktemp -d)"
RESULTS="${RESULTS:-load-tests/results}"; mkdir -p "$RESULTS"
NAME="cluster-${NODES}n-${SESSIONS}s-r${ROOM}-${RATE}mps-$STAMP"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql "$ADMIN" -qc "drop database if exists \"$DB\"" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ "${REDIS_CLUSTER:-0}" = 1 ]; then
  SEEDS=()
  for i in 0 1 2 3 4 5; do
    P=$((CLUSTER_PORT + i)); mkdir -p "$WORK/redis-$P"
    redis-server --port "$P" --bind 127.0.0.1 --cluster-enabled yes \
      --cluster-port $((CLUSTER_PORT + 100 + i)) --cluster-config-file "$WORK/redis-$P/nodes.conf" \
      --cluster-node-timeout 2000 --save "" --appendonly no --dir "$WORK/redis-$P" \
      > "$WORK/redis-$P.log" 2>&1 &
    PIDS+=($!); SEEDS+=("127.0.0.1:$P")
  done
  for i in 0 1 2 3 4 5; do
    for _ in $(seq 1 50); do redis-cli -p $((CLUSTER_PORT + i)) ping >/dev/null 2>&1 && break; sleep 0.1; done
  done
  redis-cli --cluster create "${SEEDS[@]}" --cluster-replicas 1 --cluster-yes > "$WORK/cluster-create.log"
  # Ready once the cluster is ok and the replicas have become replicas (three masters left).
  for _ in $(seq 1 100); do
    redis-cli -p "$CLUSTER_PORT" cluster info | grep -q cluster_state:ok &&
      [ "$(redis-cli -p "$CLUSTER_PORT" cluster nodes | awk '$3 ~ /master/' | wc -l)" = 3 ] && break
    sleep 0.2
  done
  # The masters, as the cluster sees them once it is made.
  mapfile -t SHARD_PORTS < <(redis-cli -p "$CLUSTER_PORT" cluster nodes \
    | awk '$3 ~ /master/ {split($2, a, "[:@]"); print a[2]}' | sort -n)
  BROKER_ENV=(REDIS_URL="$(printf 'redis://%s,' "${SEEDS[@]}" | sed 's/,$//')" REDIS_CLUSTER=true)
fi

psql "$ADMIN" -qc "create database \"$DB\"" >/dev/null
[ -n "${PG_SYNCHRONOUS_COMMIT:-}" ] &&
  psql "$ADMIN" -qc "alter database \"$DB\" set synchronous_commit = '$PG_SYNCHRONOUS_COMMIT'" >/dev/null
DATABASE_URL="${ADMIN%/*}/$DB"
SYNC=$(psql "$DATABASE_URL" -Atc "show synchronous_commit")
PREFIX="bench$$"
NODE_PIDS=()
URLS=()
for i in $(seq 0 $((NODES - 1))); do
  PORT=$((BASE_PORT + i))
  env SUPABASE_JWT_SECRET="$SECRET" DATABASE_URL="$DATABASE_URL" "${BROKER_ENV[@]}" \
    REDIS_CHANNEL_PREFIX="$PREFIX" ECHO_NODE_ID="node-$i" ECHO_DATA_DIR="$WORK/node-$i" \
    PORT="$PORT" RUST_LOG=warn WS_RATE_PER_SEC=1000 WS_RATE_BURST=2000 DATABASE_POOL_SIZE=16 \
    "$TARGET/echo-server" serve > "$WORK/node-$i.log" 2>&1 &
  NODE_PIDS+=($!); PIDS+=($!)
  URLS+=("http://127.0.0.1:$PORT")
  # Nodes start one after another: the first runs the migrations under the advisory lock.
  for _ in $(seq 1 200); do curl -sf "${URLS[$i]}/" >/dev/null && break; sleep 0.1; done
done

REDIS_PID=$( [ ${#BROKER_ENV[@]} -gt 0 ] && [ ${#SHARD_PORTS[@]} = 0 ] && pgrep -xo redis-server || true)
shard_pid() { pgrep -f "redis-server 127.0.0.1:$1 " | head -1; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
HZ=$(getconf CLK_TCK)

LOAD=("$TARGET/echo-load")
"${LOAD[@]}" seed --url "${URLS[0]}" --secret "$SECRET" --sessions "$SESSIONS" \
  --room-size "$ROOM" --seed-concurrency 64 --no-progress --out "$WORK/plan.json" \
  > "$WORK/seed.log" 2>&1
# Leave time for every process to connect its share before the common window opens.
START=$(( $(date +%s) + ${SETUP_SECS:-$(( 15 + SESSIONS / 600 ))} ))
declare -A NODE_CPU0
for i in "${!NODE_PIDS[@]}"; do NODE_CPU0[$i]=$(cpu_ticks "${NODE_PIDS[$i]}"); done
LOADERS=(); mkdir -p "$WORK/procs"
for p in $(seq 0 $((PROCS - 1))); do
  "${LOAD[@]}" ws fanout --url "${URLS[$((p % NODES))]}" --secret "$SECRET" \
    --plan "$WORK/plan.json" --process-index "$p" --process-count "$PROCS" --start-at "$START" \
    --senders "$SENDERS" --rate "$RATE" --duration "$DURATION" --drain 3 \
    --setup-timeout $(( START - $(date +%s) + 30 )) --no-progress \
    --out "$WORK/procs/p$p.json" > "$WORK/load-p$p.log" 2>&1 &
  LOADERS+=($!); PIDS+=($!)
done
# CPU is counted over the measurement window only (setup excluded).
while [ "$(date +%s)" -lt "$START" ]; do sleep 0.2; done
for i in "${!NODE_PIDS[@]}"; do NODE_CPU0[$i]=$(cpu_ticks "${NODE_PIDS[$i]}"); done
REDIS_CPU0=$( [ -n "$REDIS_PID" ] && cpu_ticks "$REDIS_PID" || echo 0)
declare -A SHARD_CPU0
for P in "${SHARD_PORTS[@]}"; do SHARD_CPU0[$P]=$(cpu_ticks "$(shard_pid "$P")"); done
PEAK_LOAD=0
declare -A PEAK_RSS
END=$(( START + DURATION ))
# Every node's RSS (MiB) at the start of the window and after each further minute.
RSS_MINUTES=""; NEXT_SAMPLE=$START
while [ "$(date +%s)" -lt "$END" ]; do
  for i in "${!NODE_PIDS[@]}"; do
    R=$(rss_kib "${NODE_PIDS[$i]}"); [ "$R" -gt "${PEAK_RSS[$i]:-0}" ] && PEAK_RSS[$i]=$R
  done
  if [ "$(date +%s)" -ge "$NEXT_SAMPLE" ]; then
    ROW=""; for i in "${!NODE_PIDS[@]}"; do ROW="$ROW,$(( $(rss_kib "${NODE_PIDS[$i]}") / 1024 ))"; done
    RSS_MINUTES="$RSS_MINUTES ${ROW#,}"; NEXT_SAMPLE=$(( NEXT_SAMPLE + 60 ))
  fi
  L=$(cut -d' ' -f1 /proc/loadavg); PEAK_LOAD=$(python3 -c "print(max($PEAK_LOAD, $L))")
  sleep 1
done
NODE_CPU=()
for i in "${!NODE_PIDS[@]}"; do
  NODE_CPU+=("$(python3 -c "print(round(($(cpu_ticks "${NODE_PIDS[$i]}") - ${NODE_CPU0[$i]}) / $HZ, 1))")")
done
REDIS_CPU=$( [ -n "$REDIS_PID" ] && python3 -c "print(round(($(cpu_ticks "$REDIS_PID") - $REDIS_CPU0) / $HZ, 1))" || echo null)
SHARDS=""
for P in "${SHARD_PORTS[@]}"; do
  CPU=$(python3 -c "print(round(($(cpu_ticks "$(shard_pid "$P")") - ${SHARD_CPU0[$P]}) / $HZ, 1))")
  CHANNELS=$(redis-cli -p "$P" pubsub shardchannels "$PREFIX:*" | grep -c . || true)
  SHARDS="$SHARDS $P:$CPU:$CHANNELS"
done
FAILED=0
for l in "${LOADERS[@]}"; do wait "$l" || FAILED=$((FAILED + 1)); done
"${LOAD[@]}" merge "$WORK"/procs/p*.json --out "$RESULTS/$NAME.json" >/dev/null 2>"$WORK/merge.err" || { cat "$WORK/merge.err"; exit 1; }
echo "summary: $RESULTS/$NAME.json"
python3 - "$RESULTS/$NAME.json" "$ROOM" "$NODES" "$PROCS" "$SYNC" "$REDIS_CPU" "$PEAK_LOAD" \
  "$FAILED" "${NODE_CPU[*]}" "$(for i in "${!NODE_PIDS[@]}"; do printf '%s ' "${PEAK_RSS[$i]:-0}"; done)" \
  "$SHARDS" "$RSS_MINUTES" <<'PY'
import json, sys
path, room, nodes, procs, sync, redis_cpu, peak_load, failed, cpu, rss, shards, minutes = sys.argv[1:]
s = json.load(open(path))
c, lat = s["counters"], s["latency"]["delivery"]["stats_us"]
acked, delivered = c.get("acked", 0), c.get("delivered", 0)
expected = acked * int(room)
load = open("/proc/loadavg").read().split()[:3]
print(json.dumps({
    "nodes": int(nodes),
    "broker": "redis-cluster" if shards.strip() else "redis" if redis_cpu != "null" else "in-process",
    "load_processes": int(procs),
    "sessions_subscribed": c.get("sessions_subscribed"), "alive_at_end": c.get("alive_at_end"),
    "closed_by_server": c.get("closed_by_server", 0),
    "sent": c.get("sent"), "acked": acked, "delivered": delivered,
    "delivery_ratio": round(delivered / expected, 5) if expected else None,
    "delivered_per_sec": round(s["rates"].get("delivered_per_sec", 0)),
    "delivery_ms": {k: round(lat[k] / 1000, 2) for k in ("p50", "p90", "p99", "max")},
    "seq_duplicates": c.get("seq_duplicates", 0), "seq_out_of_order": c.get("seq_out_of_order", 0),
    "seq_missing": c.get("seq_missing", 0), "error_frames": c.get("error_frames", 0),
    "node_cpu_secs": [float(x) for x in cpu.split()],
    "node_peak_rss_mib": [round(int(x) / 1024) for x in rss.split()],
    "node_rss_mib_each_minute": [[int(v) for v in row.split(",")] for row in minutes.split()],
    "redis_cpu_secs": None if redis_cpu == "null" else float(redis_cpu),
    "redis_shards": [
        {"port": int(p), "cpu_secs": float(c), "channels": int(n)}
        for p, c, n in (x.split(":") for x in shards.split())
    ],
    "synchronous_commit": sync, "load_processes_failed": int(failed),
    "loadavg_end": " ".join(load), "peak_load1": float(peak_load),
}))
PY
