"""A real Argo CD (3.6.2, built from its Go module by `hack/build-binaries.sh argocd`) syncing an
Application from a bare Git repository on this machine: what the Argo CD stories
(tests/realnode/test_argocd.py) and `make demo`'s `--gitops argocd` variant run against.

Argo CD runs as processes beside the local control plane, not as Pods on the real node: its
repo server and application controller are one ~290 MB Go binary we build ourselves, so an image
would mean a second copy of it in containerd and a build step for nothing the stories look at; as
processes they use the cluster's admin kubeconfig directly (`ARGOCD_FAKE_IN_CLUSTER=true` makes
`https://kubernetes.default.svc` mean that kubeconfig's server) and read the `file://` repository
without a volume. What the stories look at, the sync waves, the health of our resources and the
Application, is the controller's logic, which does not depend on where it runs. No API server,
UI or Dex is started: the tests read Applications with kubectl, as `argocd app get` would.

The health check goes into `argocd-cm` exactly as docs/argocd.md tells users to: the ConfigMap an
install carries (with its `app.kubernetes.io/part-of: argocd` label, which the controller's
settings watch requires) patched with argocd/argocd-cm-patch.yaml.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from localcluster.binaries import REPO
from localcluster.cluster import Cluster, free_port

NAMESPACE = "argocd"
BUILD_SCRIPT = REPO / "hack" / "build-binaries.sh"
ENSURE_REDIS = REPO / "scripts" / "ensure-redis.sh"
CM_PATCH = REPO / "argocd" / "argocd-cm-patch.yaml"
IN_CLUSTER = "https://kubernetes.default.svc"
PART_OF = {"app.kubernetes.io/part-of": "argocd"}
# Seconds between Argo CD's polls of the repository (no webhook here): a commit syncs within it.
APP_RESYNC = 5
# Argo CD's own default pause between waves (2 s), kept so the stories see what users get.
SYNC_WAVE_DELAY = 2


def ensure_built() -> Path:
    """The bin dir holding argocd, its component symlinks and Git wrappers (built once, cached)."""
    done = subprocess.run([str(BUILD_SCRIPT), "argocd"], stdout=subprocess.PIPE, text=True, check=True)
    bin_dir = Path(done.stdout.strip().splitlines()[-1])
    for name in ("argocd-application-controller", "argocd-repo-server", "git-verify-wrapper.sh"):
        if not (bin_dir / name).exists():
            raise FileNotFoundError(f"{name} missing in {bin_dir} (hack/build-binaries.sh argocd)")
    return bin_dir


def ensure_redis() -> str:
    subprocess.run([str(ENSURE_REDIS)], check=True)
    found = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(found).exists():
        raise FileNotFoundError("redis-server not found after scripts/ensure-redis.sh")
    return found


def _git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "dbmigrate tests",
        "GIT_AUTHOR_EMAIL": "tests@dbmigrate.dev",
        "GIT_COMMITTER_NAME": "dbmigrate tests",
        "GIT_COMMITTER_EMAIL": "tests@dbmigrate.dev",
        "GIT_CONFIG_GLOBAL": "/dev/null",
    }
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


@dataclass
class GitRepo:
    """A bare repository (what Argo CD reads, by file:// URL) and a clone the tests commit in."""

    root: Path
    branch: str = "main"

    @property
    def bare(self) -> Path:
        return self.root / "repo.git"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def url(self) -> str:
        return f"file://{self.bare}"

    def init(self) -> GitRepo:
        self.root.mkdir(parents=True, exist_ok=True)
        _git(self.root, "init", "--quiet", "--bare", f"--initial-branch={self.branch}", str(self.bare))
        _git(self.root, "init", "--quiet", f"--initial-branch={self.branch}", str(self.work))
        _git(self.work, "remote", "add", "origin", str(self.bare))
        return self

    def commit(self, message: str, files: Mapping[str, str | None]) -> str:
        """Write (or, for None, remove) files, commit and push; returns the commit's sha."""
        for rel, text in files.items():
            path = self.work / rel
            if text is None:
                path.unlink(missing_ok=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        _git(self.work, "add", "-A")
        _git(self.work, "commit", "--quiet", "--allow-empty", "-m", message)
        _git(self.work, "push", "--quiet", "origin", self.branch)
        return _git(self.work, "rev-parse", "HEAD")

    def revert(self, sha: str) -> str:
        _git(self.work, "revert", "--no-edit", sha)
        _git(self.work, "push", "--quiet", "origin", self.branch)
        return _git(self.work, "rev-parse", "HEAD")


def _wait_established(cluster: Cluster, crd: str, timeout: float = 120) -> None:
    """Polls (a busy API server can be slow to serve a just-created CRD; `kubectl wait` gave up)."""
    deadline = time.monotonic() + timeout
    path = '{.status.conditions[?(@.type=="Established")].status}'
    while True:
        got = cluster.kubectl("get", "crd", crd, "-o", f"jsonpath={path}", check=False)
        if got.returncode == 0 and got.stdout.strip() == "True":
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"CRD {crd} not Established after {timeout}s: {got.stderr.strip()}")
        time.sleep(1)


def install_manifests(cluster: Cluster, crds: Path) -> None:
    """Argo CD's CRDs, and the objects an install carries that the controller reads."""
    files = [f"--filename={crds / f'{kind}-crd.yaml'}" for kind in ("application", "appproject")]
    cluster.kubectl("apply", "--server-side", *files, timeout=120)
    for crd in ("applications.argoproj.io", "appprojects.argoproj.io"):
        _wait_established(cluster, crd)
    cluster.kubectl("create", "namespace", NAMESPACE, check=False)
    base = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "argocd-cm",
                "namespace": NAMESPACE,
                "labels": {"app.kubernetes.io/name": "argocd-cm", **PART_OF},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "argocd-secret",
                "namespace": NAMESPACE,
                "labels": {"app.kubernetes.io/name": "argocd-secret", **PART_OF},
            },
        },
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "AppProject",
            "metadata": {"name": "default", "namespace": NAMESPACE},
            "spec": {
                "sourceRepos": ["*"],
                "destinations": [{"server": "*", "namespace": "*"}],
                "clusterResourceWhitelist": [{"group": "*", "kind": "*"}],
            },
        },
    ]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(base))
    # As docs/argocd.md tells users (section 1).
    cluster.kubectl(
        "-n", NAMESPACE, "patch", "configmap", "argocd-cm", "--type", "merge", "--patch-file", str(CM_PATCH)
    )


@dataclass
class ArgoCD:
    """The running Argo CD: its processes and where their logs are."""

    cluster: Cluster
    bin_dir: Path
    data_dir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def _launch(self, name: str, argv: list[str], env: Mapping[str, str]) -> None:
        with (self.data_dir / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.data_dir,
                env={**os.environ, **env},
                start_new_session=True,
            )

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.data_dir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def start(self, redis_server: str) -> ArgoCD:
        redis_port, repo_port = free_port(), free_port()
        redis = f"127.0.0.1:{redis_port}"
        self._launch(
            "redis",
            [
                redis_server,
                "--port",
                str(redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            {},
        )
        path = f"{self.bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"  # the Git wrappers
        self._launch(
            "repo-server",
            [
                str(self.bin_dir / "argocd-repo-server"),
                f"--port={repo_port}",
                f"--metrics-port={free_port()}",
                "--address=127.0.0.1",
                "--disable-tls",
                "--client-ca-path=",
                f"--redis={redis}",
                "--loglevel=info",
                "--logformat=text",
            ],
            {
                "PATH": path,
                "ARGOCD_GPG_ENABLED": "false",
                "TMPDIR": str(self.data_dir),
                # What `timeout.reconciliation` in argocd-cm sets: how long the repo server trusts
                # a branch's resolved commit (3 min by default; a commit synced only after it).
                "ARGOCD_RECONCILIATION_TIMEOUT": f"{APP_RESYNC}s",
            },
        )
        self._launch(
            "application-controller",
            [
                str(self.bin_dir / "argocd-application-controller"),
                f"--kubeconfig={self.cluster.kubeconfig}",
                f"--namespace={NAMESPACE}",
                f"--repo-server=127.0.0.1:{repo_port}",
                "--repo-server-plaintext",
                f"--redis={redis}",
                f"--metrics-port={free_port()}",
                "--persist-resource-health",
                f"--app-resync={APP_RESYNC}",
                "--app-resync-jitter=0",
                "--status-processors=2",
                "--operation-processors=2",
                "--loglevel=info",
                "--logformat=text",
            ],
            {
                "PATH": path,
                "KUBECONFIG": str(self.cluster.kubeconfig),
                "ARGOCD_FAKE_IN_CLUSTER": "true",
                "ARGOCD_SYNC_WAVE_DELAY": str(SYNC_WAVE_DELAY),
                "ARGOCD_RECONCILIATION_TIMEOUT": f"{APP_RESYNC}s",
            },
        )
        return self

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"Argo CD's {name} exited ({proc.returncode}):\n{self.log_tail(name)}")

    def stop(self, grace: float = 10) -> None:
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 15)
        deadline = time.monotonic() + grace
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)
                proc.wait()

    # -- Applications ------------------------------------------------------------------------

    def application(self, name: str) -> dict[str, Any]:
        out = self.cluster.kubectl("-n", NAMESPACE, "get", "application", name, "-o", "json").stdout
        app: dict[str, Any] = json.loads(out)
        return app

    def create_application(
        self,
        name: str,
        repo: GitRepo,
        namespace: str,
        *,
        path: str = "app",
        sync_options: tuple[str, ...] = (),
    ) -> None:
        """An Application syncing `path` of `repo` into `namespace` as docs/argocd.md recommends:
        automated with prune and self-heal, retries with the newest commit, background deletion."""
        app = {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "finalizers": ["resources-finalizer.argocd.argoproj.io/background"],
            },
            "spec": {
                "project": "default",
                "source": {"repoURL": repo.url, "targetRevision": repo.branch, "path": path},
                "destination": {"server": IN_CLUSTER, "namespace": namespace},
                "syncPolicy": {
                    "automated": {"prune": True, "selfHeal": True},
                    "syncOptions": list(sync_options),
                    # docs/argocd.md: retries of a failed sync take the newest commit
                    "retry": {"limit": 5, "refresh": True},
                },
            },
        }
        self.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(app))


def summary(app: Mapping[str, Any]) -> dict[str, Any]:
    """What `argocd app get` shows first: revision, sync and health, the last operation."""
    status = app.get("status") or {}
    op = status.get("operationState") or {}
    return {
        "sync": (status.get("sync") or {}).get("status"),
        "revision": (status.get("sync") or {}).get("revision"),
        "health": (status.get("health") or {}).get("status"),
        "operation": op.get("phase"),
        "operation_revision": (
            (op.get("syncResult") or {}).get("revision")
            or (op.get("operation") or {}).get("sync", {}).get("revision")
        ),
        "message": op.get("message"),
    }


def resource_health(app: Mapping[str, Any], kind: str, name: str) -> dict[str, Any]:
    """The health Argo CD recorded for one managed resource (needs --persist-resource-health)."""
    for res in (app.get("status") or {}).get("resources") or []:
        if res.get("kind") == kind and res.get("name") == name:
            return dict(res.get("health") or {})
    return {}


@contextlib.contextmanager
def running(cluster: Cluster, data_dir: Path | None = None) -> Iterator[ArgoCD]:
    """Argo CD installed on `cluster` and running beside it until the block ends."""
    bin_dir = ensure_built()
    redis_server = ensure_redis()
    install_manifests(cluster, bin_dir.parent / "crds")
    owned = data_dir is None
    root = Path(tempfile.mkdtemp(prefix="dbmigrate-argocd-")) if data_dir is None else data_dir
    root.mkdir(parents=True, exist_ok=True)
    argocd = ArgoCD(cluster, bin_dir, root).start(redis_server)
    try:
        yield argocd
    finally:
        argocd.stop()
        if owned:
            shutil.rmtree(root, ignore_errors=True)
