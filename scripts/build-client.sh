#!/usr/bin/env bash
# Builds client-wasm for the browser: an ES module with TypeScript declarations in
# client-wasm/pkg (client_wasm.js, client_wasm.d.ts, client_wasm_bg.wasm).
#
#   1. scripts/check-wasm.sh: Debian's rustc-web toolchain (installed if missing) builds
#      crdt-schema and client-wasm for wasm32-unknown-unknown into target/wasm;
#   2. wasm-bindgen-cli of exactly the version Cargo.lock holds, installed with
#      `cargo install` into target/tools if that version is missing (about two minutes);
#   3. wasm-opt -Oz (Debian's binaryen, installed if missing) shrinks the .wasm;
#   4. wasm-bindgen --target web writes the JS glue and declarations;
#   5. prints the raw and gzip sizes;
#   6. compares client_wasm.js and client_wasm_bg.wasm with the committed copy the server
#      embeds, client-wasm/app/pkg/: fails if they differ (the build is reproducible, see
#      scripts/check-wasm.sh, so a difference means the sources changed since the copy was
#      made), or, with --update, copies them there (then commit them).
#
# Usage: scripts/build-client.sh [--update]
# Env:   CHECK_WASM_SKIP_APT=1  skip the package steps (fails if the tools are missing).
#        UPDATE_APP_PKG=1       same as --update.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '[build-client] %s\n' "$*" >&2; }
fail() {
    printf '[build-client] ERROR: %s\n' "$*" >&2
    exit 1
}

UPDATE="${UPDATE_APP_PKG:-0}"
for arg in "$@"; do
    case "$arg" in
    --update) UPDATE=1 ;;
    *) fail "unknown argument: $arg (usage: scripts/build-client.sh [--update])" ;;
    esac
done

# --- 1. wasm32 build --------------------------------------------------------------------
scripts/check-wasm.sh
WASM=target/wasm/wasm32-unknown-unknown/release/client_wasm.wasm
[ -f "$WASM" ] || fail "$WASM was not built"

# --- 2. wasm-bindgen-cli matching Cargo.lock --------------------------------------------
version="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)"
[ -n "$version" ] || fail "no wasm-bindgen in Cargo.lock"
TOOLS="$ROOT/target/tools"
BINDGEN="$TOOLS/bin/wasm-bindgen"
if [ "$("$BINDGEN" --version 2>/dev/null | awk '{print $2}')" != "$version" ]; then
    log "installing wasm-bindgen-cli $version into $TOOLS"
    # --locked first; its lock file has named a crate version the registry later yanked
    # (webpki-roots 1.0.11 for 0.2.130), and then only a fresh resolution installs it.
    cargo install --root "$TOOLS" --version "$version" --locked --force wasm-bindgen-cli ||
        cargo install --root "$TOOLS" --version "$version" --force wasm-bindgen-cli
fi

# --- 3. wasm-opt -------------------------------------------------------------------------
# Before wasm-bindgen: Debian's binaryen (108) breaks the externref table that wasm-bindgen's
# output initialises ("WebAssembly.Table.set(): Argument 1 is invalid"), but optimises the
# plain rustc output fine, and wasm-bindgen then keeps what it needs.
if ! command -v wasm-opt >/dev/null && [ "${CHECK_WASM_SKIP_APT:-0}" != 1 ]; then
    SUDO=()
    [ "$(id -u)" -eq 0 ] || SUDO=(sudo)
    log "installing binaryen (wasm-opt)"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends binaryen ||
        { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
            "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends binaryen; }
fi
command -v wasm-opt >/dev/null || fail "wasm-opt not found (package binaryen)"
OPT_DIR=target/wasm/opt
mkdir -p "$OPT_DIR"
# The features rustc enables by default for wasm32 (1.82+); binaryen must accept them.
wasm-opt -Oz --enable-bulk-memory --enable-mutable-globals --enable-nontrapping-float-to-int \
    --enable-sign-ext --enable-reference-types --enable-multivalue \
    --strip-debug --strip-producers -o "$OPT_DIR/client_wasm.wasm" "$WASM"

# --- 4. JS glue --------------------------------------------------------------------------
OUT=client-wasm/pkg
rm -rf "$OUT"
"$BINDGEN" --target web --out-dir "$OUT" "$OPT_DIR/client_wasm.wasm"
BG="$OUT/client_wasm_bg.wasm"

# --- 5. sizes ----------------------------------------------------------------------------
raw=$(stat -c %s "$BG")
gz=$(gzip -9c "$BG" | wc -c)
glue=$(gzip -9c "$OUT/client_wasm.js" | wc -c)
echo "client-wasm: $OUT ready; .wasm $raw bytes ($gz gzip), glue $glue gzip, total $((gz + glue)) bytes gzip"

# --- 6. the copy the server embeds -------------------------------------------------------
APP_PKG=client-wasm/app/pkg
FILES=(client_wasm.js client_wasm_bg.wasm)
describe() {
    if [ -f "$1" ]; then
        printf '  %-36s %9s bytes  sha256 %s\n' "$1" "$(stat -c %s "$1")" "$(sha256sum "$1" | cut -d' ' -f1)" >&2
    else
        printf '  %-36s missing\n' "$1" >&2
    fi
}
differ=()
for f in "${FILES[@]}"; do
    cmp -s "$OUT/$f" "$APP_PKG/$f" || differ+=("$f")
done
if [ ${#differ[@]} -eq 0 ]; then
    echo "client-wasm: $APP_PKG is up to date"
elif [ "$UPDATE" = 1 ]; then
    mkdir -p "$APP_PKG"
    for f in "${differ[@]}"; do cp "$OUT/$f" "$APP_PKG/$f"; done
    echo "client-wasm: updated $APP_PKG (${differ[*]}); commit it"
else
    log "the module built from these sources differs from the copy the server embeds:"
    for f in "${differ[@]}"; do
        describe "$OUT/$f"
        describe "$APP_PKG/$f"
    done
    fail "$APP_PKG is out of date; run scripts/build-client.sh --update (or UPDATE_APP_PKG=1 scripts/test.sh) and commit $APP_PKG"
fi
