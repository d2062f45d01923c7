#!/usr/bin/env bash
# Installs Debian's Chromium for the browser tests if it is missing (playwright-core drives it;
# nothing downloads a browser at run time). Idempotent; sudo only when not root.
set -euo pipefail
BIN=${CHROMIUM_BIN:-/usr/bin/chromium}
if [ -x "$BIN" ]; then
    echo "[install-chromium] $("$BIN" --version 2>/dev/null || echo "$BIN") already installed"
    exit 0
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "[install-chromium] not root and no sudo; install the chromium package" >&2; exit 1; }
    SUDO=(sudo)
fi
echo "[install-chromium] installing Debian's chromium"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium ||
    { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; }
[ -x "$BIN" ] || { echo "[install-chromium] $BIN still missing" >&2; exit 1; }
