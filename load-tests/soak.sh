#!/usr/bin/env bash
# Soak: one release node holds SESSIONS subscribed sessions (rooms of 20, one sender per room)
# under steady fan-out while churn workers connect, subscribe and leave in a loop, for DURATION
# seconds. Every SAMPLE_SECS it records the server's RSS, open descriptors and live sessions; at
# the end it checks that RSS stayed flat after the warm-up and that the descriptors went back
# to their idle count once the load left (no leak). Bounded; stops by itself.
#
#   load-tests/soak.sh [SESSIONS=15000] [DURATION=600] [RATE_MSGS_PER_SEC=100] [CHURN=16]
#
# Env: PORT (18650), WARMUP_SECS (120: samples before it are not judged), SAMPLE_SECS (10),
# PROFILE (release), SKIP_BUILD=1, RESULTS (folder for soak-<time>.csv and .json;
# default load-tests/results), DATABASE_URL (default: SQLite in a temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."
SESSIONS="${1:-15000}"
DURATION="${2:-600}"
RATE="${3:-100}"
CHURN="${4:-16}"
PORT="${PORT:-18650}"
WARMUP="${WARMUP_SECS:-120}"
SAMPLE="${SAMPLE_SECS:-10}"
PROFILE="${PROFILE:-release}"
RESULTS="${RESULTS:-load-tests/results}"
SECRET="soak-secret-soak-secret-soak-secret!!"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  flag=(); [ "$PROFILE" = release ] && flag=(--release)
  cargo build "${flag[@]}" -q --bin echo-server -p echo-server
  cargo build "${flag[@]}" -q -p echo-load
fi
BIN="${CARGO_TARGET_DIR:-target}/$PROFILE"
mkdir -p "$RESULTS"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
CSV="$RESULTS/soak-$STAMP.csv"
DATA="$(mktemp -d)"
# Every session of the soak is a distinct user from loopback: the per-user and per-address
# limits are left at their defaults (loopback is exempt from the per-address ones).
env SUPABASE_JWT_SECRET="$SECRET" ECHO_DATA_DIR="$DATA" PORT="$PORT" RUST_LOG=warn \
  WS_RATE_PER_SEC=1000 WS_RATE_BURST=2000 "$BIN/echo-server" serve > "$DATA/server.log" 2>&1 &
SERVER=$!
LOADERS=()
cleanup() {
  for p in "${LOADERS[@]}"; do kill "$p" 2>/dev/null || true; done
  kill "$SERVER" 2>/dev/null || true
  rm -rf "$DATA"
}
trap cleanup EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/" >/dev/null && break; sleep 0.1; done
rss() { awk '/^VmRSS/ {print $2}' "/proc/$SERVER/status"; }
fds() { ls "/proc/$SERVER/fd" | wc -l; }
# Sockets among them: a leaked connection shows here (database files open lazily and do not).
socks() { find "/proc/$SERVER/fd" -lname 'socket:*' 2>/dev/null | wc -l; }
sessions() { curl -sf "http://127.0.0.1:$PORT/metrics" | awk '/^echo_ws_sessions[{ ]/ {print $2}'; }
IDLE_FDS=$(fds); IDLE_SOCKS=$(socks)
IDLE_RSS=$(rss)
LOAD=("$BIN/echo-load" ws --url "http://127.0.0.1:$PORT" --secret "$SECRET" --no-progress)
"${LOAD[@]}" fanout --sessions "$SESSIONS" --room-size 20 --senders 1 --rate "$RATE" \
  --duration "$DURATION" --setup-timeout 300 --out "$DATA/fanout.json" > "$DATA/fanout.txt" 2>&1 &
LOADERS+=($!)
FANOUT=$!
"${LOAD[@]}" churn --concurrency "$CHURN" --duration $((DURATION + 60)) \
  --out "$DATA/churn.json" > "$DATA/churn.txt" 2>&1 &
LOADERS+=($!)
CHURNER=$!
echo "t_secs,rss_kib,fds,sockets,sessions,loadavg" > "$CSV"
START=$(date +%s)
while kill -0 "$FANOUT" 2>/dev/null; do
  echo "$(( $(date +%s) - START )),$(rss),$(fds),$(socks),$(sessions || echo 0),$(cut -d' ' -f1 /proc/loadavg)" >> "$CSV"
  sleep "$SAMPLE"
done
FANOUT_RC=0; wait "$FANOUT" || FANOUT_RC=$?
kill "$CHURNER" 2>/dev/null || true; wait "$CHURNER" 2>/dev/null || true
# Give the server a moment to close what the load left, then count again.
sleep 5
END_FDS=$(fds); END_SOCKS=$(socks); END_RSS=$(rss); END_SESSIONS=$(sessions || echo 0)
tail -n 3 "$DATA/fanout.txt"; tail -n 3 "$DATA/churn.txt"
cp "$DATA/fanout.json" "$RESULTS/soak-$STAMP-fanout.json" 2>/dev/null || true
python3 - "$CSV" "$WARMUP" "$IDLE_FDS,$IDLE_SOCKS" "$IDLE_RSS" "$END_FDS,$END_SOCKS" "$END_RSS" "$END_SESSIONS" \
  "$SESSIONS" "$FANOUT_RC" "$RESULTS/soak-$STAMP.json" <<'PY'
import csv, json, sys
path, warmup, idle_fds, idle_rss, end_fds, end_rss, end_sessions, n, rc, out = sys.argv[1:]
idle_fds, idle_socks = idle_fds.split(",")
end_fds, end_socks = end_fds.split(",")
rows = [r for r in csv.DictReader(open(path))]
judged = [r for r in rows if int(r["t_secs"]) >= int(warmup)]
rss = [int(r["rss_kib"]) for r in judged]
fds = [int(r["fds"]) for r in judged]
summary = {
    "sessions": int(n), "samples": len(rows), "judged_samples": len(judged),
    "idle_rss_kib": int(idle_rss), "idle_fds": int(idle_fds), "idle_sockets": int(idle_socks),
    "rss_after_warmup_kib": rss[0] if rss else None, "rss_end_of_load_kib": rss[-1] if rss else None,
    "rss_min_kib": min(rss) if rss else None, "rss_max_kib": max(rss) if rss else None,
    "rss_growth_after_warmup_pct": round((rss[-1] - rss[0]) * 100 / rss[0], 2) if rss else None,
    "fds_min": min(fds) if fds else None, "fds_max": max(fds) if fds else None,
    "sockets_max": max(int(r["sockets"]) for r in judged) if judged else None,
    "after_load": {"fds": int(end_fds), "sockets": int(end_socks), "rss_kib": int(end_rss),
                   "sessions": float(end_sessions or 0)},
    "fanout_exit": int(rc),
}
# Flat: the last judged sample within 10% of the first. No leak: once the load has gone, the
# sockets are back to their idle count (a few for the pool's Postgres connections allowed) and
# no session is left.
summary["rss_flat"] = bool(rss) and abs(rss[-1] - rss[0]) <= 0.10 * rss[0]
summary["no_descriptor_leak"] = int(end_socks) <= int(idle_socks) + 20 and float(end_sessions or 0) == 0
json.dump(summary, open(out, "w"), indent=1)
print(json.dumps(summary))
sys.exit(0 if summary["rss_flat"] and summary["no_descriptor_leak"] and int(rc) == 0 else 1)
PY
echo "{\"loadavg\":\"$(cut -d' ' -f1-3 /proc/loadavg)\",\"csv\":\"$CSV\"}"
