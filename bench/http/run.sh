#!/usr/bin/env bash
# crm end to end over HTTP, beside the store's own ceiling, in one run.
#
#   bench/http/run.sh                          # SQLite, in a scratch directory
#   CRM_BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test bench/http/run.sh
#
# CRM (default target/release/crm), SECS (10 per scenario), IDS_N (1,000
# contacts that updates and reads pick from), SERVE_DATABASE (serve this
# existing store instead of a new one, e.g. a `crm demo` of 1M contacts;
# the run adds to it), SCENARIOS (which to run, default all: "store
# seq-create conc-create conc-update mixed"). Needs wrk, curl and, for
# PostgreSQL, psql (the run uses, and first drops, the schemas
# crm_bench_http and crm_bench_store). Scenarios:
#   store ceiling  `crm bench`: 1 and 64 clients appending to the store alone
#   seq-create     1 client creating contacts
#   conc-create    32 clients creating contacts
#   conc-update    32 clients editing the same IDS_N contacts (no If-Match)
#   mixed          64 clients: 80% reads (record, list, search, report page), 20% writes
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
CRM=${CRM:-$root/target/release/crm}
SECS=${SECS:-10}
IDS_N=${IDS_N:-1000}
PORT=${PORT:-18777}
base=http://127.0.0.1:$PORT
scratch=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$scratch"; }
trap cleanup EXIT

if [ -n "${CRM_BENCH_POSTGRES_URL:-}" ]; then
  backend=postgres
  for schema in crm_bench_http crm_bench_store; do
    psql -q "$CRM_BENCH_POSTGRES_URL" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null
  done
  serve_db=(--database "$CRM_BENCH_POSTGRES_URL" --schema crm_bench_http)
  store_db=(--database "$CRM_BENCH_POSTGRES_URL" --schema crm_bench_store)
else
  backend=sqlite
  serve_db=(--database "sqlite://$scratch/http.db")
  store_db=(--database "sqlite://$scratch/store.db")
fi

if [ -n "${SERVE_DATABASE:-}" ]; then
  serve_db=(--database "$SERVE_DATABASE")
fi

echo "# crm $("$CRM" --version | cut -d' ' -f2) on $backend, $(nproc) cores, ${SECS}s per scenario, $(date -u +%FT%TZ)"
SCENARIOS=${SCENARIOS:-store seq-create conc-create conc-update mixed}
wanted() { [[ " $SCENARIOS " == *" $1 "* ]]; }
for clients in 1 64; do
  wanted store || break
  echo "store ceiling, $clients clients: $("$CRM" "${store_db[@]}" bench --clients "$clients" --appends 300)"
done

token=$("$CRM" "${serve_db[@]}" --json user add --name Bench --department Ops --role admin |
  sed -n 's/.*"token": *"\([^"]*\)".*/\1/p')
CRM_LOG=warn "$CRM" "${serve_db[@]}" serve --addr "127.0.0.1:$PORT" >"$scratch/serve.log" 2>&1 &
pid=$!
for _ in $(seq 100); do curl -sf "$base/healthz" >/dev/null && break; sleep 0.1; done

# The contacts that updates and reads pick from.
for i in $(seq "$IDS_N"); do
  curl -sf -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d "{\"name\":\"Seed $i\",\"email\":\"seed$i@example.com\"}" "$base/v1/contacts" | grep -o '"id":"[^"]*"' | cut -d'"' -f4
done >"$scratch/ids"

run() {  # name, connections, script
  wanted "$1" || return 0
  local threads=2
  [ "$2" = 1 ] && threads=1
  local result
  result=$(cd "$here" && BENCH_DIR=$here TOKEN=$token IDS=$scratch/ids \
    wrk -t"$threads" -c"$2" -d"${SECS}s" --latency -s "$3" "$base" | sed -n 's/^RESULT //p')
  local rss
  rss=$(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$pid/status")
  python3 - "$1" "$result" "$rss" <<'PY'
import json, sys
name, result, rss = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
print("%-12s %8.0f req/s  p50 %6.1f ms  p99 %6.1f ms  non-2xx %d  errors %d  peak RSS %s MB" % (
    name, result["requests"] / result["seconds"], result["p50_us"] / 1000, result["p99_us"] / 1000,
    result["non2xx"], result["socket_errors"], rss))
PY
}
run seq-create 1 create.lua
run conc-create 32 create.lua
run conc-update 32 update.lua
run mixed 64 mixed.lua
