"""A real Kubernetes control plane on loopback for e2e tests: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and our node agent (a kubelet stand-in).

Every process runs in its own process group and is killed when the test process dies
(PR_SET_PDEATHSIG), at exit, or by `Cluster.stop()`; `detach=True` (the CLI's `up`) skips the
death signal so the cluster outlives the command that started it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from localcluster import node as nodemod
from localcluster import pki as pkimod
from localcluster.binaries import REPO, ensure_binaries, k8s_version

NODE_NAME = "dbmigrate-node"
DATA_PREFIX = "dbmigrate-k8s-"
SERVICE_CIDR = "10.0.0.0/24"
EGRESS_SOCKET = "egress.sock"  # in the data dir: the node agent's CONNECT proxy for the apiserver
ADMISSION_PLUGINS = ",".join(
    [
        "NamespaceLifecycle",
        "LimitRanger",
        "ServiceAccount",
        "DefaultTolerationSeconds",
        "Priority",
        "ResourceQuota",
        "MutatingAdmissionWebhook",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionWebhook",
    ]
)


# Who wrote what: every write request, its user and its object, never bodies. Reads are logged for
# what the operator reads (who asked, with which requestURI: its selectors): gets, lists and watches of
# Pods, Jobs and DatabaseMigrations, and lists and gets of Events. That proves a client's watches are
# filtered by the API server, and counts every request the operator makes about one DatabaseMigration
# (tests/operator/test_requests_cluster.py); a watch is logged when it starts.
WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")
READ_VERBS = ("list", "watch")
PODS_AND_JOBS = [{"group": "", "resources": ["pods"]}, {"group": "batch", "resources": ["jobs"]}]
MIGRATIONS = [{"group": "dbmigrate.dev", "resources": ["databasemigrations", "databasemigrations/status"]}]
EVENTS = [{"group": "", "resources": ["events"]}, {"group": "events.k8s.io", "resources": ["events"]}]
LOGS = [{"group": "", "resources": ["pods/log"]}]  # the operator's reads of a waiting run's log
AUDIT_POLICY: dict[str, Any] = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "Metadata", "verbs": list(WRITE_VERBS), "omitStages": ["ResponseStarted"]},
        {
            "level": "Metadata",
            "verbs": ["watch"],
            "resources": PODS_AND_JOBS + MIGRATIONS,
            "omitStages": ["ResponseComplete"],
        },
        {
            "level": "Metadata",
            "verbs": ["list", "get"],
            "resources": PODS_AND_JOBS + MIGRATIONS + EVENTS + LOGS,
        },
        {"level": "None"},
    ],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """preexec_fn: own process group, and SIGKILL when the test process dies (Linux)."""
    os.setpgrp()
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _kubeconfig(server: str, ca: Path, user: dict[str, Any], namespace: str = "default") -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {"server": server, "certificate-authority": str(ca)}}],
            "users": [{"name": "user", "user": user}],
            "contexts": [
                {"name": "test", "context": {"cluster": "test", "user": "user", "namespace": namespace}}
            ],
            "current-context": "test",
        }
    )


@dataclass
class Cluster:
    """A running control plane. `kubeconfig` is admin (system:masters); see `service_account_kubeconfig`."""

    bin_dir: Path
    data_dir: Path
    server: str
    kubeconfig: Path
    image_map_file: Path
    pids: dict[str, int] = field(default_factory=dict)
    node: str = "agent"  # "agent": the node agent stand-in; "kubelet": a real node (localcluster/node.py)
    saved: dict[str, Any] | None = None  # kubelet mode: the machine state to restore (node.MachineState)

    @property
    def ca_cert(self) -> Path:
        return self.data_dir / "pki" / "ca.crt"

    @property
    def audit_log(self) -> Path:
        """The API server's audit log: one JSON line per write, and per list/watch of Pods and Jobs."""
        return self.data_dir / "audit.log"

    def _audit_events(self) -> list[dict[str, Any]]:
        if not self.audit_log.exists():
            return []
        events = []
        for line in self.audit_log.read_text().splitlines():
            with contextlib.suppress(ValueError):  # the line being written right now
                events.append(json.loads(line))
        return events

    def audited_writes(self) -> list[dict[str, Any]]:
        """The audit events so far (writes only: create, update, patch, delete), oldest first."""
        return [e for e in self._audit_events() if e.get("verb") in WRITE_VERBS]

    def audited_reads(self) -> list[dict[str, Any]]:
        """Lists and watches of Pods and Jobs so far (user, verb, objectRef, requestURI), oldest first."""
        return [
            e
            for e in self._audit_events()
            if e.get("verb") in READ_VERBS and (e.get("objectRef") or {}).get("resource") in ("pods", "jobs")
        ]

    def audited_requests(self, username: str) -> list[dict[str, Any]]:
        """Every audited request of one user so far (the policy above: writes, and reads of Pods,
        Jobs, DatabaseMigrations and Events), oldest first."""
        return [e for e in self._audit_events() if (e.get("user") or {}).get("username") == username]

    def env(self) -> dict[str, str]:
        """Environment for subprocesses: our kubectl/helm first on PATH, KUBECONFIG set."""
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "DBMIGRATE_NODE_IMAGE_MAP_FILE": str(self.image_map_file),
        }

    def _run(
        self,
        tool: str,
        args: Sequence[str],
        kubeconfig: Path | None,
        input: str | None,
        check: bool,
        timeout: float,
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir / tool), "--kubeconfig", str(kubeconfig or self.kubeconfig), *args]
        res = subprocess.run(
            cmd, input=input, capture_output=True, text=True, env=self.env(), timeout=timeout
        )
        if check and res.returncode != 0:
            raise subprocess.CalledProcessError(res.returncode, cmd, res.stdout, res.stderr)
        return res

    def kubectl(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run our kubectl (admin unless `kubeconfig` is given); raises CalledProcessError if check."""
        return self._run("kubectl", args, kubeconfig, input, check, timeout)

    def helm(
        self, *args: str, kubeconfig: Path | None = None, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run our helm against this cluster."""
        return self._run("helm", args, kubeconfig, None, check, timeout)

    def api_client(self, kubeconfig: Path | None = None) -> Any:
        """A `kubernetes.client.ApiClient` for this cluster (admin unless `kubeconfig` is given)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(kubeconfig or self.kubeconfig))  # type: ignore[no-untyped-call]

    def create_namespace(self, prefix: str = "test") -> str:
        """Create a fresh namespace and wait for its `default` ServiceAccount (pods need it)."""
        from kubernetes import client

        base = re.sub(r"[^a-z0-9-]", "-", prefix.lower()).strip("-")[:40] or "test"
        name = f"{base}-{uuid.uuid4().hex[:6]}"
        with self.api_client() as api:
            core: Any = client.CoreV1Api(api)
            core.create_namespace({"metadata": {"name": name}})
            _wait(
                lambda: bool(
                    core.list_namespaced_service_account(name, field_selector="metadata.name=default").items
                ),
                60,
                f"default SA in {name}",
            )
        return name

    def delete_namespace(self, name: str) -> None:
        """Delete without waiting: the namespace controller finishes in the background."""
        from kubernetes import client
        from kubernetes.client import ApiException

        with self.api_client() as api, contextlib.suppress(ApiException):
            client.CoreV1Api(api).delete_namespace(name)

    def service_account_kubeconfig(
        self, namespace: str, name: str, *, create: bool = True, expiration_seconds: int = 3600
    ) -> Path:
        """Kubeconfig authenticating as a ServiceAccount with a TokenRequest token: exactly its RBAC."""
        from kubernetes import client
        from kubernetes.client import ApiException

        with self.api_client() as api:
            core: Any = client.CoreV1Api(api)
            if create:
                with contextlib.suppress(ApiException):
                    core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
            token = core.create_namespaced_service_account_token(
                name, namespace, {"spec": {"expirationSeconds": expiration_seconds}}
            ).status.token
        path = self.data_dir / "kubeconfigs" / f"sa-{namespace}-{name}.kubeconfig"
        path.parent.mkdir(exist_ok=True)
        path.write_text(self._token_kubeconfig(token, namespace))
        path.chmod(0o600)
        return path

    def _token_kubeconfig(self, token: str, namespace: str) -> str:
        """A kubeconfig for `token` against this cluster (the remote mode takes server and CA elsewhere)."""
        return _kubeconfig(self.server, self.ca_cert, {"token": token}, namespace)

    def map_image(
        self,
        image: str,
        entrypoint: Sequence[str] = (),
        *,
        cmd: Sequence[str] = (),
        cwd: str | Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """Tell the node agent to run pods of `image` as a local command.

        `entrypoint`/`cmd` play the image's ENTRYPOINT/CMD: a container's `command`/`args` override
        them as in Docker. `env` is the image's env (the pod's env wins).
        """
        images = json.loads(self.image_map_file.read_text()) if self.image_map_file.exists() else {}
        images[image] = {
            "entrypoint": list(entrypoint),
            "cmd": list(cmd),
            "cwd": str(cwd) if cwd else None,
            "env": env or {},
        }
        tmp = self.image_map_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(images, indent=1))
        tmp.replace(self.image_map_file)

    def map_service(self, namespace: str, name: str, local_port: int, port: int | None = None) -> None:
        """Route the apiserver's calls to Service `namespace/name` (e.g. a webhook's
        `clientConfig.service`; `port` = the Service port, default any) to 127.0.0.1:`local_port`."""
        path = self.data_dir / "service-map.json"
        services = json.loads(path.read_text()) if path.exists() else {}
        services[f"{namespace}/{name}" + (f":{port}" if port else "")] = local_port
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(services, indent=1))
        tmp.replace(path)

    @property
    def real_node(self) -> nodemod.NodeHandle | None:
        """The real node's parts (containerd socket, crictl), or None for the node agent."""
        if self.node != "kubelet" or self.saved is None:
            return None
        return nodemod.NodeHandle(
            self.data_dir / "node", nodemod.MachineState.from_json(self.saved), self.pids
        )

    def crictl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run our crictl against the real node's containerd."""
        node = self.real_node
        if node is None:
            raise RuntimeError("crictl needs the real node (start(node='kubelet'))")
        return node.crictl(self.bin_dir, *args, check=check)

    def stop(self, remove: bool = True) -> None:
        """Stop every component (the node first, etcd last), put the machine back as found (real
        node) and remove the data dir."""
        node = self.real_node
        if node is not None:
            _stop_real_node(self, node)
        for name in (
            "node-agent",
            "kube-proxy",
            "kubelet",
            "containerd",
            "kube-scheduler",
            "kube-controller-manager",
            "kube-apiserver",
            "etcd",
        ):
            pid = self.pids.pop(name, None)
            if pid:
                _kill_group(pid)
        if node is not None:
            nodemod.cleanup(node.data_dir, node.saved)
        if remove:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def state(self) -> dict[str, Any]:
        return {
            "bin_dir": str(self.bin_dir),
            "data_dir": str(self.data_dir),
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "image_map_file": str(self.image_map_file),
            "pids": self.pids,
            "node": self.node,
            "saved": self.saved,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Cluster:
        return cls(
            Path(state["bin_dir"]),
            Path(state["data_dir"]),
            state["server"],
            Path(state["kubeconfig"]),
            Path(state["image_map_file"]),
            dict(state["pids"]),
            state.get("node", "agent"),
            state.get("saved"),
        )


def _stop_real_node(cluster: Cluster, node: nodemod.NodeHandle) -> None:
    """Stop the kubelet first (so it restarts nothing), then every pod sandbox through CRI while
    containerd still runs: their shims and containers go with them."""
    pid = cluster.pids.pop("kubelet", None)
    if pid:
        _kill_group(pid)
    if cluster.pids.get("containerd") and node.containerd_socket.exists():
        with contextlib.suppress(Exception):
            node.crictl(cluster.bin_dir, "rmp", "--all", "--force", check=False)


def _remove_stale_data_dirs() -> None:
    """Delete data dirs of earlier clusters whose processes are all gone (a SIGKILLed test run)."""
    for pids_file in Path(tempfile.gettempdir()).glob(f"{DATA_PREFIX}*/pids.json"):
        with contextlib.suppress(OSError, ValueError):
            pids = json.loads(pids_file.read_text()).values()
            if time.time() - pids_file.stat().st_mtime > 60 and not any(nodemod.alive(p) for p in pids):
                shutil.rmtree(pids_file.parent, ignore_errors=True)


def _kill_group(pid: int, grace: float = 10) -> None:
    """SIGTERM the process group, SIGKILL it after `grace` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                break
        except ChildProcessError:  # not our child (CLI `down`): poll for existence
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _wait(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    procs: dict[str, subprocess.Popen[bytes]] | None = None,
    logs: Path | None = None,
) -> None:
    """Poll `check` until true; fail fast with the log tail if a component died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in (procs or {}).items():
            if proc.poll() is not None:
                tail = (logs / f"{name}.log").read_text()[-3000:] if logs else ""
                raise RuntimeError(f"{name} exited with {proc.returncode} while waiting for {what}:\n{tail}")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.25)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def _https_ok(url: str, ctx: ssl.SSLContext) -> bool:
    with urllib.request.urlopen(url, context=ctx, timeout=5) as resp:
        return bool(resp.status == 200)


@dataclass
class _Boot:
    """One start in progress: where its files go, how its processes are launched and awaited."""

    cluster: Cluster
    pki: pkimod.Pki
    detach: bool
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def logs(self) -> Path:
        return self.cluster.data_dir / "logs"

    def kubeconfig(self, stem: str) -> Path:
        """A kubeconfig for the client certificate `stem` of the PKI."""
        path = self.cluster.data_dir / f"{stem}.kubeconfig"
        user = {"client-certificate": str(self.pki.cert(stem)), "client-key": str(self.pki.key(stem))}
        path.write_text(_kubeconfig(self.cluster.server, self.pki.ca_cert, user))
        return path

    def launch(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        data_dir = self.cluster.data_dir
        with (self.logs / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=data_dir,
                env=env,
                preexec_fn=os.setpgrp if self.detach else _die_with_parent,
            )
        self.procs[name] = proc
        self.cluster.pids[name] = proc.pid
        (data_dir / "pids.json").write_text(json.dumps(self.cluster.pids))

    def wait(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        _wait(check, timeout, what, self.procs, self.logs)


@dataclass(frozen=True)
class _Ports:
    etcd: int = field(default_factory=free_port)
    etcd_peer: int = field(default_factory=free_port)
    api: int = field(default_factory=free_port)
    kcm: int = field(default_factory=free_port)
    scheduler: int = field(default_factory=free_port)


def start(
    data_dir: Path | None = None, *, detach: bool = False, progress: Any = None, node: str = "agent"
) -> Cluster:
    """Build binaries (and images) if needed, start the control plane and its node, wait until usable.

    `node="kubelet"`: a real node (containerd, runc, CNI bridge, kubelet, kube-proxy; our images
    built and imported); `node="agent"`: the node agent, which runs mapped images as local
    processes (fast, no containers).
    """
    if node not in ("agent", "kubelet"):
        raise ValueError(f"node must be 'agent' or 'kubelet', not {node!r}")
    real = node == "kubelet"
    bin_dir = ensure_binaries(progress)
    built: dict[str, Any] = {}
    if real:
        from localcluster import images

        nodemod.ensure_tools()
        built = images.ensure_images(progress)
    began = time.monotonic()
    _remove_stale_data_dirs()
    data_dir = Path(data_dir or tempfile.mkdtemp(prefix=DATA_PREFIX))
    (data_dir / "logs").mkdir(parents=True, exist_ok=True)
    service_cidr = nodemod.SERVICE_CIDR if real else SERVICE_CIDR
    pki = pkimod.generate(
        data_dir / "pki",
        NODE_NAME,
        service_ip=_first_ip(service_cidr),
        extra_ips=(nodemod.NODE_IP,) if real else (),
    )
    ports = _Ports()
    server = f"https://127.0.0.1:{ports.api}"
    image_map = data_dir / "image-map.json"
    image_map.write_text("{}")
    cluster = Cluster(bin_dir, data_dir, server, data_dir / "admin.kubeconfig", image_map, node=node)
    boot = _Boot(cluster, pki, detach)
    boot.kubeconfig("admin")
    if real:  # claim the machine's one real node before touching anything outside data_dir
        cluster.saved = nodemod.acquire(data_dir / "node").to_json()
    try:
        if real:
            nodemod.create_cgroups()
            nodemod.create_bridge()
        node_args = _real_node_apiserver_args(pki) if real else _agent_apiserver_args(data_dir)
        _start_control_plane(boot, ports, service_cidr, node_args)
        if real:
            _start_real_node(boot, built)
        else:
            _start_node_agent(boot, ports.api)
        boot.wait(lambda: _node_ready(cluster), 120, f"node {NODE_NAME} Ready")
        boot.wait(
            lambda: "default" in cluster.kubectl("get", "sa", "-n", "default", "-o", "name").stdout,
            60,
            "the default ServiceAccount (controller-manager up)",
        )
        print(f"[cluster] up in {time.monotonic() - began:.1f}s at {server} ({node})", file=sys.stderr)
    except BaseException:
        cluster.stop(remove=False)
        print(f"[cluster] start failed; logs kept in {boot.logs}", file=sys.stderr)
        raise
    return cluster


def _start_control_plane(boot: _Boot, ports: _Ports, service_cidr: str, node_args: list[str]) -> None:
    """etcd, kube-apiserver, kube-controller-manager, kube-scheduler; returns once all are healthy."""
    cluster, pki = boot.cluster, boot.pki
    bin_dir, data_dir = cluster.bin_dir, cluster.data_dir
    audit_policy = data_dir / "audit-policy.yaml"
    audit_policy.write_text(yaml.safe_dump(AUDIT_POLICY))
    etcd = f"http://127.0.0.1:{ports.etcd}"
    peer = f"http://127.0.0.1:{ports.etcd_peer}"
    boot.launch(
        "etcd",
        [
            str(bin_dir / "etcd"),
            "--name=test",
            f"--data-dir={data_dir / 'etcd'}",
            f"--listen-client-urls={etcd}",
            f"--advertise-client-urls={etcd}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=test={peer}",
            "--unsafe-no-fsync=true",
            "--quota-backend-bytes=1073741824",
            "--log-level=warn",
        ],
    )
    boot.launch(
        "kube-apiserver",
        [
            str(bin_dir / "kube-apiserver"),
            f"--etcd-servers={etcd}",
            f"--secure-port={ports.api}",
            f"--tls-cert-file={pki.cert('apiserver')}",
            f"--tls-private-key-file={pki.key('apiserver')}",
            f"--client-ca-file={pki.ca_cert}",
            "--authorization-mode=Node,RBAC",
            f"--enable-admission-plugins={ADMISSION_PLUGINS}",
            f"--service-cluster-ip-range={service_cidr}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            *node_args,
            "--allow-privileged=true",
            f"--cert-dir={data_dir / 'apiserver-certs'}",
            "--profiling=false",
            f"--audit-policy-file={audit_policy}",
            f"--audit-log-path={data_dir / 'audit.log'}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",
            "--v=1",
        ],
    )
    boot.launch(
        "kube-controller-manager",
        [
            str(bin_dir / "kube-controller-manager"),
            f"--kubeconfig={boot.kubeconfig('controller-manager')}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports.kcm}",
            "--leader-elect=false",
            "--controllers=*",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={pki.ca_cert}",
            f"--cluster-signing-cert-file={pki.ca_cert}",
            f"--cluster-signing-key-file={pki.ca_key}",
            f"--service-cluster-ip-range={service_cidr}",
            f"--cert-dir={data_dir / 'kcm-certs'}",
            "--profiling=false",
            "--v=1",
        ],
    )
    boot.launch(
        "kube-scheduler",
        [
            str(bin_dir / "kube-scheduler"),
            f"--kubeconfig={boot.kubeconfig('scheduler')}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports.scheduler}",
            "--leader-elect=false",
            f"--cert-dir={data_dir / 'scheduler-certs'}",
            "--profiling=false",
            "--v=1",
        ],
    )
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.load_cert_chain(pki.cert("admin"), pki.key("admin"))
    boot.wait(lambda: _https_ok(f"{cluster.server}/readyz", ctx), 120, "kube-apiserver /readyz")
    insecure = ssl._create_unverified_context()
    for name, port in (("kube-scheduler", ports.scheduler), ("kube-controller-manager", ports.kcm)):
        url = f"https://127.0.0.1:{port}/healthz"
        boot.wait(functools.partial(_https_ok, url, insecure), 60, f"{name} /healthz")


def _first_ip(cidr: str) -> str:
    import ipaddress

    return str(ipaddress.ip_network(cidr)[1])


def _agent_apiserver_args(data_dir: Path) -> list[str]:
    """Loopback only; the apiserver's traffic to Services (webhooks) goes through the node agent's
    CONNECT proxy on a Unix socket (localcluster/service_proxy.py)."""
    egress_config = data_dir / "egress-selector.yaml"
    egress_config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "apiserver.k8s.io/v1beta1",
                "kind": "EgressSelectorConfiguration",
                "egressSelections": [
                    {
                        "name": "cluster",
                        "connection": {
                            "proxyProtocol": "HTTPConnect",
                            "transport": {"uds": {"udsName": str(data_dir / EGRESS_SOCKET)}},
                        },
                    }
                ],
            }
        )
    )
    return [
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        "--endpoint-reconciler-type=none",
        f"--egress-selector-config-file={egress_config}",
    ]


def _real_node_apiserver_args(pki: pkimod.Pki) -> list[str]:
    """Reachable from pods at the node's address (the `kubernetes` Service's endpoint, through
    kube-proxy); reaches the kubelet for logs and exec with a client certificate."""
    return [
        "--bind-address=0.0.0.0",
        f"--advertise-address={nodemod.NODE_IP}",
        f"--kubelet-client-certificate={pki.cert('apiserver-kubelet-client')}",
        f"--kubelet-client-key={pki.key('apiserver-kubelet-client')}",
        "--kubelet-preferred-address-types=InternalIP",
    ]


def _start_node_agent(boot: _Boot, api_port: int) -> None:
    cluster = boot.cluster
    boot.launch(
        "node-agent",
        [
            sys.executable,
            "-m",
            "localcluster.node_agent",
            f"--kubeconfig={boot.kubeconfig('node')}",
            f"--node-name={NODE_NAME}",
            f"--image-map-file={cluster.image_map_file}",
            f"--work-dir={cluster.data_dir / 'pods'}",
            f"--egress-socket={cluster.data_dir / EGRESS_SOCKET}",
            f"--service-map-file={cluster.data_dir / 'service-map.json'}",
        ],
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "KUBERNETES_SERVICE_PORT": str(api_port),
            "DBMIGRATE_NODE_VERSION": k8s_version(),
        },
    )


def _start_real_node(boot: _Boot, built: dict[str, Any]) -> None:
    """containerd (our images imported) → kubelet → kube-proxy."""
    from localcluster import images

    cluster, pki, launch, client_kubeconfig = boot.cluster, boot.pki, boot.launch, boot.kubeconfig

    node_dir = cluster.data_dir / "node"
    kubelet_ports = (free_port(), free_port())
    files = nodemod.write_node_files(
        cluster.data_dir, pause_image=images.REFS["pause"], ca=pki.ca_cert, kubelet_ports=kubelet_ports
    )
    handle = cluster.real_node
    assert handle is not None
    launch("containerd", ["containerd", "--config", str(files["containerd"])])
    boot.wait(handle.containerd_socket.exists, 60, "containerd's socket")
    # what pods run (the Python base is only a build stage)
    images.import_into_containerd(handle.containerd_socket, [b for k, b in built.items() if k != "python"])
    launch(
        "kubelet",
        [
            str(cluster.bin_dir / "kubelet"),
            f"--config={files['kubelet']}",
            f"--kubeconfig={client_kubeconfig('kubelet')}",
            f"--root-dir={node_dir / 'kubelet' / 'root'}",
            f"--cert-dir={node_dir / 'kubelet' / 'pki'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={nodemod.NODE_IP}",
        ],
    )
    proxy_config = node_dir / "kube-proxy.yaml"
    proxy_config.write_text(
        yaml.safe_dump(
            nodemod.kube_proxy_config(client_kubeconfig("kube-proxy"), NODE_NAME, free_port(), free_port())
        )
    )
    launch("kube-proxy", [str(cluster.bin_dir / "kube-proxy"), f"--config={proxy_config}", "--v=1"])
    nodemod.record_pids(handle)


def _node_ready(cluster: Cluster) -> bool:
    """Ready, and the node lifecycle controller has lifted its initial not-ready taint."""
    node = json.loads(cluster.kubectl("get", "node", NODE_NAME, "-o", "json").stdout)
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", []))
    return ready and not node["spec"].get("taints")


@contextlib.contextmanager
def running_cluster(progress: Any = None, node: str = "agent") -> Iterator[Cluster]:
    """Start a cluster for the duration of the block; always torn down, even on test failure."""
    cluster = start(progress=progress, node=node)
    atexit.register(cluster.stop)
    try:
        yield cluster
    finally:
        cluster.stop()
        atexit.unregister(cluster.stop)
