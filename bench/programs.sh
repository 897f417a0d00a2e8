#!/usr/bin/env bash
# One programme against three: the same build on two PostgreSQL databases seeded alike,
# one with every member in the `default` programme, one with the members spread over
# three programmes (member i in programme i mod 3, a `pos` key of each), alternating short
# runs of each scenario. Prints calls per second and p50/p99 per run.
# Usage: bench/programs.sh [DIR (target/release)] [SCENARIOS ("accrue balance")] [CONCURRENCY (8)]
#   env: PG, MEMBERS (100000), SECONDS_PER_RUN (8), ROUNDS (3), SERVER_ENV (extra settings
#   for both servers, e.g. "LOYALTY__DATABASE__READ_BATCH_WORKERS=0").
# Safe on a shared machine: unique database names (dropped on exit), free ports from the
# OS, and only the servers this script started are stopped, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-target/release} SCENARIOS=${2:-accrue balance} CONC=${3:-8}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
MEMBERS=${MEMBERS:-100000}
SECS=${SECONDS_PER_RUN:-8}
ROUNDS=${ROUNDS:-3}
BENCH=$DIR/loyalty-bench
BASE=loyalty_programs_$$_$(date +%s)_$RANDOM
ONE=${BASE}_one THREE=${BASE}_three
SERVER=''
cleanup() {
  if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
  for db in "$ONE" "$THREE"; do psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true; done
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

for db in "$ONE" "$THREE"; do
  psql -q "$PG/postgres" -c "CREATE DATABASE $db"
  "$BENCH" seed --database-url "$PG/$db" --members "$MEMBERS" --history 10 > /dev/null
done
# Spread the second database's members (and what belongs to them) over three programmes;
# the first gets the same updates with every member staying in `default`, so that both
# databases' tables and indexes went through the same rewrite.
spread() { # database, programmes
  psql -q "$PG/$1" -v n="$2" <<'SQL'
INSERT INTO programs (id, name, settings, created_at)
  SELECT 'bench-' || n, 'Bench ' || n, NULL, now() FROM generate_series(2, 3) AS n;
INSERT INTO offer_catalogs (program_id, version) VALUES ('bench-2', 0), ('bench-3', 0);
UPDATE members SET program_id = CASE CAST(substr(card_number, 7) AS bigint) % :n
  WHEN 0 THEN 'default' WHEN 1 THEN 'bench-2' ELSE 'bench-3' END;
UPDATE orders o SET program_id = m.program_id FROM members m WHERE o.member_id = m.id;
UPDATE member_risk r SET program_id = m.program_id FROM members m WHERE r.member_id = m.id;
UPDATE events e SET program_id = m.program_id FROM members m WHERE e.member_id = m.id;
SQL
}
spread "$ONE" 1
spread "$THREE" 3
for db in "$ONE" "$THREE"; do psql -q "$PG/$db" -c "VACUUM ANALYZE"; done

keys() { # database, programmes
  local url=$1 n=$2 i program out=()
  for i in $(seq 0 $((n - 1))); do
    case $i in 0) program=default ;; *) program=bench-$((i + 1)) ;; esac
    out+=("$(LOYALTY__DATABASE__URL="$url" "$DIR/loyalty" clients create --name bench --role pos \
      --store BENCH --program "$program" 2>/dev/null | sed -n 's/^api_key: //p')")
  done
  (IFS=,; echo "${out[*]}")
}
KEYS_ONE=$(keys "$PG/$ONE" 1)
KEYS_THREE=$(keys "$PG/$THREE" 3)

run() { # label database keys scenario
  local label=$1 url=$2 key=$3 scenario=$4 port pid line
  port=$(free_port)
  # shellcheck disable=SC2086
  env LOYALTY__DATABASE__URL="$url" LOYALTY__SERVER__LISTEN_ADDR="127.0.0.1:$port" LOYALTY__LOG__FILTER=warn \
    LOYALTY__JOBS__INTERVAL_SECS=0 LOYALTY__DATABASE__MAX_CONNECTIONS=32 \
    LOYALTY__SECURITY__RATE_POS=10000000 LOYALTY__SECURITY__BURST_SECONDS=10 ${SERVER_ENV:-} \
    "$DIR/loyalty" serve > /dev/null 2>&1 &
  pid=$!
  SERVER=$pid
  sleep 1.5
  line=$(LOYALTY_BENCH_KEY=$key "$BENCH" run --scenario "$scenario" --addr "127.0.0.1:$port" \
    --concurrency "$CONC" --connections 4 --seconds "$SECS" --members "$MEMBERS")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  SERVER=
  echo "$label $scenario $(echo "$line" | grep -o 'calls_per_sec=[0-9]* p50_ms=[0-9.]* p90_ms=[0-9.]* p99_ms=[0-9.]*') errors=$(echo "$line" | sed -n 's/.*errors=//p')"
}

echo "== one programme vs three, $CONC callers, $SECS s runs, $ROUNDS rounds, $MEMBERS members"
for scenario in $SCENARIOS; do
  for r in $(seq "$ROUNDS"); do
    run "round $r one:  " "$PG/$ONE" "$KEYS_ONE" "$scenario"
    run "round $r three:" "$PG/$THREE" "$KEYS_THREE" "$scenario"
  done
done
