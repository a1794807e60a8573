"""Find or build the local cluster's binaries (etcd, kube-*, kubelet, kubectl, helm, crictl).

They are built from Go modules pinned under hack/ by hack/build-binaries.sh and cached per
version under ~/.cache/dbmigrate-operator/k8s/<versions>/bin/ (outside the work tree, so fresh
clones such as CI's reuse them): only the first run on a machine pays the build.
DBMIGRATE_K8S_BIN or KUBEBUILDER_ASSETS point at prebuilt binaries instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TextIO

REPO = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO / "hack" / "build-binaries.sh"
REQUIRED = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
NODE = ("kubelet", "kube-proxy", "crictl")  # the real node's; prebuilt dirs (envtest) may lack them
OPTIONAL = ("helm",)


def pinned_version(module_dir: str, module: str) -> str:
    """The version of `module` required in hack/<module_dir>/go.mod."""
    for line in (REPO / "hack" / module_dir / "go.mod").read_text().splitlines():
        parts = line.split()
        if parts[:1] == ["require"]:
            parts = parts[1:]
        if len(parts) >= 2 and parts[0] == module and parts[1].startswith("v"):
            return parts[1]
    raise RuntimeError(f"{module} not required in hack/{module_dir}/go.mod")


def k8s_version() -> str:
    return pinned_version("k8s", "k8s.io/kubernetes")


def cache_key() -> str:
    """Names the cache dir after every pinned version (as hack/build-binaries.sh does)."""
    etcd = pinned_version("etcd", "go.etcd.io/etcd/server/v3")
    helm = pinned_version("helm", "helm.sh/helm/v3")
    return f"{k8s_version()}-etcd-{etcd}-helm-{helm}"


def _prebuilt() -> Path | None:
    value = os.environ.get("DBMIGRATE_K8S_BIN") or os.environ.get("KUBEBUILDER_ASSETS")
    return Path(value) if value else None


def cached_bin_dir() -> Path:
    """Where the binaries are (or will be after a build)."""
    prebuilt = _prebuilt()
    if prebuilt:
        return prebuilt
    xdg = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    cache = Path(os.environ.get("DBMIGRATE_K8S_CACHE") or xdg / "dbmigrate-operator" / "k8s")
    return cache / cache_key() / "bin"


def missing(bin_dir: Path) -> list[str]:
    return [name for name in (*REQUIRED, *NODE, *OPTIONAL) if not os.access(bin_dir / name, os.X_OK)]


def ensure_binaries(progress: TextIO | None = None) -> Path:
    """Return the bin dir, building what is missing first (a cold build takes many minutes)."""
    bin_dir = cached_bin_dir()
    absent = missing(bin_dir)
    if not absent:
        return bin_dir
    if _prebuilt():
        if any(name in REQUIRED for name in absent):
            raise RuntimeError(f"{bin_dir} (DBMIGRATE_K8S_BIN/KUBEBUILDER_ASSETS) lacks {absent}")
        return bin_dir
    out = progress or sys.stderr
    print(
        f"\n[cluster] building {', '.join(absent)} into {bin_dir} (a cold build takes ~10-20 min on 2 cores)",
        file=out,
        flush=True,
    )
    proc = subprocess.Popen(
        ["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        print(f"[cluster] {line.rstrip()}", file=out, flush=True)
    if proc.wait() != 0:
        raise RuntimeError(f"{BUILD_SCRIPT} failed with exit code {proc.returncode}")
    still = [name for name in missing(bin_dir) if name in REQUIRED]
    if still:
        raise RuntimeError(f"build finished but {still} are missing from {bin_dir}")
    return bin_dir
