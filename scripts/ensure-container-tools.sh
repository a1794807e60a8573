#!/usr/bin/env bash
# Installs what localcluster/images.py needs to build and load real container images, from Debian's
# packages, when a tool is missing: buildah (builds, no Docker engine), debootstrap (the Python base
# image), containerd + ctr and runc (import and run), catatonit (the static pause binary).
set -euo pipefail
declare -A PACKAGE=(
  [buildah]=buildah
  [debootstrap]=debootstrap
  [containerd]=containerd
  [ctr]=containerd
  [runc]=runc
  [catatonit]=catatonit
)
missing=()
for tool in "${!PACKAGE[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null 2>&1 \
    || missing+=("${PACKAGE[$tool]}")
done
[ "${#missing[@]}" -eq 0 ] && exit 0
mapfile -t packages < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "container tools not found: installing ${packages[*]} from Debian's packages" >&2
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
