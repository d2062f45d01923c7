#!/usr/bin/env bash
# Runs every test of the project: the README's test command.
#
#   1. JavaScript dependencies (real npm `yjs`) from tests/js/package-lock.json;
#   2. the Yjs-made fixture regenerates byte for byte from its committed script;
#   3. every relative link in the Markdown tracked by git resolves, to a tracked file and, for a
#      `#fragment` on a Markdown file, to one of its headings (scripts/check-links.mjs);
#   4. crdt-schema and client-wasm build for wasm32 (installs Debian's toolchain if missing);
#   5. rustfmt and clippy with warnings denied;
#   6. every Rust test in the workspace;
#   7. the Node interop tests against the server binary.
#
# PostgreSQL tests read TEST_DATABASE_URL; under CI=true they must run, otherwise they are
# skipped with a message when it is unset. Set SKIP_WASM=1 to skip step 4 while iterating.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

step() { printf '\n==> %s\n' "$*"; }

step "npm ci (tests/js)"
command -v npm >/dev/null || { echo "npm is required (Node.js 20+)" >&2; exit 1; }
(cd tests/js && npm ci --no-audit --no-fund --loglevel=error)

step "Yjs fixture regenerates byte for byte"
sh tests/js/fixtures/check-fixtures.sh

step "Markdown links resolve"
node scripts/check-links.mjs

if [ "${SKIP_WASM:-0}" != 1 ]; then
    step "wasm32 build"
    scripts/check-wasm.sh
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
export PROPTEST_CASES="${PROPTEST_CASES:-2000}"
cargo test --workspace --locked

step "interop tests: real yjs + y-websocket clients against the server binary"
cargo build -p sync-server --locked
node --test tests/js/interop/
