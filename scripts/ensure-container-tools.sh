#!/usr/bin/env bash
# Installs what the local cluster's containers need, from Debian's packages, when a tool is missing:
# for localcluster/images.py buildah (builds, no Docker engine), debootstrap (the Python base image),
# containerd + ctr and runc (import and run), catatonit (the static pause binary); for the real node
# (localcluster/node.py) also the CNI plugins (bridge, host-local, loopback), iptables (kube-proxy's
# Service rules) and iproute2 (the node's bridge).
set -euo pipefail
declare -A PACKAGE=(
  [buildah]=buildah
  [debootstrap]=debootstrap
  [containerd]=containerd
  [ctr]=containerd
  [runc]=runc
  [catatonit]=catatonit
  [iptables]=iptables
  [ip]=iproute2
)
missing=()
for tool in "${!PACKAGE[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null 2>&1 \
    || missing+=("${PACKAGE[$tool]}")
done
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
[ "${#missing[@]}" -eq 0 ] && exit 0
mapfile -t packages < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "container tools not found: installing ${packages[*]} from Debian's packages" >&2
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
