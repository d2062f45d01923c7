#!/usr/bin/env bash
# client-wasm in headless Chromium: bundle size, opening a 10,000-object board from IndexedDB
# offline, a local edit's main-thread time, 1,000 remote updates, memory. Prints numbers
# (tests/js/browser/bench.mjs says what each one measures); record them in BENCHMARKS.md.
#
# Usage: scripts/bench-client.sh      Env: OBJECTS=10000 REMOTE=1000 EDITS=200
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
(cd tests/js && npm ci --no-audit --no-fund --loglevel=error)
scripts/build-client.sh
scripts/install-chromium.sh
cargo build --release -p sync-server --locked
SYNC_SERVER_BIN=target/release/sync-server node tests/js/browser/bench.mjs
