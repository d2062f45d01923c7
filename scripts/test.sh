#!/usr/bin/env bash
# Runs every test of the project: the README's test command.
#
#   1. JavaScript dependencies (real npm `yjs`) from tests/js/package-lock.json;
#   2. the Yjs-made fixture regenerates byte for byte from its committed script;
#   3. every relative link in the Markdown tracked by git resolves, to a tracked file and, for a
#      `#fragment` on a Markdown file, to one of its headings (scripts/check-links.mjs);
#   4. client-wasm builds for the browser (scripts/build-client.sh: Debian's wasm32 toolchain,
#      wasm-bindgen-cli and binaryen installed if missing), byte for byte as the copy the
#      server embeds, client-wasm/app/pkg/ (UPDATE_APP_PKG=1 refreshes that copy instead);
#   5. rustfmt and clippy with warnings denied;
#   6. every Rust test in the workspace;
#   7. the Node interop tests against the server binary;
#   8. the multi-node tests: three server processes on one PostgreSQL with Redis between them,
#      behind Debian's nginx (installed if missing, when the tests will run) as DEPLOYMENT.md
#      configures it;
#   9. client-wasm in headless Chromium (Debian's chromium, installed if missing, driven by
#      playwright-core) against the server binary; screenshots in target/browser-screenshots/;
#  10. the board app (client-wasm/app) as the server binary serves it, in headless Chromium,
#      driven through its interface; screenshots there too, each checked not to be blank.
#
# PostgreSQL tests read TEST_DATABASE_URL, and the multi-node tests TEST_REDIS_URL too; under
# CI=true they must run, otherwise they are skipped with a message when it is unset. Set
# SKIP_WASM=1 to skip steps 4 and 9 while iterating (refused under CI=true).
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

if [ "${SKIP_WASM:-0}" = 1 ] && [ "${CI:-}" = true ]; then
    echo "SKIP_WASM=1 is not allowed under CI=true" >&2
    exit 1
fi
if [ "${SKIP_WASM:-0}" != 1 ]; then
    step "client-wasm for the browser, the same as the server's copy (client-wasm/app/pkg)"
    scripts/build-client.sh
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

step "multi-node tests: three nodes, PostgreSQL, Redis, nginx, y-websocket clients"
if [ "${CI:-}" = true ] || { [ -n "${TEST_DATABASE_URL:-}" ] && [ -n "${TEST_REDIS_URL:-}" ]; }; then
    scripts/install-nginx.sh
fi
node --test tests/js/cluster/

if [ "${SKIP_WASM:-0}" != 1 ]; then
    step "client-wasm in headless Chromium"
    scripts/install-chromium.sh
    node --test tests/js/browser/
    step "the board app in headless Chromium"
    node --test tests/js/app/
else
    echo "SKIPPED: client-wasm browser tests (SKIP_WASM=1)"
fi
