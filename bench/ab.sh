#!/usr/bin/env bash
# A/B comparison of two server builds, the way the "by hand" figures of docs/performance.md were taken:
# one PostgreSQL database seeded once, short runs alternating the two builds, and for each
# run the calls per second, p50/p99, and the CPU the server and PostgreSQL spent per call
# (from /proc, so the figures do not depend on how fast the machine happens to be that
# minute as much as calls per second do).
# Usage: bench/ab.sh OLD_DIR NEW_DIR [SCENARIO (accrue)] [CONCURRENCY (8)]
#   OLD_DIR, NEW_DIR: directories holding a release `loyalty` each (copy target/release/loyalty
#   aside before rebuilding); the load generator is NEW_DIR's `loyalty-bench` if present,
#   else target/release's.
#   env: PG, MEMBERS (100000), SECONDS_PER_RUN (8), ROUNDS (3), SEED (1; 0 reuses AB_DB's database),
#   ENV_OLD / ENV_NEW (extra settings for each server, e.g. "LOYALTY__DATABASE__ACCRUAL_BATCH_LINGER_US=0"),
#   AB_DB (the database; by default a new one for each run, loyalty_ab_<pid>_<time>_<random>),
#   KEEP_DB=1 (keep the database this run seeded; otherwise it is dropped on exit).
#   To seed once and reuse: AB_DB=loyalty_ab KEEP_DB=1 bench/ab.sh ..., then
#   AB_DB=loyalty_ab SEED=0 bench/ab.sh ... (a database reused with SEED=0 is never dropped).
# Safe on a shared machine: each server listens on a free port the OS picks, and only the
# servers this script started are stopped, by PID.
# Both builds must accept the database's schema (a build with a new migration needs its own
# database: run it twice, or migrate first).
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=$1 NEW=$2 SCENARIO=${3:-accrue} CONC=${4:-8}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
if [ "${SEED:-1}" != 1 ] && [ -z "${AB_DB:-}" ]; then
  echo "bench/ab.sh: SEED=${SEED} reuses a seeded database: name it with AB_DB=NAME" >&2
  exit 1
fi
DB=${AB_DB:-loyalty_ab_$$_$(date +%s)_$RANDOM}
[[ $DB =~ ^[a-z_][a-z0-9_]*$ ]] || { echo "bench/ab.sh: AB_DB must be a plain lower-case name, not '$DB'" >&2; exit 1; }
URL="$PG/$DB"
MEMBERS=${MEMBERS:-100000}
SECS=${SECONDS_PER_RUN:-8}
ROUNDS=${ROUNDS:-3}
PORT=
BENCH=$NEW/loyalty-bench
[ -x "$BENCH" ] || BENCH=target/release/loyalty-bench
HZ=$(getconf CLK_TCK)
SERVER='' DB_CREATED=''
cleanup() { # stop only the server this script started, drop only the database it created
  if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
  if [ -n "$DB_CREATED" ]; then
    if [ "${KEEP_DB:-0}" = 1 ]; then
      echo "bench/ab.sh: kept database $DB (KEEP_DB=1; reuse it with AB_DB=$DB SEED=0)" >&2
    else
      psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true
    fi
  fi
}
trap cleanup EXIT
# A port nobody listens on, from the OS.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

if [ "${SEED:-1}" = 1 ]; then
  DB_CREATED=1
  psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
  "$BENCH" seed --database-url "$URL" --members "$MEMBERS" --history 10
  psql -q "$URL" -c "VACUUM ANALYZE"
fi

# Sum of utime + stime (clock ticks) of the given processes.
ticks() { local t=0 p; for p in "$@"; do [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }

run() { # label dir extra-env
  local label=$1 dir=$2 extra=$3 key pid s0 p0 s1 p1 line calls
  key=$(LOYALTY__DATABASE__URL="$URL" "$dir/loyalty" clients create --name ab --role pos --store BENCH 2>/dev/null | sed -n 's/^api_key: //p')
  PORT=$(free_port)
  # shellcheck disable=SC2086
  env LOYALTY__DATABASE__URL="$URL" LOYALTY__SERVER__LISTEN_ADDR="127.0.0.1:$PORT" LOYALTY__LOG__FILTER=warn \
    LOYALTY__JOBS__INTERVAL_SECS=0 LOYALTY__DATABASE__MAX_CONNECTIONS=32 \
    LOYALTY__SECURITY__RATE_POS=10000000 LOYALTY__SECURITY__BURST_SECONDS=10 $extra \
    "$dir/loyalty" serve > /dev/null 2>&1 &
  pid=$!
  SERVER=$pid
  sleep 1.5
  s0=$(ticks "$pid"); p0=$(ticks $(pgrep -x postgres))
  line=$(LOYALTY_BENCH_KEY=$key "$BENCH" run --scenario "$SCENARIO" --addr "127.0.0.1:$PORT" \
    --concurrency "$CONC" --connections 4 --seconds "$SECS" --members "$MEMBERS")
  s1=$(ticks "$pid"); p1=$(ticks $(pgrep -x postgres))
  kill "$pid"; wait "$pid" 2>/dev/null || true
  SERVER=
  calls=$(echo "$line" | sed -n 's/.* calls=\([0-9]*\).*/\1/p')
  echo "$label $(echo "$line" | grep -o 'calls_per_sec=[0-9]* p50_ms=[0-9.]* p90_ms=[0-9.]* p99_ms=[0-9.]*') errors=$(echo "$line" | sed -n 's/.*errors=//p')" \
    "server_cpu_ms_per_call=$(awk -v t=$((s1 - s0)) -v n="$calls" -v hz="$HZ" 'BEGIN {printf "%.3f", t / hz * 1000 / n}')" \
    "postgres_cpu_ms_per_call=$(awk -v t=$((p1 - p0)) -v n="$calls" -v hz="$HZ" 'BEGIN {printf "%.3f", t / hz * 1000 / n}')"
}

echo "== $SCENARIO at $CONC callers, $SECS s runs, $ROUNDS rounds; old: $OLD ${ENV_OLD:-}; new: $NEW ${ENV_NEW:-}"
for r in $(seq "$ROUNDS"); do
  run "round $r old:" "$OLD" "${ENV_OLD:-}"
  run "round $r new:" "$NEW" "${ENV_NEW:-}"
done
