#!/usr/bin/env bash
# The scale run: accrue and statement pages with 10 million members and 100 million ledger
# entries against the same figures with 100,000 members, both seeded in the lean shape
# (`loyalty-bench seed --lean-history`: every past accrual a ledger entry, only the first
# with an order, a line and a lot; the full shape, 1,030 MB at 100 k, would need ~100 GB).
# After a warm-up run on each, measured runs alternate between the two databases, ROUNDS times.
# Each run also prints, per call, the blocks PostgreSQL read into its buffers and found there
# and the write-ahead log's full-page images and kilobytes: what the database's size costs.
# PostgreSQL runs as configured; to compare its settings (shared_buffers, max_wal_size), change
# them between two runs with SKIP_SEED=1.
# Usage: bench/scale.sh   (env: PG, MEMBERS (10000000), SECONDS_PER_RUN (15), ROUNDS (2),
#        SKIP_SEED=1 to reuse the databases of an earlier run, SCALE_SMALL_DB / SCALE_LARGE_DB,
#        KEEP_DB=1)
# The two databases are new for each run, loyalty_scale_small_<id> and loyalty_scale_large_<id>
# (<id>: pid, time, random), and are dropped on exit unless KEEP_DB=1. SCALE_SMALL_DB=NAME and
# SCALE_LARGE_DB=NAME name them instead (existing databases of those names are dropped and
# re-seeded). To seed once and reuse them, e.g. to compare PostgreSQL settings:
#   SCALE_SMALL_DB=loyalty_scale_small SCALE_LARGE_DB=loyalty_scale_large KEEP_DB=1 bench/scale.sh
#   SCALE_SMALL_DB=loyalty_scale_small SCALE_LARGE_DB=loyalty_scale_large SKIP_SEED=1 bench/scale.sh
# (SKIP_SEED=1 needs both names, and never drops the databases it reuses).
# Safe on a shared machine: each server listens on a free port the OS picks, and only the
# servers this script started are stopped, by PID.
# Seeding 10 M members took 9 to 19 minutes (the machine's speed varies) and 36 GB on the 2-core machine of the README.
set -euo pipefail
cd "$(dirname "$0")/.."
PG=${PG:-postgres://postgres@127.0.0.1:5432}
MEMBERS=${MEMBERS:-10000000}
SECS=${SECONDS_PER_RUN:-15}
ROUNDS=${ROUNDS:-2}
PORT=
BIN=target/release
if [ -n "${SKIP_SEED:-}" ] && { [ -z "${SCALE_SMALL_DB:-}" ] || [ -z "${SCALE_LARGE_DB:-}" ]; }; then
  echo "bench/scale.sh: SKIP_SEED=1 reuses seeded databases: name them with SCALE_SMALL_DB=NAME SCALE_LARGE_DB=NAME" >&2
  exit 1
fi
ID=$$_$(date +%s)_$RANDOM
SMALL=${SCALE_SMALL_DB:-loyalty_scale_small_$ID}
LARGE=${SCALE_LARGE_DB:-loyalty_scale_large_$ID}
for name in "$SMALL" "$LARGE"; do
  [[ $name =~ ^[a-z_][a-z0-9_]*$ ]] || { echo "bench/scale.sh: database names must be plain lower-case names, not '$name'" >&2; exit 1; }
done
[ "$SMALL" != "$LARGE" ] || { echo "bench/scale.sh: SCALE_SMALL_DB and SCALE_LARGE_DB must differ" >&2; exit 1; }

work=$(mktemp -d)
SERVER='' CREATED=()
cleanup() { # stop only the server this script started, drop only the databases it created
  local name
  if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
  if [ "${#CREATED[@]}" -gt 0 ]; then
    if [ "${KEEP_DB:-0}" = 1 ]; then
      echo "bench/scale.sh: kept databases ${CREATED[*]} (KEEP_DB=1; reuse them with SCALE_SMALL_DB=$SMALL SCALE_LARGE_DB=$LARGE SKIP_SEED=1)" >&2
    else
      for name in "${CREATED[@]}"; do
        psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $name WITH (FORCE)" || true
      done
    fi
  fi
  rm -rf "$work"
}
trap cleanup EXIT
# A port nobody listens on, from the OS.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

cargo build --release --bin loyalty --bin loyalty-bench
echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $(psql --version)"

if [ -z "${SKIP_SEED:-}" ]; then
  for db in "$SMALL:100000" "$LARGE:$MEMBERS"; do
    name=${db%%:*} n=${db##*:}
    CREATED+=("$name")
    psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $name WITH (FORCE)" -c "CREATE DATABASE $name"
    $BIN/loyalty-bench seed --database-url "$PG/$name" --members "$n" --history 10 --lean-history
    psql -q "$PG/$name" -c "ANALYZE"
  done
fi
for name in "$SMALL" "$LARGE"; do
  echo "$name: $(psql -At "$PG/$name" -c "SELECT (SELECT count(*) FROM members) || ' members, ' || \
    (SELECT count(*) FROM ledger_entries) || ' ledger entries, ' || pg_size_pretty(pg_database_size('$name'))")"
done

rate() { sed -n 's/.*calls_per_sec=\([0-9]*\).*/\1/p'; }
# Blocks PostgreSQL read into its buffers (from the operating system or the disk) and found
# there, for the whole database: the difference the size of the database makes.
# And the write-ahead log: full-page images (a page's first change after a checkpoint) and bytes.
blocks() { psql -At "$PG/$1" -c "SELECT blks_read || ' ' || blks_hit || ' ' || wal_fpi || ' ' || wal_bytes \
  FROM pg_stat_database, pg_stat_wal WHERE datname = '$1'"; }
run() { # database members scenario concurrency
  local key line before after calls
  key=$(LOYALTY__DATABASE__URL="$PG/$1" $BIN/loyalty clients create --name scale --role pos --store BENCH | sed -n 's/^api_key: //p')
  PORT=$(free_port)
  LOYALTY__DATABASE__URL="$PG/$1" LOYALTY__SERVER__LISTEN_ADDR="127.0.0.1:$PORT" LOYALTY__LOG__FILTER=warn \
  LOYALTY__JOBS__INTERVAL_SECS=0 LOYALTY__DATABASE__MAX_CONNECTIONS=32 \
  LOYALTY__SECURITY__RATE_POS=10000000 LOYALTY__SECURITY__BURST_SECONDS=10 \
    $BIN/loyalty serve > /dev/null 2>&1 &
  SERVER=$!
  until grpcurl -plaintext -max-time 1 -H "authorization: Bearer $key" "127.0.0.1:$PORT" grpc.health.v1.Health/Check 2>/dev/null | grep -q SERVING; do
    kill -0 "$SERVER" 2>/dev/null || { echo "the server on $1 exited before SERVING" >&2; exit 1; }
    sleep 0.05
  done
  before=$(blocks "$1")
  line=$($BIN/loyalty-bench run --scenario "$3" --addr "127.0.0.1:$PORT" --key "$key" --concurrency "$4" \
    --connections 4 --seconds "$SECS" --members "$2")
  kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=''; sleep 1
  after=$(blocks "$1")
  calls=$(echo "$line" | sed -n 's/.* calls=\([0-9]*\).*/\1/p')
  echo "$1 ($2 members): $line $(awk -v b="$before" -v a="$after" -v c="${calls:-0}" 'BEGIN { if (c < 1) c = 1;
    split(b, x, " "); split(a, y, " "); printf "blocks_read_per_call=%.1f blocks_hit_per_call=%.1f wal_fpi_per_call=%.1f wal_kb_per_call=%.1f",
    (y[1] - x[1]) / c, (y[2] - x[2]) / c, (y[3] - x[3]) / c, (y[4] - x[4]) / c / 1024 }')" >&2
  echo "$line"
}
# Right after seeding, much of the large database is not in memory (35 GB on a 23 GiB
# machine) and the first minute of accruals reads it back: one unmeasured accrue run per
# database first, as a service that has been up a while would be.
# (run is never called in a $(...) subshell: the server it starts stays this shell's child,
# which the exit trap can stop.)
run "$SMALL" 100000 accrue 8 > /dev/null; run "$LARGE" "$MEMBERS" accrue 8 > /dev/null
for round in $(seq "$ROUNDS"); do
  echo "== round $round"
  run "$SMALL" 100000 accrue 8 > "$work/small"; small=$(rate < "$work/small")
  run "$LARGE" "$MEMBERS" accrue 8 > "$work/large"; large=$(rate < "$work/large")
  echo "accrue at 8 callers: $MEMBERS / 100000 members = $(awk -v a="$large" -v b="$small" 'BEGIN {printf "%.2f", a/b}')"
  run "$SMALL" 100000 statement 4 > /dev/null; run "$LARGE" "$MEMBERS" statement 4 > /dev/null
done
