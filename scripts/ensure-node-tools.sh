#!/usr/bin/env bash
# Installs what the local real node runs on (localcluster/node.py) from Debian's packages when
# absent: containerd (CRI), runc, the CNI plugins (bridge, host-local, loopback), iptables
# (kube-proxy's Service rules) and iproute2 (the node's bridge).
set -euo pipefail
need=()
command -v containerd >/dev/null 2>&1 || need+=(containerd)
command -v runc >/dev/null 2>&1 || need+=(runc)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
[ "${#need[@]}" -eq 0 ] && exit 0
echo "installing ${need[*]} from Debian's packages (the local real node)" >&2
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
