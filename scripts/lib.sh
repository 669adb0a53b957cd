# Shared helpers for scripts/serve, scripts/test and .ci/run. Sourced, not executed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '\033[1;34m[echo]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[echo] %s\033[0m\n' "$*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

# Installs the Debian/Ubuntu packages that are not installed yet (apt-get update first, once).
ensure_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get to install them"
    log "installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# The Rust toolchain: present, or installed with rustup where the network allows it.
ensure_rust() {
  if ! command -v cargo >/dev/null; then
    ensure_packages curl ca-certificates
    log "installing the Rust toolchain with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
}

# System libraries the server itself builds against: a C toolchain, and FFmpeg's development
# libraries (video processing runs FFmpeg in-process; bindgen needs libclang to read them).
BUILD_PACKAGES=(build-essential pkg-config clang libclang-dev
  libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev
  libavfilter-dev libavdevice-dev)

# Starts the local Postgres cluster if it is not answering, then checks it (fails loudly).
ensure_postgres() {
  ensure_packages postgresql postgresql-client
  if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
    log "starting PostgreSQL"
    local ver
    ver="$(ls /etc/postgresql | sort -V | tail -n1)"
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start || $SUDO pg_ctlcluster "$ver" main start
    for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
  fi
  psql -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1' >/dev/null \
    || die "PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth) is required and cannot be reached"
}

# Starts Redis if it is not answering, then checks it (fails loudly).
ensure_redis() {
  ensure_packages redis-server redis-tools
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    log "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
    for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done
  fi
  [ "$(redis-cli -h 127.0.0.1 -p 6379 ping)" = "PONG" ] \
    || die "Redis at 127.0.0.1:6379 is required and cannot be reached"
}
