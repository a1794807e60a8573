"""Remote-cluster mode: the e2e suites against an existing cluster instead of the local control plane.

`DBMIGRATE_E2E_KUBECONFIG=/path/to/admin-kubeconfig` makes the `cluster` fixture return a
`RemoteCluster`: same interface as `Cluster`, our own kubectl/helm with that kubeconfig, and no
local process started. What only the local node agent can do (mapped images, Services routed to
loopback, pods as local processes) raises `NeedsLocalCluster`; tests needing it carry
`@pytest.mark.local_cluster("<capability>")` and are skipped, with that reason, in this mode only.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

import yaml

from localcluster.binaries import cached_bin_dir, ensure_binaries
from localcluster.cluster import Cluster

ENV_VAR = "DBMIGRATE_E2E_KUBECONFIG"
MARKER = "local_cluster"
MIN_MINOR = 29  # Kubernetes 1.29: CRD validation rules (CEL) GA; the chart's kubeVersion floor
CLIENT_BINARIES = ("kubectl", "helm")


class NeedsLocalCluster(RuntimeError):
    """A capability only the local cluster of localcluster has, asked of a remote cluster."""

    def __init__(self, capability: str) -> None:
        self.capability = capability
        super().__init__(
            f"{capability} needs the local cluster of localcluster (its node agent); {ENV_VAR} points "
            f"at another cluster. Mark the test @pytest.mark.{MARKER}({capability!r}) or unset {ENV_VAR}."
        )


def configured_kubeconfig() -> Path | None:
    """The kubeconfig of remote mode, or None (the default: start the local control plane)."""
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        return None
    path = Path(value).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"{ENV_VAR}={value}: no such file")
    return path


def skip_reason(capability: str) -> str:
    return f"needs the local cluster ({capability}); {ENV_VAR} points at a real cluster"


def client_binaries(progress: TextIO | None = None) -> Path:
    """Where our kubectl and helm are: remote mode needs no etcd/kube-apiserver, so a bin dir with just
    these two (DBMIGRATE_K8S_BIN) is enough; otherwise the usual build of everything missing."""
    bin_dir = cached_bin_dir()
    if all(os.access(bin_dir / name, os.X_OK) for name in CLIENT_BINARIES):
        return bin_dir
    return ensure_binaries(progress)


def current_cluster_entry(kubeconfig: Path) -> dict[str, Any]:
    """The `cluster` stanza of the current context (server, CA, TLS options), file paths absolute."""
    doc = yaml.safe_load(kubeconfig.read_text()) or {}
    current = doc.get("current-context")
    contexts = {c["name"]: c.get("context") or {} for c in doc.get("contexts") or []}
    if current not in contexts:
        raise ValueError(f"{kubeconfig}: no current-context (or it names no context)")
    name = contexts[current].get("cluster")
    clusters = {c["name"]: c.get("cluster") or {} for c in doc.get("clusters") or []}
    if name not in clusters or not clusters[name].get("server"):
        raise ValueError(f"{kubeconfig}: context {current!r} names no cluster with a server")
    entry = copy.deepcopy(clusters[name])
    ca = entry.get("certificate-authority")
    if ca and not Path(ca).is_absolute():  # relative to the kubeconfig file, as kubectl resolves it
        entry["certificate-authority"] = str((kubeconfig.parent / ca).resolve())
    return dict(entry)


def token_kubeconfig(cluster_entry: dict[str, Any], token: str, namespace: str) -> str:
    """A kubeconfig for `cluster_entry` authenticating with a bearer token only."""
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "remote", "cluster": cluster_entry}],
            "users": [{"name": "token", "user": {"token": token}}],
            "contexts": [
                {"name": "remote", "context": {"cluster": "remote", "user": "token", "namespace": namespace}}
            ],
            "current-context": "remote",
        }
    )


class RemoteCluster(Cluster):
    """An existing cluster reached with an admin kubeconfig. `data_dir` is a local scratch dir (for the
    ServiceAccount kubeconfigs), removed by `stop()`; the cluster itself is never stopped.
    `image_map_file` names a file nobody reads: `map_image` refuses instead."""

    @classmethod
    def connect(cls, kubeconfig: Path, bin_dir: Path | None = None) -> RemoteCluster:
        entry = current_cluster_entry(kubeconfig)
        scratch = Path(tempfile.mkdtemp(prefix="dbmigrate-remote-"))
        server = str(entry["server"])
        return cls(bin_dir or client_binaries(sys.stderr), scratch, server, kubeconfig, scratch / "unused")

    @property
    def ca_cert(self) -> Path:
        """The CA as a file (from `certificate-authority` or `-data`); no CA configured is an error."""
        entry = current_cluster_entry(self.kubeconfig)
        if entry.get("certificate-authority"):
            return Path(entry["certificate-authority"])
        if entry.get("certificate-authority-data"):
            path = self.data_dir / "ca.crt"
            path.write_bytes(base64.b64decode(entry["certificate-authority-data"]))
            return path
        raise ValueError(f"{self.kubeconfig}: the current cluster has no certificate authority")

    def env(self) -> dict[str, str]:
        """os.environ + our kubectl/helm first on PATH + KUBECONFIG (no node agent image map)."""
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def check(self) -> None:
        """Fail at once, with the reason, on a cluster the suite cannot use: too old, or not admin."""
        version = json.loads(self.kubectl("version", "-o", "json").stdout)["serverVersion"]
        minor = int("".join(ch for ch in version["minor"] if ch.isdigit()) or 0)
        if (int(version["major"]), minor) < (1, MIN_MINOR):
            found = version["gitVersion"]
            raise RuntimeError(f"{self.server} runs Kubernetes {found}; the suite needs >= 1.{MIN_MINOR}")
        admin = self.kubectl("auth", "can-i", "*", "*", "--all-namespaces", check=False).stdout.strip()
        if admin != "yes":
            raise RuntimeError(f"{ENV_VAR}={self.kubeconfig}: not cluster admin (kubectl auth can-i '*' '*')")

    def _token_kubeconfig(self, token: str, namespace: str) -> str:
        """The server, CA and TLS options of the given kubeconfig's current cluster, with `token`."""
        return token_kubeconfig(current_cluster_entry(self.kubeconfig), token, namespace)

    def map_image(
        self,
        image: str,
        entrypoint: Sequence[str] = (),
        *,
        cmd: Sequence[str] = (),
        cwd: str | Path | None = None,
        env: dict[str, str] | None = None,
    ) -> NoReturn:
        raise NeedsLocalCluster(f"map_image({image!r}): pods of a mapped image run as local processes")

    def map_service(self, namespace: str, name: str, local_port: int, port: int | None = None) -> NoReturn:
        raise NeedsLocalCluster(f"map_service({namespace}/{name}): the API server reaching a loopback port")

    def stop(self, remove: bool = True) -> None:
        """Remove the local scratch dir; the remote cluster is left as it is."""
        if remove:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def state(self) -> dict[str, Any]:
        raise NeedsLocalCluster("state(): the `python -m localcluster` CLI manages local clusters only")


@contextlib.contextmanager
def remote_cluster(kubeconfig: Path) -> Iterator[RemoteCluster]:
    """Connect (checking version and admin rights) for the duration of the block; nothing is started."""
    remote = RemoteCluster.connect(kubeconfig)
    try:
        remote.check()
        print(f"[cluster] remote mode: {remote.server} ({ENV_VAR})", file=sys.stderr)
        yield remote
    finally:
        remote.stop()
