#!/usr/bin/env bash
# The board app in headless Chromium against the release server: app shell bytes and time to
# interactive, opening a 10,000-object board from the network and from IndexedDB, frame times
# while panning and dragging on a 1,000-object board. Prints numbers (tests/js/app/bench.mjs
# says what each one measures); record them in BENCHMARKS.md.
#
# Usage: scripts/bench-app.sh      Env: OPEN=10000 FRAMES=1000 RUNS=3 MOVES=300
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
(cd tests/js && npm ci --no-audit --no-fund --loglevel=error)
scripts/install-chromium.sh
cargo build --release -p sync-server --locked
SYNC_SERVER_BIN=target/release/sync-server node tests/js/app/bench.mjs
