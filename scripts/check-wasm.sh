#!/usr/bin/env bash
# Check that the browser-facing crates build for wasm32-unknown-unknown.
#
# The rustup toolchain on our machines has only the host target and cannot download
# wasm32, so this uses Debian's rustc/cargo 1.96 ("rustc-web") plus the std source and
# `-Z build-std` (client-wasm/README.md describes the setup). It:
#   1. installs the Debian packages if any is missing (apt-get; sudo only when not root);
#   2. builds `-p crdt-schema -p client-wasm` in release for wasm32-unknown-unknown into
#      target/wasm, so the host target/ cache of the rustup toolchain is never invalidated.
# No wasm-bindgen JS glue is generated here.
#
# The module is reproducible: the same sources build the same bytes in any checkout directory,
# with any CARGO_HOME. rustc writes source paths into the module (panic locations: the
# registry's crates by absolute path, files generated under target/ too), so the build maps the
# repository root to /workspace and CARGO_HOME to /cargo (`--remap-path-prefix`); std's
# source is Debian's, at the same path everywhere.
#
# Usage: scripts/check-wasm.sh [extra cargo build args, e.g. -v]
# Env:   CHECK_WASM_SKIP_APT=1  skip the package step (fails if the tools are missing).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TARGET=wasm32-unknown-unknown
TARGET_DIR=target/wasm
CRATES=(crdt-schema client-wasm)
PACKAGES=(rustc-web cargo-web rust-web-src lld-22)
DEB_CARGO=/usr/bin/cargo
DEB_RUSTC=/usr/bin/rustc
# The wasm linker from lld-22. rustc's default for this target is `rust-lld`, but
# /usr/bin/rust-lld comes from rust-web-llvm (a Recommends of rustc-web that also pulls
# llvm-22, ~100 MB), which --no-install-recommends skips; so name lld-22's wasm-ld directly.
WASM_LD=/usr/lib/llvm-22/bin/wasm-ld

log() { printf '[check-wasm] %s\n' "$*" >&2; }
fail() {
    printf '[check-wasm] ERROR: %s\n' "$*" >&2
    exit 1
}
# Any failure (ours or a command under set -e) ends with one unmistakable line.
trap 'rc=$?; [ "$rc" -eq 0 ] || printf "wasm32 build: FAILED (crdt-schema, client-wasm; exit %s)\n" "$rc" >&2' EXIT

# --- 1. Debian toolchain packages ------------------------------------------------------
is_installed() {
    dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed$'
}

if [ "${CHECK_WASM_SKIP_APT:-0}" != 1 ]; then
    missing=()
    for p in "${PACKAGES[@]}"; do
        is_installed "$p" || missing+=("$p")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        log "packages already installed: ${PACKAGES[*]}"
    else
        SUDO=()
        if [ "$(id -u)" -ne 0 ]; then
            command -v sudo >/dev/null || fail "not root and sudo not found; install: ${missing[*]}"
            SUDO=(sudo)
        fi
        log "missing packages: ${missing[*]}"
        t0=$SECONDS
        log "running: ${SUDO[*]:+${SUDO[*]} }apt-get update"
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
        log "running: ${SUDO[*]:+${SUDO[*]} }apt-get install -y --no-install-recommends ${missing[*]}"
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q --no-install-recommends "${missing[@]}"
        log "package step took $((SECONDS - t0))s"
    fi
fi

# Sanity checks on what the packages should have provided.
[ -x "$DEB_CARGO" ] || fail "$DEB_CARGO not found (package cargo-web)"
[ -x "$DEB_RUSTC" ] || fail "$DEB_RUSTC not found (package rustc-web)"
sysroot="$("$DEB_RUSTC" --print sysroot)"
[ -d "$sysroot/lib/rustlib/src/rust/library" ] ||
    fail "std source missing under $sysroot/lib/rustlib/src/rust/library (package rust-web-src)"
[ -x "$WASM_LD" ] || fail "$WASM_LD not found (package lld-22)"
log "using $("$DEB_CARGO" --version) / $("$DEB_RUSTC" --version)"

# --- 2. Build ---------------------------------------------------------------------------
CARGO_HOME_DIR="$(cd "${CARGO_HOME:-$HOME/.cargo}" 2>/dev/null && pwd || echo "${CARGO_HOME:-$HOME/.cargo}")"
case "$ROOT$CARGO_HOME_DIR" in
*'"'* | *'\'* | *=*) fail "the checkout or CARGO_HOME path holds a quote, backslash or '=': $ROOT, $CARGO_HOME_DIR" ;;
esac
# Sized for download, not speed: the browser fetches this module on every cold start.
args=(build --release --target "$TARGET" -Z build-std=std,panic_abort --target-dir "$TARGET_DIR"
    --config "target.$TARGET.linker=\"$WASM_LD\""
    --config 'profile.release.opt-level="s"' --config 'profile.release.lto="fat"'
    --config 'profile.release.codegen-units=1' --config 'profile.release.debug=false'
    --config 'profile.release.panic="abort"'
    # Code behind cfg(target_arch = "wasm32") is compiled only here: its warnings fail too.
    # No checkout or CARGO_HOME path in the module (see the top).
    --config "build.rustflags=[\"-D\", \"warnings\", \"--remap-path-prefix=$ROOT=/workspace\", \"--remap-path-prefix=$CARGO_HOME_DIR=/cargo\"]")
if [ -f Cargo.lock ]; then args+=(--locked); fi
for c in "${CRATES[@]}"; do args+=(-p "$c"); done
args+=("$@")

# PATH puts the Debian tools first; RUSTC/RUSTDOC pin them even if a caller exported the
# rustup ones; RUSTC_BOOTSTRAP=1 lets the stable compiler accept -Z build-std. A caller's
# RUSTFLAGS would replace build.rustflags (and the path remapping): unset.
# getrandom needs no rustflags: 0.4 picks its wasm_js backend from the crate feature alone
# (yrs enables fastrand/js -> getrandom/wasm_js on wasm32).
log "running: $DEB_CARGO ${args[*]}"
t0=$SECONDS
env -u RUSTC_WRAPPER -u RUSTUP_TOOLCHAIN -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS \
    PATH="/usr/bin:$PATH" RUSTC="$DEB_RUSTC" RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 \
    "$DEB_CARGO" "${args[@]}" || fail "cargo build for $TARGET failed (see errors above)"
log "build took $((SECONDS - t0))s; artifacts in $TARGET_DIR/$TARGET/release"

echo "wasm32 build: ok (crdt-schema, client-wasm)"
