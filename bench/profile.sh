#!/usr/bin/env bash
# Where the CPU goes during one scenario: CPU time of the server, the load generator and
# the PostgreSQL backends (from /proc), plus a system-wide `perf record -e cpu-clock -g`
# while it runs. Run `BENCH_DB=NAME KEEP_DB=1 bench/compare.sh` first (it builds in release,
# seeds the database NAME and keeps it), then `BENCH_DB=NAME bench/profile.sh`; this script
# neither creates nor drops the database.
# Usage: bench/profile.sh [scenario]   (env: PG, MEMBERS, BENCH_DB)
# Safe on a shared machine: the server listens on a free port the OS picks, only the processes
# this script started are stopped, by PID, and the server's log and perf's data go to a new
# directory, /tmp/loyalty-profile.XXXXXX, kept after the run (its name is printed on stderr).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BENCH_DB:-}" ]; then
  echo "bench/profile.sh: name the database bench/compare.sh seeded with BENCH_DB=NAME (seed it with BENCH_DB=NAME KEEP_DB=1 bench/compare.sh)" >&2
  exit 1
fi
PG=${PG:-postgres://postgres@127.0.0.1:5432}/$BENCH_DB
MEMBERS=${MEMBERS:-100000}
SCENARIO=${1:-accrue}
BIN=target/release
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
OUT=$(mktemp -d /tmp/loyalty-profile.XXXXXX)
SERVER='' CLIENT=''
cleanup() { # stop only the processes this script started
  local p
  for p in $CLIENT $SERVER; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  echo "bench/profile.sh: server log and perf data in $OUT" >&2
}
trap cleanup EXIT
KEY=$(LOYALTY__DATABASE__URL="$PG" $BIN/loyalty clients create --name profile --role pos --store BENCH | sed -n 's/^api_key: //p')
LOYALTY__DATABASE__URL="$PG" LOYALTY__SERVER__LISTEN_ADDR="127.0.0.1:$PORT" LOYALTY__LOG__FILTER=warn \
  LOYALTY__JOBS__INTERVAL_SECS=0 LOYALTY__DATABASE__MAX_CONNECTIONS=32 \
  LOYALTY__SECURITY__RATE_POS=10000000 LOYALTY__SECURITY__BURST_SECONDS=10 \
  $BIN/loyalty serve > "$OUT/server.log" 2>&1 &
SERVER=$!
sleep 2
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
pg_ticks() { local t=0; for p in $(pgrep -u postgres); do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo $t; }
s0=$(ticks "$SERVER"); p0=$(pg_ticks)
LOYALTY_BENCH_KEY=$KEY $BIN/loyalty-bench run --scenario "$SCENARIO" --addr "127.0.0.1:$PORT" \
  --concurrency 8 --connections 4 --seconds 10 --members "$MEMBERS" &
CLIENT=$!
sleep 2
if command -v perf >/dev/null; then
  perf record -q -e cpu-clock -a -g -o "$OUT/perf.data" -- sleep 6 >/dev/null 2>&1 || true
fi
c1=$(ticks "$CLIENT")
wait "$CLIENT"
CLIENT=''
s1=$(ticks "$SERVER"); p1=$(pg_ticks)
echo "CPU ticks (1/100 s, $(nproc) cores) during the run: server=$((s1 - s0)) load-generator=$c1 postgres=$((p1 - p0))"
if [ -f "$OUT/perf.data" ]; then
  perf report -i "$OUT/perf.data" --sort comm --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -5
  echo "top PostgreSQL functions (inclusive):"
  perf report -i "$OUT/perf.data" --comm postgres --children --sort sym --stdio -g none 2>/dev/null \
    | grep -E 'PortalRun$|ExecInsertIndexTuples|standard_ExecutorStart|CommitTransactionCommand|XLogFlush|GetCachedPlan|pg_plan_queries' | head -8
fi
