"""The operator on the real local control plane, for figures 3-6: setup, watches, metrics.

The operator runs as its real console script (``dbmigrate-operator``) under a ServiceAccount of
its own. A FlowSchema that matches only that ServiceAccount makes the API server count the
operator's requests apart from everyone else's (``apiserver_flowcontrol_dispatched_requests_total``
by ``flow_schema``), so API requests per CR need no proxy and no audit log. Migration Jobs run a
stand-in ``dbmigrate-runner`` (a shell script copying a prepared success report to the
termination message), mapped by the node agent's image map.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import ssl
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.context import Context
from bench.core import REPO, VENV_BIN
from dbmigrate_operator.constants import (
    GROUP,
    MIGRATION_LABEL,
    PLURAL,
    SCHEDULING_GATE,
    VERSION,
    WAIT_FOR_LABEL,
)
from dbmigrate_runner.report import AppState, Outcome, Report, encode

IMAGE = "bench.dbmigrate.dev/migrations:1"  # mapped to the stand-in runner
APP_IMAGE = "bench.dbmigrate.dev/app:1"  # mapped to `true`: released app pods finish at once
OPERATOR_NS = "dbmigrate-system"
OPERATOR_SA = "dbmigrate-operator"
LEASE = "dbmigrate-operator"  # leader election, in OPERATOR_NS: the operator creates it
FLOW_SCHEMA = "dbmigrate-bench-operator"
RUN_LABEL = "bench.dbmigrate.dev/run"
CRD = REPO / "crds" / "databasemigrations.dbmigrate.dev.yaml"
VERSION_NAME = "0_20260101000000_init"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Operator:
    """The running operator process and what the figures need to observe it."""

    proc: subprocess.Popen[bytes]
    log: Path
    resync_seconds: float
    verbose: bool
    metrics_port: int = 0
    selectors: bool = True  # False: the previous design (see PREVIOUS_DESIGN), for same-run comparisons
    legacy: bool = False  # bench.legacy_operator: the design before the watched view (issue #12)

    def metric(self, name: str, match: dict[str, str] | None = None) -> float:
        """A sum over the operator's own Prometheus series (its metrics port)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            return metric_sum(resp.read().decode(), name, match or {})

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float:
        """Peak resident set size of the process so far (VmHWM)."""
        return _status_kb(self.proc.pid, "VmHWM:") / 1024

    def rss_mb(self) -> float:
        """Resident set size now (VmRSS)."""
        return _status_kb(self.proc.pid, "VmRSS:") / 1024

    def webhook_requests(self) -> int:
        """Requests the webhook server answered, from its aiohttp access log lines."""
        return sum(
            1 for line in self.log.read_text(errors="replace").splitlines() if "POST /gate-pods" in line
        )


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


@dataclass
class Kube:
    """One control plane plus our operator, shared by the cluster figures of a bench run."""

    ctx: Context
    api: Any
    operator: Operator
    kubeconfig: Path
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    deleted: list[str] = field(default_factory=list)  # namespaces being deleted

    # -- metrics ---------------------------------------------------------------------------------
    def metrics(self) -> str:
        cluster = self.ctx.cluster
        context = ssl.create_default_context(cafile=str(cluster.ca_cert))
        pki = cluster.data_dir / "pki"
        context.load_cert_chain(pki / "admin.crt", pki / "admin.key")
        with urllib.request.urlopen(f"{cluster.server}/metrics", context=context, timeout=30) as resp:
            return str(resp.read().decode())

    def operator_requests(self) -> float:
        """Requests the API server dispatched for the operator's ServiceAccount (its FlowSchema)."""
        return metric_sum(
            self.metrics(), "apiserver_flowcontrol_dispatched_requests_total", {"flow_schema": FLOW_SCHEMA}
        )

    # -- objects ---------------------------------------------------------------------------------
    def namespace(self, prefix: str) -> str:
        from kubernetes import client

        name = self.ctx.cluster.create_namespace(f"bench-{prefix}")
        core: Any = client.CoreV1Api(self.api)
        core.create_namespaced_secret(
            name, {"metadata": {"name": "db"}, "stringData": {"url": "postgres://u:p@db.invalid:5432/db"}}
        )
        return name

    def migration(self, namespace: str, name: str, image: str = IMAGE) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "DatabaseMigration",
            "metadata": {"name": name, "namespace": namespace, "labels": {RUN_LABEL: self.run_id}},
            "spec": {
                "image": image,
                "tool": "aerich",
                "database": {"urlSecretRef": {"name": "db", "key": "url"}},
            },
        }

    def create_migration(self, namespace: str, name: str, image: str = IMAGE) -> None:
        from kubernetes import client

        client.CustomObjectsApi(self.api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, self.migration(namespace, name, image), _preload_content=False
        )

    def map_runner(self, image: str) -> None:
        """Pods of ``image`` run the stand-in runner too (spec.image bumps need more than one tag)."""
        self.ctx.cluster.map_image(image, ["dbmigrate-runner"], cmd=["upgrade"], env=_runner_env(self.ctx))

    def restart_operator(self, *, selectors: bool = True, kubeconfig: Path | None = None) -> Operator:
        """A fresh operator process: its peak RSS and CPU start from zero. ``selectors=False`` runs
        the previous design, without server-side selectors on its Job and Pod watches; ``kubeconfig``
        replaces the operator's own (e.g. :meth:`ByteCounter.kubeconfig`)."""
        _stop(self.operator.proc)
        self.operator = _launch(
            self.ctx, kubeconfig or self.kubeconfig, self.operator.verbose, selectors=selectors
        )
        return self.operator

    def gated_pod(self, namespace: str, name: str, wait_for: str | None) -> dict[str, Any]:
        labels = {RUN_LABEL: self.run_id}
        if wait_for:
            labels[WAIT_FOR_LABEL] = wait_for
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            # Run to completion: a long-running pod would keep a node-agent thread busy per pod.
            "spec": {
                "containers": [{"name": "app", "image": APP_IMAGE}],
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 0,
            },
        }

    def delete_namespaces(self, names: list[str]) -> None:
        for name in names:
            self.ctx.cluster.delete_namespace(name)
        self.deleted.extend(names)

    def settle(self, timeout: float = 240) -> float:
        """Wait until earlier figures' namespaces are gone and the operator has gone quiet.

        Deleting a namespace full of DatabaseMigrations, Jobs and Pods sends the operator a burst
        of events; a figure measured during that burst would measure the teardown instead.
        Quiet = fewer operator requests in 5 s than one reconcile (3 reads) per known CR per
        resync period would cause, with a floor of 10. Returns the seconds waited.
        """
        from kubernetes import client

        began = time.monotonic()
        core: Any = client.CoreV1Api(self.api)
        while self.deleted and time.monotonic() - began < timeout:
            present = {ns.metadata.name for ns in core.list_namespace().items}
            self.deleted = [n for n in self.deleted if n in present]
            if self.deleted:
                time.sleep(2)
        custom: Any = client.CustomObjectsApi(self.api)
        known = len(custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"])
        quiet = max(10.0, 3 * known * 5 / self.operator.resync_seconds * 1.5)
        last = self.operator_requests()
        while time.monotonic() - began < timeout:
            time.sleep(5)
            now = self.operator_requests()
            if now - last <= quiet:
                break
            last = now
        return time.monotonic() - began


class ByteCounter:
    """A TCP relay in front of the API server that counts the bytes it passes each way.

    TLS passes through untouched (the API server's certificate names the IP, not the port), so the
    count is exactly what crossed the operator's connections: watch streams, responses, TLS framing.
    """

    def __init__(self, server: str) -> None:
        import socket

        host_port = server.split("://", 1)[1].rstrip("/")
        self.server = server
        self.upstream = (host_port.rsplit(":", 1)[0], int(host_port.rsplit(":", 1)[1]))
        self.received = 0  # API server → operator
        self.sent = 0  # operator → API server
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def kubeconfig(self, original: Path) -> Path:
        """A copy of ``original`` whose server is this relay."""
        path = original.with_name(f"counted-{original.name}")
        text = original.read_text()
        if self.server not in text:  # else the operator would bypass the relay and count nothing
            raise ValueError(f"{original} does not name the server {self.server}")
        text = text.replace(self.server, f"https://127.0.0.1:{self.port}")
        path.write_text(text)
        path.chmod(0o600)
        return path

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client_sock, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            for src, dst, down in ((upstream, client_sock, True), (client_sock, upstream, False)):
                threading.Thread(target=self._pump, args=(src, dst, down), daemon=True).start()

    def _pump(self, src: Any, dst: Any, down: bool) -> None:
        try:
            while data := src.recv(65536):
                # Counted before it is forwarded: once the other side can see the bytes, the count does.
                with self._lock:
                    if down:
                        self.received += len(data)
                    else:
                        self.sent += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.close()

    def close(self) -> None:
        self._listener.close()


def metric_sum(text: str, name: str, match: dict[str, str]) -> float:
    """Sum of a Prometheus text-format metric over the series whose labels include ``match``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', line.split("}", 1)[0]))
        if all(labels.get(k) == v for k, v in match.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _stand_in_runner(directory: Path) -> Path:
    """A `dbmigrate-runner` that succeeds at once with a real report (the operator decodes it)."""
    directory.mkdir(parents=True, exist_ok=True)
    report = Report(
        outcome=Outcome.SUCCEEDED,
        tool="aerich",
        command="upgrade",
        apps={"models": AppState(current=VERSION_NAME, count=1, versions=[VERSION_NAME])},
        applied=[f"models:{VERSION_NAME}"],
        applied_count=1,
        duration_ms=1,
    )
    (directory / "report.json").write_text(encode(report))
    script = directory / "dbmigrate-runner"
    script.write_text(f'#!/bin/sh\nexec cp {directory / "report.json"} "$DBMIGRATE_REPORT_PATH"\n')
    script.chmod(0o755)
    return directory


def _runner_env(ctx: Context) -> dict[str, str]:
    fakebin = ctx.scratch / "fake-runner"
    if not (fakebin / "dbmigrate-runner").exists():
        _stand_in_runner(fakebin)
    return {"PATH": f"{fakebin}{os.pathsep}/usr/bin{os.pathsep}/bin"}


def _apply(ctx: Context, manifest: dict[str, Any]) -> None:
    ctx.cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def start(ctx: Context, *, verbose: bool = False, legacy: bool = False) -> Kube:
    """Cluster (shared), CRD, operator identity and FlowSchema, stand-in image, operator process.

    ``verbose`` runs the operator at INFO level, which the webhook figure needs (the webhook
    server's access log is how its requests are counted); the other figures run it as shipped.
    ``legacy`` runs ``bench.legacy_operator`` instead (the previous design, for a same-run comparison).
    """
    existing = ctx.options.get("_kube")
    if isinstance(existing, Kube):
        if existing.operator.verbose == verbose and existing.operator.legacy == legacy:
            return existing
        _stop(existing.operator.proc)
        existing.operator = _launch(ctx, existing.kubeconfig, verbose, legacy)
        return existing
    cluster = ctx.cluster
    # As the chart ships it: leader election on (DBMIGRATE_STANDALONE=false), with the Lease the
    # operator creates in OPERATOR_NS itself; nothing else to install for it.
    cluster.kubectl("apply", "-f", str(CRD))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    cluster.kubectl("create", "namespace", OPERATOR_NS, check=False)
    # cluster-admin for brevity: RBAC evaluation cost does not depend on the rules' breadth here.
    cluster.kubectl(
        "create",
        "clusterrolebinding",
        "bench-operator",
        "--clusterrole=cluster-admin",
        f"--serviceaccount={OPERATOR_NS}:{OPERATOR_SA}",
        check=False,
    )
    _apply(ctx, FLOW_SCHEMA_MANIFEST)
    kubeconfig = cluster.service_account_kubeconfig(OPERATOR_NS, OPERATOR_SA, expiration_seconds=6 * 3600)
    cluster.map_image(APP_IMAGE, ["true"])
    cluster.map_image(IMAGE, ["dbmigrate-runner"], cmd=["upgrade"], env=_runner_env(ctx))
    kube = Kube(ctx, cluster.api_client(), _launch(ctx, kubeconfig, verbose), kubeconfig)
    ctx.options["_kube"] = kube
    ctx.on_close(lambda: _stop(kube.operator.proc))
    _warm_up(kube)
    return kube


def _warm_up(kube: Kube) -> None:
    """One migration through to Ready, so start-up (taking the Lease, first watches) is over before
    anything is timed."""
    from kubernetes import client

    custom: Any = client.CustomObjectsApi(kube.api)
    ns = kube.namespace("warmup")
    kube.create_migration(ns, "warmup")

    def ready() -> bool:
        obj = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "warmup")
        return any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (obj.get("status") or {}).get("conditions") or []
        )

    _wait(ready, 120, "the warm-up DatabaseMigration Ready")
    kube.delete_namespaces([ns])


FLOW_SCHEMA_MANIFEST = {
    "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
    "kind": "FlowSchema",
    "metadata": {"name": FLOW_SCHEMA},
    "spec": {
        # What a ServiceAccount gets by default (FlowSchema service-accounts), just counted apart.
        "priorityLevelConfiguration": {"name": "workload-low"},
        "matchingPrecedence": 500,
        "distinguisherMethod": {"type": "ByUser"},
        "rules": [
            {
                "subjects": [
                    {
                        "kind": "ServiceAccount",
                        "serviceAccount": {"name": OPERATOR_SA, "namespace": OPERATOR_NS},
                    }
                ],
                "resourceRules": [
                    {
                        "verbs": ["*"],
                        "apiGroups": ["*"],
                        "resources": ["*"],
                        "namespaces": ["*"],
                        "clusterScope": True,
                    }
                ],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            }
        ],
    },
}


# The operator before server-side selectors (a5c7bd0): kopf listed and watched every Job and Pod of
# the cluster. Only the bench can switch it back, for figures that compare the two in the same run;
# the handlers ignore what is not theirs either way (watching.migration_of).
PREVIOUS_DESIGN = (
    "import sys, dbmigrate_operator.watching as w\n"
    "w.configure = lambda settings: None\n"
    "from dbmigrate_operator.__main__ import main\n"
    "sys.exit(main())\n"
)


def _launch(
    ctx: Context, kubeconfig: Path, verbose: bool, legacy: bool = False, *, selectors: bool = True
) -> Operator:
    # 60 s instead of the shipped 300 s, so the scale figure's idle window can span a whole
    # resync pass and show the timer's per-CR rate (the loop sleeps a full period when idle).
    resync = float(ctx.options.get("resync_seconds") or 60)
    log = ctx.scratch / f"operator-{'verbose' if verbose else 'quiet'}{'-legacy' if legacy else ''}.log"
    webhook_port, health_port, metrics_port = _free_port(), _free_port(), _free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "DBMIGRATE_RESYNC_SECONDS": f"{resync:g}",
        "DBMIGRATE_STANDALONE": "false",
        "DBMIGRATE_LEASE_NAME": LEASE,
        "DBMIGRATE_WEBHOOK_REGISTER": "true",
        "DBMIGRATE_WEBHOOK_LISTEN_HOST": "127.0.0.1",
        "DBMIGRATE_WEBHOOK_PORT": str(webhook_port),
        "DBMIGRATE_METRICS_PORT": str(metrics_port),
        "DBMIGRATE_OPERATOR_NAMESPACE": OPERATOR_NS,
        "DBMIGRATE_LIVENESS_ENDPOINT": f"http://127.0.0.1:{health_port}/healthz",
        "DBMIGRATE_VERBOSE": "true" if verbose else "false",
        "DBMIGRATE_LOG_FORMAT": "plain",
        # as the image and the chart set it (docs/benchmarks.md, figure 7); overridable for comparisons
        "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2"),
    }
    env.pop("DBMIGRATE_NAMESPACES", None)
    with log.open("ab") as out:
        cmd = [str(VENV_BIN / "dbmigrate-operator")]
        if legacy:
            cmd = [str(VENV_BIN / "python"), "-m", "bench.legacy_operator"]
        elif not selectors:
            cmd = [str(VENV_BIN / "python"), "-c", PREVIOUS_DESIGN]
        proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
    cluster = ctx.cluster

    def healthy() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"operator exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/healthz", timeout=2) as r:
            return bool(r.status == 200)

    _wait(healthy, 90, "the operator's liveness endpoint")
    url = f"https://127.0.0.1:{webhook_port}/"
    _wait(
        lambda: url in cluster.kubectl("get", "mutatingwebhookconfigurations", "-o", "json").stdout,
        60,
        "the webhook configuration pointing at this operator",
    )
    return Operator(proc, log, resync, verbose, metrics_port, selectors, legacy)


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL the operator if the bench process dies without cleaning up (Linux)."""
    import ctypes
    import signal

    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Watcher:
    """First-seen times of what the figures wait for, from cluster-wide watches in threads.

    Client-side timestamps (``time.monotonic``) when the event arrives: the API's own timestamps
    have one-second resolution. Keys are ``namespace/name`` of the DatabaseMigration.
    """

    def __init__(self, kube: Kube, namespaces: set[str]) -> None:
        self.kube, self.namespaces = kube, namespaces
        self.lock = threading.Lock()
        self.job_created: dict[str, float] = {}
        self.job_complete: dict[str, float] = {}  # the Job controller's Complete condition
        self.pod_succeeded: dict[str, float] = {}
        self.ready: dict[str, float] = {}
        self.gated: dict[str, float] = {}  # app pod name -> first seen with our gate
        self.released: dict[str, float] = {}  # app pod name -> first seen without it, after gated
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listed: list[threading.Event] = []

    def __enter__(self) -> Watcher:
        from kubernetes import client

        custom, batch, core = (
            client.CustomObjectsApi(self.kube.api),
            client.BatchV1Api(self.kube.api),
            client.CoreV1Api(self.kube.api),
        )
        streams: list[tuple[Callable[..., Any], dict[str, Any], Callable[[dict[str, Any], float], None]]] = [
            (
                custom.list_cluster_custom_object,
                {
                    "group": GROUP,
                    "version": VERSION,
                    "plural": PLURAL,
                    "label_selector": f"{RUN_LABEL}={self.kube.run_id}",
                },
                self._on_migration,
            ),
            (batch.list_job_for_all_namespaces, {"label_selector": MIGRATION_LABEL}, self._on_job),
            (core.list_pod_for_all_namespaces, {}, self._on_pod),
        ]
        for fn, kwargs, handler in streams:
            listed = threading.Event()
            self._listed.append(listed)
            t = threading.Thread(target=self._run, args=(fn, kwargs, handler, listed), daemon=True)
            t.start()
            self._threads.append(t)
        for listed in self._listed:
            if not listed.wait(60):
                raise TimeoutError(f"watch did not start: {self.errors[-1:]}")
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()

    def _run(
        self,
        fn: Callable[..., Any],
        kwargs: dict[str, Any],
        handler: Callable[[dict[str, Any], float], None],
        listed: threading.Event,
    ) -> None:
        from kubernetes import watch

        rv: str | None = None
        while not self._stop.is_set():
            try:
                if rv is None:
                    # (Re)start: a full list, handled like events, so nothing in a gap is missed.
                    rv = self._list(fn, kwargs, handler)
                    listed.set()
                w: Any = watch.Watch()  # type: ignore[no-untyped-call]
                for event in w.stream(
                    fn, resource_version=rv, timeout_seconds=120, allow_watch_bookmarks=True, **kwargs
                ):
                    at = time.monotonic()
                    if self._stop.is_set():
                        w.stop()
                        break
                    obj = event["raw_object"]
                    rv = obj.get("metadata", {}).get("resourceVersion") or rv
                    if (
                        event["type"] != "BOOKMARK"
                        and obj.get("metadata", {}).get("namespace") in self.namespaces
                    ):
                        handler(obj, at)
            except Exception as exc:  # e.g. 410 Gone: list again
                self.errors.append(f"{type(exc).__name__}: {exc}")
                rv = None
                time.sleep(0.5)

    def _list(
        self, fn: Callable[..., Any], kwargs: dict[str, Any], handler: Callable[[dict[str, Any], float], None]
    ) -> str:
        response = fn(_preload_content=False, **kwargs)
        at = time.monotonic()
        data = json.loads(response.data)
        for obj in data.get("items") or []:
            if obj.get("metadata", {}).get("namespace") in self.namespaces:
                handler(obj, at)
        return str(data["metadata"]["resourceVersion"])

    def _first(self, table: dict[str, float], key: str, at: float) -> None:
        with self.lock:
            table.setdefault(key, at)

    def _on_migration(self, obj: dict[str, Any], at: float) -> None:
        meta, status = obj["metadata"], obj.get("status") or {}
        for cond in status.get("conditions") or []:
            if (
                cond.get("type") == "Ready"
                and cond.get("status") == "True"
                and status.get("observedGeneration") == meta.get("generation")
            ):
                self._first(self.ready, f"{meta['namespace']}/{meta['name']}", at)

    def _on_job(self, obj: dict[str, Any], at: float) -> None:
        meta = obj["metadata"]
        owner = (meta.get("labels") or {}).get(MIGRATION_LABEL)
        if owner:
            key = f"{meta['namespace']}/{owner}"
            self._first(self.job_created, key, at)
            for cond in (obj.get("status") or {}).get("conditions") or []:
                if cond.get("type") == "Complete" and cond.get("status") == "True":
                    self._first(self.job_complete, key, at)

    def _on_pod(self, obj: dict[str, Any], at: float) -> None:
        meta = obj["metadata"]
        labels = meta.get("labels") or {}
        key = f"{meta['namespace']}/{meta['name']}"
        if MIGRATION_LABEL in labels and (obj.get("status") or {}).get("phase") == "Succeeded":
            self._first(self.pod_succeeded, f"{meta['namespace']}/{labels[MIGRATION_LABEL]}", at)
        if WAIT_FOR_LABEL in labels:
            gates = {g.get("name") for g in (obj.get("spec") or {}).get("schedulingGates") or []}
            if SCHEDULING_GATE in gates:
                self._first(self.gated, key, at)
            elif key in self.gated:
                self._first(self.released, key, at)

    def wait(self, check: Callable[[], bool], timeout: float, what: str) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if check():
                    return True
            time.sleep(0.1)
        print(f"[bench] timed out after {timeout:.0f}s waiting for {what}", flush=True)
        return False


@contextlib.contextmanager
def namespaces(kube: Kube, prefix: str, count: int) -> Iterator[list[str]]:
    names = [kube.namespace(f"{prefix}{i}") for i in range(count)]
    try:
        yield names
    finally:
        kube.delete_namespaces(names)
