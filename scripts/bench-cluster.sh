#!/usr/bin/env bash
# Cross-node fan-out benchmark: one board, one client dragging a note at 60 Hz, RECEIVERS
# clients watching.
#
#   one   one node on PostgreSQL, no Redis: the dragger and the receivers on it;
#   two   two nodes on the same PostgreSQL with Redis between them: the dragger on node A,
#         every receiver on node B (each update crosses Redis).
#
# Both configurations commit every update to PostgreSQL before anyone sees it. The nodes are
# pinned to SERVER_CORE (two nodes share it: the same CPU for the servers either way), the load
# generator to LOADGEN_CORE; PostgreSQL and Redis run where the machine puts them. Runs
# alternate configurations; the table shows the run with the median p99, and CPU is the sum
# over the nodes, per 1,000 deliveries.
#
# Environment:
#   DATABASE=postgres://postgres@127.0.0.1:5432/test   (a fresh schema is made and dropped)
#   REDIS=redis://127.0.0.1:6379
#   RECEIVERS=100 DURATION=8 REPEAT=5
#   OUT=target/bench-cluster  SERVER_CORE=0 LOADGEN_CORE=1
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
DATABASE=${DATABASE:-postgres://postgres@127.0.0.1:5432/test}
REDIS=${REDIS:-redis://127.0.0.1:6379}
RECEIVERS=${RECEIVERS:-100}
DURATION=${DURATION:-8}
REPEAT=${REPEAT:-5}
OUT=${OUT:-$ROOT/target/bench-cluster}
SERVER_CORE=${SERVER_CORE:-0}
LOADGEN_CORE=${LOADGEN_CORE:-1}

mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

command -v psql >/dev/null || { echo "psql is required (to make the benchmark's schema)" >&2; exit 1; }
echo "== building release binaries" >&2
cargo build --release -p tests --bin loadgen || exit 1
cargo build --release -p sync-server || exit 1
LOADGEN=$ROOT/target/release/loadgen
OURS=$ROOT/target/release/sync-server

SCHEMA=bench_$$_$(date +%s)
psql -q "$DATABASE" -c "CREATE SCHEMA $SCHEMA" || exit 1
DB_URL="$DATABASE?options=-c%20search_path%3D$SCHEMA"

PIDS=()
PORTS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  PIDS=()
  PORTS=()
}
trap 'cleanup; psql -q "$DATABASE" -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE"' EXIT

# start_node NAME [REDIS_URL]: starts a node; appends its pid and port.
start_node() {
  local name=$1 redis=${2:-} log=$OUT/$1.log i line
  local args=(serve --bind 127.0.0.1 --port 0 --database-url "$DB_URL" --node-id "$name"
    --max-connections-per-address 0 --message-rate 0 --http-rate 0)
  if [[ -n $redis ]]; then args+=(--redis-url "$redis" --redis-prefix "$SCHEMA"); fi
  taskset -c "$SERVER_CORE" "$OURS" "${args[@]}" >"$log" 2>"$OUT/$name.stderr" &
  PIDS+=($!)
  for i in $(seq 150); do
    line=$(grep -Em1 '^listening on http://' "$log" 2>/dev/null) && break
    sleep 0.1
  done
  [[ -n ${line:-} ]] || { echo "!! node $name did not start (see $OUT/$name.stderr)" >&2; return 1; }
  PORTS+=("${line##*:}")
}

pids() { local IFS=,; echo "${PIDS[*]}"; }

FAILED=()
run_one() {
  local config=$1 sender receivers
  echo "== $config" >&2
  case $config in
  one)
    start_node one || { FAILED+=("$config:start"); cleanup; return; }
    sender=ws://127.0.0.1:${PORTS[0]}/v1/sync
    receivers=$sender
    ;;
  two)
    start_node a "$REDIS" && start_node b "$REDIS" || { FAILED+=("$config:start"); cleanup; return; }
    sender=ws://127.0.0.1:${PORTS[0]}/v1/sync
    receivers=ws://127.0.0.1:${PORTS[1]}/v1/sync
    ;;
  esac
  if ! taskset -c "$LOADGEN_CORE" "$LOADGEN" run --boards 1 --clients $((RECEIVERS + 1)) \
    --draggers 1 --rate 60 --duration "$DURATION" --url-base "$receivers" \
    --sender-url-base "$sender" --server "$config" --server-pid "$(pids)" \
    --scenario "x$RECEIVERS" --json-out "$RESULTS" >/dev/null; then
    FAILED+=("$config")
  fi
  cleanup
}

for ((rep = 1; rep <= REPEAT; rep++)); do
  for config in one two; do
    run_one "$config"
  done
done

{
  echo "Machine: $(nproc) cores, $(lscpu | grep 'Model name' | sed 's/Model name: *//'), $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "Command: RECEIVERS=$RECEIVERS DURATION=$DURATION REPEAT=$REPEAT scripts/bench-cluster.sh"
  echo
  "$LOADGEN" table "$RESULTS"
  if ((${#FAILED[@]})); then echo "**FAILED (missing deliveries, disconnects or errors): ${FAILED[*]}**"; fi
} | tee "$OUT/results.md"

((${#FAILED[@]} == 0))
