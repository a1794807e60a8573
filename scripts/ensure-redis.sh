#!/usr/bin/env bash
# Installs redis-server from Debian's packages when it is missing: Argo CD's repo server and
# application controller need a Redis (localcluster/argocd.py starts one beside them).
set -euo pipefail
if command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ]; then
  exit 0
fi
echo "redis-server not found: installing it from Debian's packages" >&2
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends redis-server >/dev/null
