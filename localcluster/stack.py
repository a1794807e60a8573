"""The whole product on a control plane: CRD, the chart's operator identity, the operator as its own
process, migration images mapped to the real runner. Shared by the e2e suite and `scripts/demo.py`.

Nothing here depends on pytest: the demo drives the same functions on a detached cluster.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dbmigrate_operator import constants as c
from dbmigrate_operator.jobs import CHECK_KIND, JOB_KIND_LABEL
from localcluster import Cluster
from localcluster.binaries import REPO

CRD = REPO / "crds" / "databasemigrations.dbmigrate.dev.yaml"
RBAC_RULES = REPO / "charts" / "dbmigrate-operator" / "files" / "rbac-rules.yaml"
CHART = REPO / "charts" / "dbmigrate-operator"
VAP_API = "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy"
SHOP = REPO / "examples" / "shop"
EXAMPLE = REPO / "examples" / "databasemigration.yaml"
VENV_BIN = REPO / ".venv" / "bin"
OPERATOR = VENV_BIN / "dbmigrate-operator"
EXAMPLE_IMAGE = "registry.example.com/shop-migrations:1.4.2"  # the image named in EXAMPLE
OPERATOR_NAMESPACE = "dbmigrate-system"
OPERATOR_SA = "dbmigrate-operator"


def wait_for(
    check: Callable[[], Any], timeout: float = 90, what: str = "condition", every: float = 0.3
) -> Any:
    """Poll until `check()` is truthy and return it; lookup errors on half-written objects count as no."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            result = check()
            if result:
                return result
            last = result
        except (KeyError, IndexError, StopIteration, subprocess.CalledProcessError) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(every)


def wait_for_gating(cluster: Cluster, namespace: str, timeout: float = 60) -> None:
    """Until the API server calls the gating webhook for `namespace` and gets an answer.

    Both a new webhook configuration and a new Service route (kube-proxy) take effect
    asynchronously after `helm install --wait`; a server-side dry run of an opted-in pod proves the
    whole path (API server -> Service -> operator pod) without creating anything.
    """
    probe = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "gating-probe", "namespace": namespace, "labels": {c.WAIT_FOR_LABEL: "probe"}},
        "spec": {  # meets the restricted Pod Security standard
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "c",
                    "image": "registry.example.com/probe:1",
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                }
            ],
        },
    }

    def gated() -> bool:
        res = cluster.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(probe))
        gates = json.loads(res.stdout)["spec"].get("schedulingGates") or []
        return any(g["name"] == c.SCHEDULING_GATE for g in gates)

    wait_for(gated, timeout, f"the gating webhook to serve namespace {namespace}")


def kubectl_dbm(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    """``kubectl dbm ...`` as a user runs it: our kubectl finds the plugin ``kubectl-dbm`` (this
    venv's console script) on PATH; no terminal, so ``approve`` asks for ``--yes``."""
    env = cluster.env()
    env["PATH"] = os.pathsep.join((str(cluster.bin_dir), str(Path(sys.executable).parent), env["PATH"]))
    return subprocess.run(
        [str(cluster.bin_dir / "kubectl"), "dbm", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- installation ----------------------------------------------------------------------------------


def install_crd(cluster: Cluster) -> None:
    """Apply the CRD from crds/ and wait until kubectl can list it (discovery lags Established)."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{c.PLURAL}.{c.GROUP}", "--timeout=60s")
    wait_for(lambda: cluster.kubectl("get", "dbm", "-A", check=False).returncode == 0, 60, "dbm discovery")


DEFAULT_LEASE = "dbmigrate-operator"  # Settings.lease_name: the Lease of an operator not told another


def operator_rules(lease: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """rbac-rules.yaml split as the chart splits it: (ClusterRole rules, leader-election Role rules),
    the latter with "<lease>" in resourceNames standing for the operator's own Lease `lease`."""
    cluster_wide: list[dict[str, Any]] = []
    own_namespace: list[dict[str, Any]] = []
    for rule in yaml.safe_load(RBAC_RULES.read_text()):
        if "coordination.k8s.io" not in rule["apiGroups"]:
            cluster_wide.append(rule)
            continue
        if "resourceNames" in rule:
            rule["resourceNames"] = [lease if n == "<lease>" else n for n in rule["resourceNames"]]
        own_namespace.append(rule)
    return cluster_wide, own_namespace


def install_operator_identity(
    cluster: Cluster,
    namespace: str = OPERATOR_NAMESPACE,
    service_account: str = OPERATOR_SA,
    *,
    lease: str = DEFAULT_LEASE,
    expiration_seconds: int = 6 * 3600,
) -> Path:
    """The chart's identity: a ServiceAccount bound to a ClusterRole with exactly rbac-rules.yaml's
    rules but the Lease's, and a Role in `namespace` with those (get/update only the Lease `lease`),
    held to what the operator does by the chart's ValidatingAdmissionPolicies (where served).

    Returns a kubeconfig holding a token of that ServiceAccount (no admin, no client certificate).
    """
    cluster.kubectl("create", "namespace", namespace, check=False)
    role = f"{service_account}-{uuid.uuid4().hex[:6]}"  # one per call: tests may share a cluster
    rules, lease_rules = operator_rules(lease)
    labels = {"app.kubernetes.io/name": "dbmigrate-operator"}
    subjects = [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}]
    for obj in (
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": role, "labels": labels},
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": role, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": subjects,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": role, "namespace": namespace, "labels": labels},
            "rules": lease_rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": role, "namespace": namespace, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
            "subjects": subjects,
        },
    ):
        cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))
    install_admission_policy(cluster, namespace, service_account, role)
    path: Path = cluster.service_account_kubeconfig(
        namespace, service_account, expiration_seconds=expiration_seconds
    )
    return path


def install_admission_policy(cluster: Cluster, namespace: str, service_account: str, name: str) -> bool:
    """The chart's ValidatingAdmissionPolicies for this ServiceAccount (and the one that keeps the
    garbage collector off running migration Jobs), rendered by helm as the chart does; waits until
    the API server enforces them. False (nothing installed) before Kubernetes 1.30."""
    if cluster.kubectl("get", "validatingadmissionpolicies", check=False).returncode != 0:
        return False
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)["serverVersion"]["gitVersion"]
    rendered = cluster.helm(
        "template", "dbm", str(CHART), "--namespace", namespace, "--kube-version", version,
        "--api-versions", VAP_API, "--show-only", "templates/admission-policy.yaml",
        "--show-only", "templates/running-migrations-policy.yaml",
        "--set", "serviceAccount.create=false", "--set", f"serviceAccount.name={service_account}",
        "--set", f"fullnameOverride={name}",
    ).stdout  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=rendered)
    probe = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "admission-probe", "namespace": namespace},
        "spec": {
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "x", "image": "x:1"}]}}
        },
    }
    as_it = ["--as", f"system:serviceaccount:{namespace}:{service_account}"]
    wait_for(
        lambda: (
            "denied request"
            in cluster.kubectl(
                "create", "--dry-run=server", "-f", "-", *as_it, input=json.dumps(probe), check=False
            ).stderr
        ),
        60,
        "the chart's admission policy to be enforced",
    )
    return True


# -- images ----------------------------------------------------------------------------------------


FAKE_RUNNER = """#!{python}
import os, sys, time
time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))  # a run that takes a while (lock waits)
with open(os.environ["DBMIGRATE_REPORT_PATH"], "w") as f:
    f.write(os.environ.get("FAKE_REPORT", ""))
print("fake runner", sys.argv[1:], "url set:", bool(os.environ.get("DATABASE_URL")))
sys.exit(int(os.environ.get("FAKE_EXIT", "0")))
"""


def map_fake_runner(cluster: Cluster, image: str, bindir: Path) -> None:
    """Pods of `image` run a stand-in `dbmigrate-runner` (in `bindir`) that writes the report given in
    the pod's FAKE_REPORT env var and exits with FAKE_EXIT: controller tests without a database."""
    runner = bindir / "dbmigrate-runner"
    runner.write_text(FAKE_RUNNER.format(python=sys.executable))
    runner.chmod(runner.stat().st_mode | stat.S_IEXEC)
    cluster.map_image(image, ["dbmigrate-runner"], env={"PATH": f"{bindir}:/usr/bin:/bin"})


def map_runner_image(
    cluster: Cluster, image: str, project_dir: Path, env: Mapping[str, str] | None = None
) -> None:
    """Pods of `image` run the real `dbmigrate-runner` of our venv in `project_dir` (a copy of the shop).

    The operator's Job names the command (`dbmigrate-runner`), found on this PATH like in the image.
    """
    cluster.map_image(
        image,
        ["dbmigrate-runner"],
        cwd=project_dir,
        env={
            "PATH": f"{VENV_BIN}{os.pathsep}/usr/bin{os.pathsep}/bin",
            "PYTHONDONTWRITEBYTECODE": "1",
            **(env or {}),
        },
    )


def shop_copy(
    dst: Path, aerich: Mapping[str, str] | None = None, tortoise: Mapping[str, str] | None = None
) -> Path:
    """A private copy of examples/shop plus extra migration files ({file name: source}) per tool."""
    shutil.copytree(SHOP, dst, ignore=shutil.ignore_patterns("__pycache__", ".venv"))
    for name, text in (aerich or {}).items():
        (dst / "migrations" / "models" / name).write_text(text)
    for name, text in (tortoise or {}).items():
        (dst / "shop" / "migrations" / name).write_text(text)
    return dst


def aerich_migration(upgrade_sql: str, downgrade_sql: str = "SELECT 1;") -> str:
    """Source of an aerich migration file (old format, without MODELS_STATE)."""
    return (
        "from tortoise import BaseDBAsyncClient\n\nRUN_IN_TRANSACTION = True\n\n\n"
        f'async def upgrade(db: BaseDBAsyncClient) -> str:\n    return """{upgrade_sql}"""\n\n\n'
        f'async def downgrade(db: BaseDBAsyncClient) -> str:\n    return """{downgrade_sql}"""\n'
    )


def shop_versions(project_dir: Path = SHOP, tool: str = "aerich") -> list[str]:
    """Migration names of a shop project, in order (what the tracking table holds once applied)."""
    if tool == "aerich":
        files = (project_dir / "migrations" / "models").glob("*.py")
        return [p.stem for p in sorted(files, key=lambda p: int(p.stem.split("_")[0]))]
    return sorted(p.stem for p in (project_dir / "shop" / "migrations").glob("0*.py"))


def example_documents(namespace: str, url: str, image: str = EXAMPLE_IMAGE) -> list[dict[str, Any]]:
    """examples/databasemigration.yaml for `namespace`: its Secret holding `url`, its Namespace dropped."""
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d and d["kind"] != "Namespace"]
    for doc in docs:
        doc["metadata"]["namespace"] = namespace
        if doc["kind"] == "Secret":
            doc["stringData"]["url"] = url
        elif doc["kind"] == c.KIND:
            doc["spec"]["image"] = image
    return docs


# -- the operator process --------------------------------------------------------------------------


def _die_with_parent() -> None:
    """preexec_fn: own process group, SIGKILL when the test process dies (Linux)."""
    os.setpgrp()
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class OperatorProcess:
    """`dbmigrate-operator` as a separate process, as the chart runs it (env-only settings).

    Its output goes to `log` (appended across restarts). `detach=True` lets it outlive the
    Python process that started it (the demo); otherwise it dies with it (tests).

    With `lease` (the chart's default: several replicas) it elects itself with that
    coordination.k8s.io Lease in OPERATOR_NAMESPACE (DBMIGRATE_STANDALONE=false), which it creates
    itself: `install_operator_identity(..., lease=<that name>)` grants that Lease only. A
    restart after `stop()` takes over at once (the Lease was handed back); after `kill()` it waits
    for the Lease to expire (DBMIGRATE_LEASE_SECONDS).
    """

    kubeconfig: Path
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    detach: bool = False
    lease: str | None = None
    health_port: int = field(default_factory=free_port)
    webhook_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def environment(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DBMIGRATE_", "KUBERNETES_SERVICE_")) and k != "KUBECONFIG"
        }
        env.update(
            {
                "KUBECONFIG": str(self.kubeconfig),
                "DBMIGRATE_LIVENESS_ENDPOINT": f"http://127.0.0.1:{self.health_port}/healthz",
                "DBMIGRATE_WEBHOOK_LISTEN_HOST": "127.0.0.1",
                "DBMIGRATE_WEBHOOK_PORT": str(self.webhook_port),
                "DBMIGRATE_METRICS_PORT": str(self.metrics_port),
                "DBMIGRATE_OPERATOR_NAMESPACE": OPERATOR_NAMESPACE,
                "DBMIGRATE_LOG_FORMAT": "plain",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.lease:
            env["DBMIGRATE_STANDALONE"] = "false"
            env["DBMIGRATE_LEASE_NAME"] = self.lease
        else:
            env["DBMIGRATE_STANDALONE"] = "true"
        env.update(self.env)
        return env

    def start(self, timeout: float = 120) -> OperatorProcess:
        """Start and wait for kopf's liveness endpoint (startup handlers done, watches starting)."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            out.write(f"\n===== dbmigrate-operator started at {time.strftime('%H:%M:%S')} =====\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [str(OPERATOR)],
                env=self.environment(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.log.parent,
                preexec_fn=os.setpgrp if self.detach else _die_with_parent,
            )
        wait_for(self._healthy, timeout, f"the operator's liveness endpoint (log: {self.log})", every=0.5)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _healthy(self) -> bool:
        if not self.alive():
            raise RuntimeError(f"dbmigrate-operator exited:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def metrics(self) -> str:
        """The operator's Prometheus exposition (text format), scraped from its metrics port."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL, no cleanup handlers: what an OOM kill or a node loss does."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self, grace: float = 20) -> None:
        """SIGTERM (kopf's graceful exit), SIGKILL after `grace` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()


# -- reading state back ----------------------------------------------------------------------------


def get_json(cluster: Cluster, namespace: str, *what: str) -> Any:
    return json.loads(cluster.kubectl("get", "-n", namespace, "-o", "json", *what).stdout)


def status_of(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    status: dict[str, Any] = get_json(cluster, namespace, "dbm", name).get("status") or {}
    return status


def true_condition(cluster: Cluster, namespace: str, name: str) -> tuple[str, str]:
    """(type, reason) of the one True kstatus condition, or ("", "") before the first status."""
    return true_condition_in(status_of(cluster, namespace, name))


def true_condition_in(status: Mapping[str, Any]) -> tuple[str, str]:
    conditions = status.get("conditions", [])
    trues = [x for x in conditions if x["status"] == "True"]
    assert len(trues) <= 1, trues
    return (trues[0]["type"], trues[0]["reason"]) if trues else ("", "")


def condition(cluster: Cluster, namespace: str, name: str, kind: str) -> dict[str, Any]:
    found: dict[str, Any] = next(
        x for x in status_of(cluster, namespace, name)["conditions"] if x["type"] == kind
    )
    return found


def jobs_of(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    """The migration's run and plan Jobs, oldest first; never its database check Jobs (a pinned app's
    rollout asks for one at any time: docs/gating.md, "A changed Secret")."""
    selector = f"{c.MIGRATION_LABEL}={name},{JOB_KIND_LABEL}!={CHECK_KIND}"
    items = get_json(cluster, namespace, "jobs", "-l", selector)["items"]
    return sorted(items, key=lambda j: j["metadata"]["creationTimestamp"])


def events_of(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get_json(
        cluster, namespace, "events", "--field-selector", f"involvedObject.name={name}"
    )["items"]
    return items


def applied_pairs(status: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(v["app"], v["version"]) for v in status.get("appliedVersions", [])]


def apply_docs(cluster: Cluster, docs: Iterable[Mapping[str, Any]], kubeconfig: Path | None = None) -> str:
    """`kubectl apply -f -` of these objects; returns kubectl's output."""
    text = "---\n".join(yaml.safe_dump(dict(d)) for d in docs)
    return cluster.kubectl("apply", "-f", "-", input=text, kubeconfig=kubeconfig).stdout
