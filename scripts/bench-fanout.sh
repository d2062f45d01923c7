#!/usr/bin/env bash
# Fan-out benchmark: the minimal relay (floor), the reference y-websocket server
# (@y/websocket-server, in memory) and ours (sync-server, SQLite, durable), same scenarios; and
# the Hocuspocus dialect: ours at /v1/hocuspocus (ours-hocuspocus) and the Hocuspocus server
# itself (@hocuspocus/server 4.x, in memory: hocuspocus), driven by the same load generator
# speaking @hocuspocus/provider's framing; and y-sweet 0.9.1 (in memory: ysweet), its boards
# created and joined through its document API as @y-sweet/client does (loadgen --doc-api y-sweet).
#
# First it measures the disk's bare fsync where the databases live (loadgen fsync: 4 KiB writes
# made durable three ways, median and p99): the floor a durable commit adds to a fan-out.
#
# Each scenario gets a freshly started server pinned to core 0; the load generator runs pinned to
# core 1. Runs are ordered scenario by scenario, alternating servers, so that background load on
# the machine hits all servers alike; each result records the CPU other processes used meanwhile.
# Results go to $OUT/results.jsonl (one JSON line per scenario and server, and one with
# "kind": "fsync") and a markdown summary to $OUT/results.md (also printed): the fsync floor,
# each run (p99 beside the longest stall a receiver saw), receivers incomplete after the drain,
# and ours against each peer (p99 and CPU per 1,000 deliveries, ours ÷ peer).
#
# Three scenarios of issue 19 besides the fan-out (results in the same files and tables):
#   storm   reconnect storm (ours only; loadgen storm starts, stops, restarts and kills our
#           server itself): STORM_BOARDS × STORM_CLIENTS clients with ?ack=1 sync, the server
#           stops (SIGTERM), each client makes one offline edit, the server starts again on the
#           same database and port and the clients reconnect spread over STORM_SPREAD seconds.
#           Per client from the restart: offline edit durable (acknowledged), every other
#           offline edit of its board received; peak RSS; then kill -9, start, and every edit
#           read back over HTTP.
#   large   large board (ours only; loadgen large): a LARGE_MB board (update v1) generated in
#           the board layout, imported with `sync-server import`, joined by one client, then
#           by LARGE_JOINERS at once (each must get the whole state within 30 s); RSS idle, with
#           one client, sampled during the joins, peak (VmHWM), steady, after close; and the RSS
#           a yrs doc holding the board costs in a process of its own.
#   d10k    the idle scenario at 10,000 connections (every server; the open-files limit is
#           raised to the hard limit below, which must be above 10,000).
#
# Environment:
#   SERVERS="relay reference ours ours-hocuspocus hocuspocus ysweet"
#                                    servers to run, in order
#   SCENARIOS="a2 a10 a50 a200 b20 b100 b400 c d storm large d10k"
#   DURATION=5                       measured seconds per fan-out scenario (plus 1 s warm-up)
#   REPEAT=3                         runs of each fan-out scenario per server; the tables show
#                                    the run with the median p99 (this machine is shared: noisy)
#   IDLE_CONNECTIONS=5000            connections in scenario d
#   OUT=target/bench-fanout          output directory (results.jsonl is replaced)
#   SERVER_CORE=0 LOADGEN_CORE=1     CPU pinning
#   OURS_ARGS=""                     extra flags for ours, e.g. "--commit-interval-us 0"
#   OURS_BASE=/path/to/sync-server   another build of ours, run as server "base" (add "base" to
#                                    SERVERS) with the same flags: before and after, in one run
#   BENCH_TOOLS=target/bench-tools   where y-sweet is installed (cargo install --root), when missing
#   DB_DIR=${TMPDIR:-/tmp}           where ours' databases (a fresh directory per run) and the
#                                    fsync probe's files go
#   FSYNC_ITERATIONS=500             writes per method of the fsync probe (0: skip the probe)
#   STORM_BOARDS=200 STORM_CLIENTS=10 STORM_SPREAD=1
#                                    reconnect storm: boards, clients per board, seconds over
#                                    which they reconnect after the restart
#   LARGE_MB=50 LARGE_JOINERS=50     large board: encoded size (10^6 bytes), clients at once
#
# Exit status: non-zero if any scenario lost deliveries (a receiver incomplete after the drain),
# saw disconnects or failed to run.
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
SERVERS=${SERVERS:-"relay reference ours ours-hocuspocus hocuspocus ysweet"}
SCENARIOS=${SCENARIOS:-"a2 a10 a50 a200 b20 b100 b400 c d storm large d10k"}
DURATION=${DURATION:-5}
REPEAT=${REPEAT:-3}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-5000}
OUT=${OUT:-$ROOT/target/bench-fanout}
SERVER_CORE=${SERVER_CORE:-0}
LOADGEN_CORE=${LOADGEN_CORE:-1}
NODE_SERVER=$ROOT/tests/js/node_modules/@y/websocket-server/src/server.js
HOCUSPOCUS_SERVER=$ROOT/tests/js/bench/hocuspocus-server.mjs
BENCH_TOOLS=${BENCH_TOOLS:-$ROOT/target/bench-tools}
DB_DIR=${DB_DIR:-${TMPDIR:-/tmp}}
FSYNC_ITERATIONS=${FSYNC_ITERATIONS:-500}
STORM_BOARDS=${STORM_BOARDS:-200}
STORM_CLIENTS=${STORM_CLIENTS:-10}
STORM_SPREAD=${STORM_SPREAD:-1}
LARGE_MB=${LARGE_MB:-50}
LARGE_JOINERS=${LARGE_JOINERS:-50}
# Pinned: the version the goals of issue 19 are stated against.
YSWEET_VERSION=0.9.1
YSWEET=$BENCH_TOOLS/bin/y-sweet

mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"

# The load generator and the servers each hold one socket per connection.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "open files limit: $(ulimit -n)" >&2

echo "== building release binaries" >&2
cargo build --release -p tests --bin loadgen --bin relay || exit 1
LOADGEN=$ROOT/target/release/loadgen
RELAY=$ROOT/target/release/relay
OURS=$ROOT/target/release/sync-server
OURS_OK=1
if [[ " $SERVERS " == *" ours "* || " $SERVERS " == *" ours-hocuspocus "* ]]; then
  if ! cargo build --release -p sync-server; then
    echo "!! sync-server does not build: skipping ours" >&2
    OURS_OK=0
  fi
fi

# y-sweet from crates.io, built once into $BENCH_TOOLS (about 7 minutes on 2 cores). `--locked`
# is required: it builds y-sweet's own Cargo.lock. Without it cargo resolves afresh (axum 0.7.9,
# tower 0.5), nothing enables tokio's "io-std" feature any more (tower 0.4's "make" used to), and
# y-sweet's main.rs fails on `tokio::io::stdin` ("cannot find function `stdin` in module
# `tokio::io`"): the tokio feature issue 19 mentions.
install_ysweet() {
  if [[ -x $YSWEET && "$("$YSWEET" version 2>/dev/null)" == "$YSWEET_VERSION" ]]; then
    return 0
  fi
  echo "== installing y-sweet $YSWEET_VERSION into $BENCH_TOOLS (once; several minutes)" >&2
  cargo install y-sweet --version "$YSWEET_VERSION" --locked --root "$BENCH_TOOLS"
}
YSWEET_OK=1
if [[ " $SERVERS " == *" ysweet "* ]] && ! install_ysweet; then
  echo "!! y-sweet $YSWEET_VERSION did not install: skipping ysweet" >&2
  YSWEET_OK=0
fi

mkdir -p "$DB_DIR"
if ((FSYNC_ITERATIONS > 0)); then
  # Its probe files are temporary files of its own in $DB_DIR, removed when it ends.
  echo "== bare fsync in $DB_DIR" >&2
  taskset -c "$SERVER_CORE" "$LOADGEN" fsync --dir "$DB_DIR" --iterations "$FSYNC_ITERATIONS" \
    --json-out "$RESULTS" >/dev/null || echo "!! the fsync probe failed" >&2
fi

SERVER_PID=
URL_BASE=
TMPDIR_OURS=

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_for FILE REGEX: waits up to 15 s for a line matching REGEX; prints it.
wait_for() {
  local i
  for i in $(seq 150); do
    if grep -Eq "$2" "$1" 2>/dev/null; then
      grep -Em1 "$2" "$1"
      return 0
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      return 1
    fi
    sleep 0.1
  done
  return 1
}

start_server() {
  local name=$1 log=$OUT/$1-server.log line port
  case $name in
  relay)
    taskset -c "$SERVER_CORE" "$RELAY" --bind 127.0.0.1 --port 0 >"$log" 2>&1 &
    SERVER_PID=$!
    line=$(wait_for "$log" '^listening on http://') || return 1
    port=${line##*:}
    URL_BASE=ws://127.0.0.1:$port
    ;;
  reference)
    port=$(free_port)
    HOST=127.0.0.1 PORT=$port taskset -c "$SERVER_CORE" node "$NODE_SERVER" >"$log" 2>&1 &
    SERVER_PID=$!
    wait_for "$log" 'running at' >/dev/null || return 1
    URL_BASE=ws://127.0.0.1:$port
    ;;
  hocuspocus)
    taskset -c "$SERVER_CORE" node "$HOCUSPOCUS_SERVER" --bind 127.0.0.1 --port 0 >"$log" 2>&1 &
    SERVER_PID=$!
    line=$(wait_for "$log" '^listening on http://') || return 1
    port=${line##*:}
    URL_BASE=ws://127.0.0.1:$port
    ;;
  ysweet)
    [[ $YSWEET_OK == 1 ]] || return 1
    # No store argument: documents live in memory only ("No store set" in its log). No --auth:
    # open, like the others. It logs "Listening on ws://ADDR" with the port it bound.
    taskset -c "$SERVER_CORE" "$YSWEET" serve --host 127.0.0.1 --port 0 >"$log" 2>&1 &
    SERVER_PID=$!
    line=$(wait_for "$log" 'Listening on ws://') || return 1
    line=$(grep -Eo 'ws://[0-9.]+:[0-9]+' <<<"$line") || return 1
    port=${line##*:}
    # Its HTTP address: the load generator creates each board there and asks for its URL.
    URL_BASE=http://127.0.0.1:$port
    ;;
  ours | ours-hocuspocus | base)
    local bin=$OURS
    if [[ $name == base ]]; then
      bin=${OURS_BASE:-}
      [[ -n $bin && -x $bin ]] || return 1
    else
      [[ $OURS_OK == 1 && -x $OURS ]] || return 1
    fi
    TMPDIR_OURS=$(mktemp -d -p "$DB_DIR")
    # Every load generator connection comes from 127.0.0.1 and drags faster than a person:
    # lift the per-address and per-connection limits the benchmark would otherwise trip.
    taskset -c "$SERVER_CORE" "$bin" serve --bind 127.0.0.1 --port 0 \
      --database-url "sqlite://$TMPDIR_OURS/boards.db" \
      --max-connections-per-address 0 --message-rate 0 --http-rate 0 ${OURS_ARGS:-} \
      >"$log" 2>"$OUT/$name-server.stderr" &
    SERVER_PID=$!
    line=$(wait_for "$log" '^listening on http://') || return 1
    port=${line##*:}
    if [[ $name == ours-hocuspocus ]]; then
      URL_BASE=ws://127.0.0.1:$port/v1/hocuspocus
    else
      URL_BASE=ws://127.0.0.1:$port/v1/sync
    fi
    ;;
  esac
}

stop_server() {
  if [[ -n $SERVER_PID ]]; then
    kill "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
  fi
  SERVER_PID=
  if [[ -n $TMPDIR_OURS ]]; then
    rm -rf "$TMPDIR_OURS"
    TMPDIR_OURS=
  fi
}
trap stop_server EXIT

scenario_args() {
  local d=$DURATION
  case $1 in
  a2) echo "run --boards 1 --clients 2 --draggers 1 --rate 60 --duration $d" ;;
  a10) echo "run --boards 1 --clients 10 --draggers 1 --rate 60 --duration $d" ;;
  a50) echo "run --boards 1 --clients 50 --draggers 1 --rate 60 --duration $d" ;;
  a200) echo "run --boards 1 --clients 200 --draggers 1 --rate 60 --duration $d" ;;
  b20) echo "run --boards 1 --clients 10 --draggers 10 --rate 20 --duration $d" ;;
  b100) echo "run --boards 1 --clients 10 --draggers 10 --rate 100 --duration $d" ;;
  b400) echo "run --boards 1 --clients 10 --draggers 10 --rate 400 --duration $d" ;;
  c) echo "run --boards 100 --clients 5 --draggers 1 --rate 60 --duration $d" ;;
  d) echo "idle --boards 100 --connections $IDLE_CONNECTIONS --settle 2" ;;
  d10k) echo "idle --boards 100 --connections 10000 --settle 2" ;;
  storm) echo "storm --boards $STORM_BOARDS --clients $STORM_CLIENTS --spread $STORM_SPREAD" ;;
  large) echo "large --size-mb $LARGE_MB --joiners $LARGE_JOINERS" ;;
  *) return 1 ;;
  esac
}

# storm and large: the load generator runs our server itself (it stops, kills and restarts
# it), pinned like the others; other servers are not run (the scenarios measure ours).
run_ours_itself() {
  local server=$1 scenario=$2 args=$3
  if [[ $server != ours ]]; then
    return
  fi
  echo "== $server $scenario" >&2
  if [[ $OURS_OK != 1 || ! -x $OURS ]]; then
    SKIPPED+=("$server/$scenario")
    return
  fi
  # shellcheck disable=SC2086
  if ! taskset -c "$LOADGEN_CORE" "$LOADGEN" $args --server-bin "$OURS" --db-dir "$DB_DIR" \
    --server-core "$SERVER_CORE" --server-args "${OURS_ARGS:-}" \
    --server-log "$OUT/$server-$scenario-server.log" --server "$server" --scenario "$scenario" \
    --json-out "$RESULTS" >/dev/null; then
    FAILED+=("$server/$scenario")
  fi
}

run_one() {
  local server=$1 scenario=$2 args=$3
  if [[ $scenario == storm || $scenario == large ]]; then
    run_ours_itself "$@"
    return
  fi
  echo "== $server $scenario" >&2
  if ! start_server "$server"; then
    echo "!! $server did not start (see $OUT/$server-server.log); skipping" >&2
    SKIPPED+=("$server/$scenario")
    stop_server
    return
  fi
  local dialect=y-websocket doc_api=path
  if [[ $server == ours-hocuspocus || $server == hocuspocus ]]; then dialect=hocuspocus; fi
  if [[ $server == ysweet ]]; then doc_api=y-sweet; fi
  # shellcheck disable=SC2086
  if ! taskset -c "$LOADGEN_CORE" "$LOADGEN" $args --url-base "$URL_BASE" --server "$server" \
    --server-pid "$SERVER_PID" --scenario "$scenario" --dialect "$dialect" --doc-api "$doc_api" \
    --json-out "$RESULTS" >/dev/null; then
    FAILED+=("$server/$scenario")
  fi
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "!! $server died during $scenario" >&2
    FAILED+=("$server/$scenario:died")
  fi
  stop_server
}

FAILED=()
SKIPPED=()
for scenario in $SCENARIOS; do
  args=$(scenario_args "$scenario") || { echo "unknown scenario $scenario" >&2; exit 2; }
  reps=$REPEAT
  [[ $scenario == d || $scenario == d10k || $scenario == storm || $scenario == large ]] && reps=1
  for ((rep = 1; rep <= reps; rep++)); do
    for server in $SERVERS; do
      run_one "$server" "$scenario" "$args"
    done
  done
done

{
  echo "Machine: $(nproc) cores, $(lscpu | grep 'Model name' | sed 's/Model name: *//'), $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "Command: SERVERS=\"$SERVERS\" SCENARIOS=\"$SCENARIOS\" DURATION=$DURATION REPEAT=$REPEAT IDLE_CONNECTIONS=$IDLE_CONNECTIONS STORM_BOARDS=$STORM_BOARDS STORM_CLIENTS=$STORM_CLIENTS STORM_SPREAD=$STORM_SPREAD LARGE_MB=$LARGE_MB LARGE_JOINERS=$LARGE_JOINERS scripts/bench-fanout.sh"
  if [[ " $SERVERS " == *" ysweet "* ]]; then
    echo "y-sweet: $("$YSWEET" version 2>/dev/null || echo "not installed") (in memory, no auth)"
  fi
  echo
  "$LOADGEN" table "$RESULTS"
  if ((${#SKIPPED[@]})); then echo "Skipped (server did not start or build): ${SKIPPED[*]}"; fi
  if ((${#FAILED[@]})); then echo "**FAILED (missing deliveries, incomplete receivers, disconnects or errors): ${FAILED[*]}**"; fi
} | tee "$OUT/results.md"

((${#FAILED[@]} == 0))
