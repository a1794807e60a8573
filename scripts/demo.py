"""`make demo`: the whole product on a local Kubernetes cluster, left running.

Default (`--node kubelet`): a real node (kubelet + containerd + runc, localcluster/node.py) runs
the images built from this repository's Dockerfiles. It starts (detached) the local cluster,
a throwaway PostgreSQL the pods reach over the node's bridge, `helm install`s the chart with the
built operator image (2 replicas, restricted Pod Security), then applies a gated Deployment
(examples/demo/, the built app image) and the example DatabaseMigration (examples/databasemigration.yaml,
the built shop migration image, its Secret pointed at the demo database), printing our kubectl's
and crictl's real output as the pods go from SchedulingGated to Running.

`--gitops argocd` runs the same story on the real node through Argo CD 3.6.2 (localcluster/argocd.py,
processes beside the control plane): the Secret (wave -2), the DatabaseMigration (-1) and the gated
Deployment (0) are committed to a bare Git repository in the state dir, an Application syncs it,
and `kubectl get applications -A` is printed beside `kubectl get dbm -A`; further commits continue
the story.

`--node agent` is the fast fallback for machines that cannot run containers, and says so: the
node agent stands in for the kubelet and runs the migration "image" as the local
`dbmigrate-runner`, and the operator runs as its own process with the chart's identity.

    python -m scripts.demo [start] [--node kubelet|agent]   # make demo (DBMIGRATE_DEMO_NODE=agent)
    python -m scripts.demo --gitops argocd   # DBMIGRATE_DEMO_GITOPS=argocd make demo
    python -m scripts.demo env       # print the export lines again
    python -m scripts.demo stop      # make demo-stop: operator, cluster and PostgreSQL, state removed

State (pids, paths, the operator's log) lives in .cache/demo/ (or --state-dir, DBMIGRATE_DEMO_DIR).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from dbmigrate_operator import constants as c
from localcluster import Cluster
from localcluster.binaries import REPO
from localcluster.cluster import start as start_cluster
from localcluster.postgres import PostgresServer

if TYPE_CHECKING:
    from scripts import pg

DEFAULT_STATE_DIR = REPO / ".cache" / "demo"
NAMESPACE = "shop"  # the namespace of examples/databasemigration.yaml
APP_MANIFEST = REPO / "examples" / "demo" / "shop-web.yaml"
APP_SELECTOR = "app=shop-web"
LEASE = "dbmigrate-operator"  # the leader-election Lease, in stack.OPERATOR_NAMESPACE
WEBHOOK_NAME = "dbmigrate-operator-demo"
ARGO_APP = "shop"  # the Application of `--gitops argocd`
TIMEOUT = 300.0


def say(text: str = "") -> None:
    print(text, flush=True)


def step(n: int, total: int, text: str) -> None:
    say(f"\n[{n}/{total}] {text}")


class Demo:
    """The running demo's pieces, recorded in `state.json` as soon as each one exists."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.file = state_dir / "state.json"
        self.state: dict[str, Any] = json.loads(self.file.read_text()) if self.file.exists() else {}

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(".tmp")
        tmp.touch(mode=0o600)  # it holds the demo database's password
        tmp.write_text(json.dumps(self.state, indent=1))
        tmp.replace(self.file)

    @property
    def cluster(self) -> Cluster:
        return Cluster.from_state(self.state["cluster"])

    def kubectl(self, *args: str, show: bool = True, input: str | None = None, check: bool = True) -> str:
        """Our kubectl as admin; `show` prints the command line and its real output."""
        res = self.cluster.kubectl(*args, input=input, check=check)
        if show:
            say(f"$ kubectl {shlex.join(args)}")
            for line in (res.stdout + res.stderr).rstrip().splitlines():
                say(f"  {line}")
        return str(res.stdout)

    def exports(self) -> list[str]:
        cluster = self.cluster
        return [
            f"export KUBECONFIG={shlex.quote(str(cluster.kubeconfig))}",
            f"export PATH={shlex.quote(str(cluster.bin_dir))}:$PATH",
        ]


def _watch(demo: Demo, args: Sequence[str], done: Callable[[str], bool], what: str) -> str:
    """Print `kubectl get ...` each time its output changes (the AGE column aside) until `done`."""
    deadline = time.monotonic() + TIMEOUT
    last = None
    while True:
        out = demo.kubectl(*args, show=False, check=False)
        key = [line.split()[:-1] for line in out.splitlines()]  # AGE (last column) ticks every second
        if key != last:
            last = key
            say(f"$ kubectl {shlex.join(args)}")
            for line in out.rstrip().splitlines():
                say(f"  {line}")
        if done(out):
            return out
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {TIMEOUT:.0f}s waiting for {what}")
        time.sleep(0.5)


def _rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines()[1:] if line.strip()]


def _show_gated(demo: Demo) -> None:
    _watch(
        demo,
        ["get", "pods", "-n", NAMESPACE, "-l", APP_SELECTOR],
        lambda out: len(rows := _rows(out)) == 2 and all(r[2] == "SchedulingGated" for r in rows),
        "the app's pods to be SchedulingGated",
    )
    say("  held by the scheduling gate dbmigrate.dev/migration: the schema they need is not there yet")


def _show_ready(demo: Demo) -> None:
    _watch(
        demo,
        ["get", "dbmigrations", "-n", NAMESPACE],
        lambda out: any(r[:2] == ["shop-db", "True"] for r in _rows(out)),
        "the DatabaseMigration to be Ready",
    )


def _show_tracking_table(server: PostgresServer) -> None:
    query = "SELECT app, version FROM aerich ORDER BY id"
    say(f"# aerich's tracking table in PostgreSQL: {query}")
    for line in server.psql("shop", query).splitlines():
        say(f"  {line}")


def _show_running(demo: Demo) -> None:
    _watch(
        demo,
        ["get", "pods", "-n", NAMESPACE, "-l", APP_SELECTOR],
        lambda out: len(rows := _rows(out)) == 2 and all(r[1:3] == ["1/1", "Running"] for r in rows),
        "the app's pods to be Running and Ready",
    )
    demo.kubectl("get", "dbm", "-n", NAMESPACE, "-o", "wide")


def _begin(demo: Demo) -> float:
    """Refuse a second demo, record this one; returns when it began."""
    if demo.file.exists():
        sys.exit(f"a demo is already running (state in {demo.dir}); `make demo-stop` first")
    demo.dir.mkdir(parents=True, exist_ok=True)
    demo.save()
    say("dbmigrate-operator demo: a Tortoise ORM app's migrations applied by the operator on Kubernetes")
    return time.monotonic()


def _real_base(demo: Demo, total: int) -> tuple[Cluster, pg.DetachedPostgres]:
    """Steps 1-4 of the real-node demo: cluster, PostgreSQL, the chart, the app's namespace."""
    from localcluster import images, realstack
    from localcluster import node as nodemod
    from scripts import pg

    step(1, total, "Kubernetes on a real node (control plane; kubelet + containerd + runc; our images)")
    say("  images built from this repository's Dockerfiles (cached by content):")
    for key, ref in images.REFS.items():
        say(f"    {key:10} {ref}")
    cluster = start_cluster(detach=True, progress=sys.stderr, node="kubelet")
    demo.state["cluster"] = cluster.state()
    demo.save()
    say(f"  up at {cluster.server}")
    demo.kubectl("get", "nodes", "-o", "wide")

    step(2, total, f"PostgreSQL (throwaway; the pods reach it at the node's address {nodemod.NODE_IP})")
    postgres = pg.start(listen=("127.0.0.1", nodemod.NODE_IP), clients=(nodemod.POD_CIDR,))
    demo.state["postgres"] = postgres.to_json()
    demo.state["postgres_pid"] = postgres.pid()
    demo.save()
    postgres.server.create_database("shop")
    say(f"  up at {nodemod.NODE_IP}:{postgres.port}, empty database `shop`")

    step(3, total, "The operator: `helm install` of charts/dbmigrate-operator with the built image")
    demo.kubectl("create", "namespace", realstack.OPERATOR_NAMESPACE, show=False)
    demo.kubectl("label", "namespace", realstack.OPERATOR_NAMESPACE, *realstack.RESTRICTED, show=False)
    say(f"$ helm install dbmigrate-operator charts/dbmigrate-operator -n {realstack.OPERATOR_NAMESPACE} "
        + " ".join(realstack.image_values()) + " --wait")  # fmt: skip
    realstack.install_operator(cluster, realstack.OPERATOR_NAMESPACE, "dbmigrate")
    demo.kubectl("get", "pods", "-n", realstack.OPERATOR_NAMESPACE, "-o", "wide")

    step(4, total, "The app's namespace (restricted Pod Security)")
    demo.kubectl("create", "namespace", NAMESPACE)
    demo.kubectl("label", "namespace", NAMESPACE, *realstack.RESTRICTED, show=False)
    return cluster, postgres


def start_real(demo: Demo) -> None:
    """The demo on the real node: our images in containers, the operator installed by its chart."""
    from localcluster import images, realstack, stack

    began, total = _begin(demo), 7
    cluster, postgres = _real_base(demo, total)

    step(
        5, total, "The app first (as `kubectl apply -f dir/` or Argo CD may deliver it before its migration)"
    )
    stack.wait_for_gating(cluster, NAMESPACE)
    demo.kubectl("apply", "-f", "-", input=yaml.safe_dump(realstack.example_app(NAMESPACE)))
    _show_gated(demo)

    step(6, total, f"The migration: examples/databasemigration.yaml with image {images.REFS['shop']}")
    url = realstack.pod_database_url(postgres.instance, "shop", postgres.password)
    docs = [realstack.secret(NAMESPACE, "shop-db", url), realstack.example_migration(NAMESPACE)]
    demo.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    _show_ready(demo)
    demo.kubectl("get", "jobs,pods", "-n", NAMESPACE, "-l", f"{c.MIGRATION_LABEL}=shop-db")
    _show_tracking_table(postgres.server)

    step(7, total, "The app's pods released by the operator, running in containers")
    _show_running(demo)
    say("$ crictl ps -a   # the node's containers, as containerd runs them")
    for line in cluster.crictl("ps", "-a").stdout.rstrip().splitlines():
        say(f"  {line}")

    say(f"\nDemo ready in {time.monotonic() - began:.0f}s and left running. Try it:")
    for line in demo.exports():
        say(f"  {line}")
    say(f"  kubectl describe dbm shop-db -n {NAMESPACE}")
    job = "$(kubectl get dbm shop-db -n " + NAMESPACE + " -o jsonpath='{.status.lastRun.job}')"
    say(f"  kubectl logs -n {NAMESPACE} job/{job}")
    say(f"  kubectl logs -n {realstack.OPERATOR_NAMESPACE} deploy/dbmigrate-dbmigrate-operator")
    say("Stop it (cluster and node, PostgreSQL; state removed, the machine as found): make demo-stop")


def _waved(obj: dict[str, Any], wave: int) -> str:
    obj["metadata"].setdefault("annotations", {})["argocd.argoproj.io/sync-wave"] = str(wave)
    return yaml.safe_dump(obj)


def _show_gitops(demo: Demo) -> None:
    """`kubectl get applications -A` beside `kubectl get dbm -A`, each time either changes, until
    the Application is Synced and Healthy and the DatabaseMigration Ready."""
    deadline = time.monotonic() + TIMEOUT
    last = None
    while True:
        apps = demo.kubectl("get", "applications", "-A", show=False, check=False)
        dbms = demo.kubectl("get", "dbm", "-A", show=False, check=False)
        key = [_without_age(out) for out in (apps, dbms)]
        if key != last:
            last = key
            _beside(("get applications -A", apps), ("get dbm -A", dbms))
        app_rows, dbm_rows = _rows(apps), _rows(dbms)
        if [r[1:4] for r in app_rows] == [[ARGO_APP, "Synced", "Healthy"]] and any(
            r[1:3] == ["shop-db", "True"] for r in dbm_rows
        ):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"timed out after {TIMEOUT:.0f}s waiting for the Application to be Synced, Healthy"
            )
        time.sleep(0.5)


def _without_age(out: str) -> list[list[str]]:
    """A table's cells without its AGE column (it ticks every second; Applications have none)."""
    lines = [line.split() for line in out.splitlines()]
    return [cells[:-1] for cells in lines] if lines and lines[0][-1:] == ["AGE"] else lines


def _beside(*outputs: tuple[str, str]) -> None:
    """Print several `kubectl` outputs in columns, side by side."""
    columns = [
        [f"$ kubectl {cmd}", *(f"  {line}" for line in out.rstrip().splitlines())] for cmd, out in outputs
    ]
    widths = [max(len(line) for line in col) for col in columns]
    for i in range(max(len(col) for col in columns)):
        cells = [(col[i] if i < len(col) else "").ljust(w) for col, w in zip(columns, widths, strict=True)]
        say("   ".join(cells).rstrip())


def start_argocd(demo: Demo) -> None:
    """The real-node demo delivered by Argo CD from a local Git repository, left running."""
    from localcluster import argocd as argomod
    from localcluster import realstack

    began, total = _begin(demo), 8
    say("GitOps variant: Argo CD syncs the shop's manifests from a Git repository on this machine")
    cluster, postgres = _real_base(demo, total)

    step(5, total, "Argo CD 3.6.2 beside the cluster (Redis, repo server, application controller)")
    bin_dir = argomod.ensure_built()
    redis_server = argomod.ensure_redis()
    argomod.install_manifests(cluster, bin_dir.parent / "crds")
    patch = argomod.CM_PATCH.relative_to(REPO)
    say(f"  Application and AppProject CRDs, argocd-cm with our health check ({patch})")
    data_dir = demo.dir / "argocd"
    data_dir.mkdir(parents=True, exist_ok=True)
    argocd = argomod.ArgoCD(cluster, bin_dir, data_dir)
    try:
        argocd.start(redis_server)
    finally:
        demo.state["argocd"] = {"pids": {n: p.pid for n, p in argocd.procs.items()}, "dir": str(data_dir)}
        demo.save()
    for name, proc in argocd.procs.items():
        say(f"  {name:24} pid {proc.pid}, log {data_dir / (name + '.log')}")

    step(6, total, "The shop's manifests committed to a local Git repository (sync waves -2, -1, 0)")
    git_root = demo.dir / "git"
    git_root.mkdir(mode=0o700, parents=True, exist_ok=True)  # the Secret holds the demo database's URL
    repo = argomod.GitRepo(git_root).init()
    local_config = {
        "user.name": "dbmigrate demo",
        "user.email": "demo@dbmigrate.dev",
        f"branch.{repo.branch}.remote": "origin",  # a plain `git push` pushes to the bare repository
        f"branch.{repo.branch}.merge": f"refs/heads/{repo.branch}",
    }
    for key, value in local_config.items():
        # so that the user's own commits work there, whatever their global Git configuration
        subprocess.run(["git", "-C", str(repo.work), "config", key, value], check=True)
    url = realstack.pod_database_url(postgres.instance, "shop", postgres.password)
    files = {
        "app/secret.yaml": _waved(realstack.secret(NAMESPACE, "shop-db", url), -2),
        "app/databasemigration.yaml": _waved(realstack.example_migration(NAMESPACE), -1),
        "app/deployment.yaml": _waved(realstack.example_app(NAMESPACE), 0),
    }
    sha = repo.commit("shop: secret (wave -2), migration (wave -1), web app (wave 0)", files)
    demo.state["git"] = {"bare": str(repo.bare), "work": str(repo.work)}
    demo.save()
    say(f"  {repo.url} at {sha[:8]}: " + ", ".join(files))

    step(7, total, f"The Application `{ARGO_APP}`: auto-sync with prune and self-heal from {repo.url}")
    argocd.create_application(ARGO_APP, repo, NAMESPACE, sync_options=("PrunePropagationPolicy=background",))
    _show_gitops(demo)
    argocd.check_alive()
    demo.kubectl("get", "jobs,pods", "-n", NAMESPACE, "-l", f"{c.MIGRATION_LABEL}=shop-db")
    _show_tracking_table(postgres.server)

    step(8, total, "The app's pods, applied in wave 0 after their schema, running in containers")
    done = demo.kubectl(
        "get", "dbm", "shop-db", "-n", NAMESPACE, "-o", "jsonpath={.status.lastRun.completedAt}", show=False
    )
    created = demo.kubectl(
        "get", "deployment", "shop-web", "-n", NAMESPACE, "-o", "jsonpath={.metadata.creationTimestamp}",
        show=False,
    )  # fmt: skip
    say(f"  the migration (wave -1) completed at {done}; the Deployment (wave 0) was created at {created}")
    _show_running(demo)
    _beside(
        ("get applications -A", demo.kubectl("get", "applications", "-A", show=False)),
        ("get dbm -A", demo.kubectl("get", "dbm", "-A", show=False)),
    )

    say(f"\nDemo ready in {time.monotonic() - began:.0f}s and left running. Try it:")
    for line in demo.exports():
        say(f"  {line}")
    say(f"Continue the story by Git commits (Argo CD polls {repo.url} every {argomod.APP_RESYNC}s):")
    say(f"  cd {shlex.quote(str(repo.work))}")
    say("  $EDITOR app/databasemigration.yaml app/deployment.yaml   # e.g. a new image, a new pin")
    say("  git commit -am 'shop: next release' && git push")
    say("  kubectl get applications -A; kubectl get dbm -A -w")
    say(f"Argo CD's logs: {data_dir}/*.log")
    say(
        "Stop it (Argo CD, cluster and node, PostgreSQL; state removed, the machine as found): make demo-stop"
    )


def start(demo: Demo) -> None:
    """The fallback demo on the node agent (no containers: for machines that cannot run them)."""
    from dbmigrate_operator.gating import server, tls
    from localcluster import stack
    from scripts import pg

    began, total = _begin(demo), 7
    say("NOTE: --node agent: no containers. The node agent stands in for the kubelet and runs the")
    say("      migration image as the local dbmigrate-runner; the operator is a local process.")

    step(
        1, total, "Kubernetes control plane (etcd, kube-apiserver, controller-manager, scheduler, node agent)"
    )
    cluster = start_cluster(detach=True, progress=sys.stderr)
    demo.state["cluster"] = cluster.state()
    demo.save()
    say(f"  up at {cluster.server}")
    demo.kubectl("get", "nodes")

    step(2, total, "PostgreSQL (throwaway, loopback only)")
    postgres = pg.start()
    demo.state["postgres"] = postgres.to_json()
    demo.state["postgres_pid"] = postgres.pid()
    demo.save()
    server_ = postgres.server
    server_.create_database("shop")
    say(f"  up at 127.0.0.1:{postgres.port}, empty database `shop`")

    step(3, total, "The DatabaseMigration CRD")
    demo.kubectl("apply", "--server-side", "-f", str(stack.CRD.relative_to(REPO)))
    stack.install_crd(cluster)

    step(4, total, "The operator: the chart's identity, its own process, pod gating webhook registered")
    kubeconfig = stack.install_operator_identity(cluster, lease=LEASE)
    say(
        f"  ServiceAccount {stack.OPERATOR_NAMESPACE}/{stack.OPERATOR_SA} bound to a ClusterRole with exactly"
    )
    say(f"  {stack.RBAC_RULES.relative_to(REPO)} (no Secrets access); leader election with a Lease, as the")
    say(f"  chart runs it (the operator creates {stack.OPERATOR_NAMESPACE}/{LEASE} itself, its only Lease)")
    certs = demo.dir / "webhook-tls"
    certs.mkdir(exist_ok=True)
    made = tls.self_signed(["127.0.0.1", "localhost"])
    (certs / "tls.crt").write_bytes(made.cert_pem)
    (certs / "tls.key").touch(mode=0o600)
    (certs / "tls.key").write_bytes(made.key_pem)
    stack.map_runner_image(cluster, stack.EXAMPLE_IMAGE, stack.SHOP)
    operator = stack.OperatorProcess(
        kubeconfig,
        demo.dir / "operator.log",
        env={
            "DBMIGRATE_WEBHOOK_CERT_FILE": str(certs / "tls.crt"),
            "DBMIGRATE_WEBHOOK_KEY_FILE": str(certs / "tls.key"),
            "DBMIGRATE_GATE_SWEEP_SECONDS": "10",
        },
        detach=True,
        lease=LEASE,
    )
    try:
        operator.start()
    finally:
        if operator.proc is not None:
            demo.state["operator"] = {"pid": operator.pid, "log": str(operator.log)}
            demo.save()
    say(f"  dbmigrate-operator pid {operator.pid}, log {operator.log}")
    # As the chart does: the installer (admin), not the operator, owns the webhook configuration.
    settings = server.WebhookSettings(
        listen_host="127.0.0.1", port=operator.webhook_port, operator_namespace=stack.OPERATOR_NAMESPACE
    )
    configuration = server.local_configuration(settings, made.cert_pem)
    configuration["metadata"]["name"] = WEBHOOK_NAME
    with cluster.api_client() as api:
        server.register(api, configuration)
    say(f"  MutatingWebhookConfiguration {WEBHOOK_NAME} -> {settings.url}/gate-pods")
    say(f"  the migration image {stack.EXAMPLE_IMAGE} runs dbmigrate-runner on examples/shop")

    step(
        5, total, "The app first (as `kubectl apply -f dir/` or Argo CD may deliver it before its migration)"
    )
    example = list(yaml.safe_load_all(stack.EXAMPLE.read_text()))
    namespace = next(d for d in example if d["kind"] == "Namespace")
    demo.kubectl("apply", "-f", "-", input=yaml.safe_dump(namespace), show=False)
    stack.wait_for_gating(cluster, NAMESPACE)
    demo.kubectl("apply", "-f", str(APP_MANIFEST.relative_to(REPO)))
    _show_gated(demo)

    step(6, total, "The migration: examples/databasemigration.yaml (its Secret's url -> the demo database)")
    docs = stack.example_documents(NAMESPACE, server_.url("shop"))
    out = stack.apply_docs(cluster, docs)
    say(f"$ kubectl apply -f -   # {stack.EXAMPLE.relative_to(REPO)}, Secret url: the demo database")
    for line in out.rstrip().splitlines():
        say(f"  {line}")
    _show_ready(demo)
    demo.kubectl("get", "jobs", "-n", NAMESPACE)
    _show_tracking_table(server_)

    step(7, total, "The app's pods released by the operator")
    _show_running(demo)

    say(f"\nDemo ready in {time.monotonic() - began:.0f}s and left running. Try it:")
    for line in demo.exports():
        say(f"  {line}")
    say(f"  kubectl describe dbm shop-db -n {NAMESPACE}")
    say(f"  kubectl get events -n {NAMESPACE}")
    say(f"  operator log: {operator.log}")
    say("Stop it (operator, cluster, PostgreSQL; state removed): make demo-stop")


def process_running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (our detached processes are reaped by init)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _kill_group(pid: int, grace: float = 15) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while process_running(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def stop(demo: Demo) -> None:
    """Everything the state file names, each step on its own (a half-started demo stops too)."""
    import shutil

    from scripts import pg

    if not demo.file.exists():
        say(f"no demo state in {demo.dir}: nothing to stop")
        return
    state = demo.state
    for name, pid in (state.get("argocd") or {}).get("pids", {}).items():
        _kill_group(int(pid))
        say(f"Argo CD's {name} (pid {pid}) stopped")
    if "operator" in state:
        _kill_group(int(state["operator"]["pid"]))
        say(f"operator (pid {state['operator']['pid']}) stopped")
    if "cluster" in state:
        demo.cluster.stop()
        say("control plane stopped, its data removed")
    if "postgres" in state:
        pg.stop(pg.DetachedPostgres(**state["postgres"]))
        say("PostgreSQL stopped, its data removed")
    shutil.rmtree(demo.dir, ignore_errors=True)
    say(f"state removed ({demo.dir})")


def pids(state: dict[str, Any]) -> list[int]:
    """Every top-level process the demo started (for checks that they are gone)."""
    found = [int(p) for p in (state.get("cluster") or {}).get("pids", {}).values()]
    if "operator" in state:
        found.append(int(state["operator"]["pid"]))
    found += [int(p) for p in (state.get("argocd") or {}).get("pids", {}).values()]
    if state.get("postgres_pid"):
        found.append(int(state["postgres_pid"]))
    return found


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", nargs="?", default="start", choices=["start", "stop", "env"])
    parser.add_argument(
        "--node",
        choices=["kubelet", "agent"],
        default=os.environ.get("DBMIGRATE_DEMO_NODE") or "kubelet",
        help="kubelet (default): a real node running our images; agent: the no-container fallback",
    )
    parser.add_argument(
        "--gitops",
        choices=["none", "argocd"],
        default=os.environ.get("DBMIGRATE_DEMO_GITOPS") or "none",
        help="argocd: the same story delivered by Argo CD from a local Git repository (real node only)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(os.environ.get("DBMIGRATE_DEMO_DIR") or DEFAULT_STATE_DIR),
        help=f"where the running demo is recorded (default {DEFAULT_STATE_DIR.relative_to(REPO)})",
    )
    args = parser.parse_args(argv)
    demo = Demo(args.state_dir.resolve())
    if args.command == "stop":
        stop(demo)
    elif args.command == "env":
        if "cluster" not in demo.state:
            sys.exit("no demo is running (make demo)")
        for line in demo.exports():
            print(line)
    else:
        if args.gitops == "argocd" and args.node != "kubelet":
            sys.exit("--gitops argocd runs on the real node only (not with --node agent)")
        run = start_argocd if args.gitops == "argocd" else start_real if args.node == "kubelet" else start
        try:
            run(demo)
        except BaseException as e:
            log = Path(demo.state.get("operator", {}).get("log", "/nonexistent"))
            if log.exists():
                say(f"\n--- operator log tail ({log}) ---\n{log.read_text(errors='replace')[-3000:]}")
            say(f"\ndemo failed: {e!r}; stopping what was started")
            stop(demo)
            raise SystemExit(1) from None


if __name__ == "__main__":
    main()
