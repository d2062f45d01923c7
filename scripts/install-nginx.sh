#!/usr/bin/env bash
# Installs Debian's nginx for the multi-node tests (tests/js/cluster/) if it is missing: they run
# it as the reverse proxy in front of three sync-server nodes, unprivileged, with a config file
# of their own in a temp dir (never the system's nginx service, which they neither start nor
# use). Idempotent; sudo only when not root.
set -euo pipefail
BIN=${NGINX_BIN:-/usr/sbin/nginx}
if [ -x "$BIN" ]; then
    echo "[install-nginx] $("$BIN" -v 2>&1 || echo "$BIN") already installed"
    exit 0
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "[install-nginx] not root and no sudo; install the nginx package" >&2; exit 1; }
    SUDO=(sudo)
fi
echo "[install-nginx] installing Debian's nginx"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nginx ||
    { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nginx; }
[ -x "$BIN" ] || { echo "[install-nginx] $BIN still missing" >&2; exit 1; }
