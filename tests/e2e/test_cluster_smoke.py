"""The e2e cluster itself: real control plane, node agent semantics, scheduling gates, SA RBAC, helm."""

from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from localcluster import NODE_NAME, Cluster
from localcluster.pki import serving_cert
from localcluster.stack import wait_for

pytestmark = pytest.mark.e2e
NODE_AGENT = "node agent: the local kubelet stand-in (its node, its pod semantics)"
MAPPED = "map_image: Job pods run as local processes"

REPORT_SCRIPT = """
import json, os, sys, time
if os.environ.get("PID_FILE"):
    open(os.environ["PID_FILE"], "w").write(str(os.getpid()))
time.sleep(float(os.environ.get("SLEEP", "0")))
with open(os.environ["DBMIGRATE_REPORT_PATH"], "w") as f:
    json.dump({"url": os.environ.get("DB_URL"), "mode": os.environ.get("MODE"), "argv": sys.argv[1:]}, f)
sys.exit(int(os.environ.get("EXIT_CODE", "0")))
"""


@pytest.fixture
def core(cluster: Cluster) -> Any:
    return client.CoreV1Api(cluster.api_client())


@pytest.fixture
def report_image(cluster: Cluster, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """An image name mapped to a local Python script that writes a JSON report and exits $EXIT_CODE."""
    script = tmp_path / "report.py"
    script.write_text(REPORT_SCRIPT)
    image = f"registry.example.com/report-{request.node.name.replace('_', '-')}:1"
    cluster.map_image(image, [sys.executable, str(script)], cmd=["--from-image"], env={"MODE": "image-env"})
    return image


def job(
    name: str, image: str, env: list[dict[str, Any]], backoff: int = 0, **container: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "runner", "image": image, "env": env, **container}],
                }
            },
        },
    }


def apply(cluster: Cluster, namespace: str, obj: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj))


def job_pods(core: Any, namespace: str, name: str) -> list[Any]:
    return list(core.list_namespaced_pod(namespace, label_selector=f"job-name={name}").items)


def terminated(core: Any, namespace: str, name: str) -> Any:
    pods = job_pods(core, namespace, name)
    statuses = pods[0].status.container_statuses if pods else None
    return statuses[0].state.terminated if statuses else None


def waiting(core: Any, namespace: str, name: str) -> Any:
    pods = job_pods(core, namespace, name)
    statuses = pods[0].status.container_statuses if pods else None
    return statuses[0].state.waiting if statuses and statuses[0].state.waiting else None


@pytest.mark.local_cluster(NODE_AGENT)
def test_control_plane_is_real_and_node_ready(cluster: Cluster) -> None:
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"].startswith("v1.")
    assert cluster.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
    node = json.loads(cluster.kubectl("get", "node", NODE_NAME, "-o", "json").stdout)
    assert {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"] == "True"
    assert not node["spec"].get("taints")
    assert node["status"]["allocatable"]["pods"] == "110"


@pytest.mark.local_cluster(NODE_AGENT)
def test_deployment_pods_become_running_and_ready(cluster: Cluster, namespace: str, core: Any) -> None:
    cluster.kubectl("create", "deployment", "web", "--image=nginx:1.27", "--replicas=2", "-n", namespace)
    cluster.kubectl("rollout", "status", "deployment/web", "-n", namespace, "--timeout=90s", timeout=100)
    pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
    assert len(pods) == 2
    for pod in pods:
        assert pod.status.phase == "Running"
        assert pod.status.pod_ip
        assert pod.status.container_statuses[0].ready
        assert pod.status.container_statuses[0].state.running is not None


@pytest.mark.local_cluster(MAPPED)
def test_job_runs_mapped_image_with_secret_env(
    cluster: Cluster, namespace: str, core: Any, report_image: str
) -> None:
    url = "postgres://app:pw@127.0.0.1:5432/app"
    core.create_namespaced_secret(namespace, {"metadata": {"name": "db"}, "stringData": {"url": url}})
    env = [{"name": "DB_URL", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}}]
    apply(cluster, namespace, job("ok", report_image, env))
    apply(
        cluster,
        namespace,
        job("fails", report_image, [*env, {"name": "EXIT_CODE", "value": "3"}], args=["x"]),
    )

    state = wait_for(lambda: terminated(core, namespace, "ok"), what="ok job pod to terminate")
    assert (state.exit_code, state.reason) == (0, "Completed")
    assert json.loads(state.message) == {"url": url, "mode": "image-env", "argv": ["--from-image"]}
    cluster.kubectl(
        "wait", "-n", namespace, "--for=condition=Complete", "job/ok", "--timeout=60s", timeout=70
    )
    assert job_pods(core, namespace, "ok")[0].status.phase == "Succeeded"

    state = wait_for(lambda: terminated(core, namespace, "fails"), what="failing job pod to terminate")
    assert (state.exit_code, state.reason) == (3, "Error")
    assert json.loads(state.message)["argv"] == ["x"]  # args replace the image's CMD
    cluster.kubectl(
        "wait", "-n", namespace, "--for=condition=Failed", "job/fails", "--timeout=60s", timeout=70
    )
    assert len(job_pods(core, namespace, "fails")) == 1  # backoffLimit 0, restartPolicy Never


@pytest.mark.local_cluster(MAPPED)
def test_container_command_is_found_on_the_image_path(
    cluster: Cluster, namespace: str, core: Any, tmp_path: Path
) -> None:
    """Like the operator's Job (`command: [dbmigrate-runner]`): the map's env PATH finds the command."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (tmp_path / "report.py").write_text(REPORT_SCRIPT)
    tool = bindir / "report-tool"
    tool.write_text(f'#!/bin/sh\nexec {sys.executable} {tmp_path / "report.py"} "$@"\n')
    tool.chmod(0o755)
    image = "registry.example.com/tool-image:2"
    cluster.map_image(image, ["/bin/false"], env={"PATH": f"{bindir}:/usr/bin:/bin", "MODE": "from-map"})
    apply(cluster, namespace, job("cmd", image, [], command=["report-tool", "$(MODE)"]))
    state = wait_for(lambda: terminated(core, namespace, "cmd"), what="command job pod to terminate")
    assert (state.exit_code, json.loads(state.message)["argv"]) == (0, ["from-map"])


@pytest.mark.local_cluster(MAPPED)
def test_job_retries_are_new_pods_and_pod_failure_policy_sees_exit_codes(
    cluster: Cluster, namespace: str, core: Any, report_image: str
) -> None:
    exit1 = [{"name": "EXIT_CODE", "value": "1"}]
    apply(cluster, namespace, job("retry", report_image, exit1, backoff=1))
    final = job("final", report_image, [{"name": "EXIT_CODE", "value": "3"}], backoff=5)
    final["spec"]["podFailurePolicy"] = {
        "rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": "runner", "operator": "In", "values": [3]}}
        ]
    }
    apply(cluster, namespace, final)

    def failed_reason(name: str) -> str | None:
        got = json.loads(cluster.kubectl("get", "job", name, "-n", namespace, "-o", "json").stdout)
        conds = got["status"].get("conditions") or []
        return next((c["reason"] for c in conds if c["type"] == "Failed" and c["status"] == "True"), None)

    assert wait_for(lambda: failed_reason("final"), what="final job to fail") == "PodFailurePolicy"
    assert len(job_pods(core, namespace, "final")) == 1
    assert wait_for(lambda: failed_reason("retry"), 90, what="retry job to fail") == "BackoffLimitExceeded"
    pods = job_pods(core, namespace, "retry")
    assert len(pods) == 2  # restartPolicy Never: one pod per attempt
    assert {p.status.phase for p in pods} == {"Failed"}


@pytest.mark.local_cluster(MAPPED)
def test_missing_secret_or_key_is_create_container_config_error(
    cluster: Cluster, namespace: str, core: Any, report_image: str
) -> None:
    env = [{"name": "DB_URL", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "url"}}}]
    apply(cluster, namespace, job("nosecret", report_image, env))
    wait_for(
        lambda: (w := waiting(core, namespace, "nosecret")) and w.reason == "CreateContainerConfigError",
        what="CreateContainerConfigError",
    )
    assert waiting(core, namespace, "nosecret").message == 'secret "nope" not found'

    core.create_namespaced_secret(namespace, {"metadata": {"name": "nokey"}, "stringData": {"other": "x"}})
    env = [{"name": "DB_URL", "valueFrom": {"secretKeyRef": {"name": "nokey", "key": "url"}}}]
    apply(cluster, namespace, job("nokey", report_image, env))
    w = wait_for(
        lambda: (w := waiting(core, namespace, "nokey")) and w.reason == "CreateContainerConfigError" and w,
        what="CreateContainerConfigError for a missing key",
    )
    assert w.message == f"couldn't find key url in Secret {namespace}/nokey"

    # Like kubelet, it retries: once the secret exists the container runs.
    core.create_namespaced_secret(namespace, {"metadata": {"name": "nope"}, "stringData": {"url": "late"}})
    state = wait_for(lambda: terminated(core, namespace, "nosecret"), what="run after the secret appeared")
    assert json.loads(state.message)["url"] == "late"


@pytest.mark.local_cluster(NODE_AGENT)
def test_unmapped_job_image_is_err_image_pull(cluster: Cluster, namespace: str, core: Any) -> None:
    apply(cluster, namespace, job("pull", "registry.example.com/not-there:9", []))
    pulling = ("ErrImagePull", "ImagePullBackOff")
    w = wait_for(
        lambda: (w := waiting(core, namespace, "pull")) and w.reason in pulling and w, what="ErrImagePull"
    )
    assert 'Failed to pull image "registry.example.com/not-there:9"' in w.message
    wait_for(
        lambda: (w := waiting(core, namespace, "pull")) and w.reason == "ImagePullBackOff", what="back-off"
    )


@pytest.mark.local_cluster(NODE_AGENT)
def test_scheduling_gate_keeps_pod_pending_until_removed(cluster: Cluster, namespace: str, core: Any) -> None:
    pod = {
        "metadata": {"name": "gated"},
        "spec": {
            "schedulingGates": [{"name": "dbmigrate.dev/migration"}],
            "containers": [{"name": "app", "image": "nginx:1.27"}],
        },
    }
    core.create_namespaced_pod(namespace, pod)

    def scheduled() -> Any:
        conds = core.read_namespaced_pod("gated", namespace).status.conditions or []
        return next((c for c in conds if c.type == "PodScheduled"), None)

    cond = wait_for(scheduled, what="PodScheduled condition")
    assert (cond.status, cond.reason) == ("False", "SchedulingGated")
    time.sleep(2)
    got = core.read_namespaced_pod("gated", namespace)
    assert (got.status.phase, got.spec.node_name) == ("Pending", None)
    assert "SchedulingGated" in cluster.kubectl("get", "pod", "gated", "-n", namespace).stdout

    core.patch_namespaced_pod("gated", namespace, [{"op": "remove", "path": "/spec/schedulingGates"}])
    wait_for(lambda: core.read_namespaced_pod("gated", namespace).status.phase == "Running", what="Running")
    assert core.read_namespaced_pod("gated", namespace).spec.node_name == NODE_NAME


@pytest.mark.local_cluster(MAPPED)
def test_pod_deletion_kills_the_process(
    cluster: Cluster, namespace: str, core: Any, report_image: str, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    env = [{"name": "SLEEP", "value": "300"}, {"name": "PID_FILE", "value": str(pid_file)}]
    apply(cluster, namespace, job("sleeper", report_image, env))
    wait_for(lambda: pid_file.exists() and pid_file.read_text(), what="process start")
    pid = int(pid_file.read_text())
    name = job_pods(core, namespace, "sleeper")[0].metadata.name
    cluster.kubectl("delete", "job", "sleeper", "-n", namespace, "--cascade=foreground", "--wait=false")
    wait_for(
        lambda: not [p for p in job_pods(core, namespace, "sleeper") if p.metadata.name == name],
        what="pod deletion",
    )
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_service_account_kubeconfig_has_only_its_rbac(cluster: Cluster, namespace: str) -> None:
    kubeconfig = cluster.service_account_kubeconfig(namespace, "limited")
    whoami = cluster.kubectl(
        "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}", kubeconfig=kubeconfig
    )
    assert whoami.stdout == f"system:serviceaccount:{namespace}:limited"
    denied = cluster.kubectl("get", "pods", kubeconfig=kubeconfig, check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr

    cluster.kubectl("create", "role", "pod-reader", "--verb=get,list", "--resource=pods", "-n", namespace)
    cluster.kubectl(
        "create",
        "rolebinding",
        "limited",
        "--role=pod-reader",
        f"--serviceaccount={namespace}:limited",
        "-n",
        namespace,
    )
    wait_for(
        lambda: cluster.kubectl("get", "pods", kubeconfig=kubeconfig, check=False).returncode == 0,
        what="RBAC grant to take effect",
    )
    assert cluster.kubectl("get", "secrets", kubeconfig=kubeconfig, check=False).returncode != 0
    assert cluster.kubectl("get", "pods", "-A", kubeconfig=kubeconfig, check=False).returncode != 0


def test_helm_installs_a_chart(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    chart = tmp_path / "demo"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: demo\nversion: 0.1.0\nkubeVersion: '>=1.29.0-0'\n"
    )
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: '{{ .Release.Name }}-cm'}\n"
        "data: {v: '{{ .Values.v }}'}\n"
    )
    (chart / "values.yaml").write_text("v: hello\n")
    cluster.helm("install", "demo", str(chart), "-n", namespace, "--wait", "--timeout=60s")
    got = cluster.kubectl("get", "cm", "demo-cm", "-n", namespace, "-o", "jsonpath={.data.v}")
    assert got.stdout == "hello"
    assert subprocess.run([str(cluster.bin_dir / "helm"), "version"], capture_output=True).returncode == 0


class _Hook(http.server.BaseHTTPRequestHandler):
    """Mutating webhook: labels the pod with the path it was reached by."""

    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        patch = [
            {"op": "add", "path": "/metadata/labels/hooked", "value": self.path.split("?")[0].strip("/")}
        ]
        response = {
            "uid": review["request"]["uid"],
            "allowed": True,
            "patchType": "JSONPatch",
            "patch": base64.b64encode(json.dumps(patch).encode()).decode(),
        }
        body = json.dumps(
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.local_cluster("map_service and loopback webhooks: the API server calls a local server")
def test_webhooks_reach_local_servers_by_service_and_by_url(
    cluster: Cluster, namespace: str, core: Any, tmp_path: Path
) -> None:
    ca, cert, key = serving_cert(tmp_path, [f"hook.{namespace}.svc"])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    core.create_namespaced_service(
        namespace, {"metadata": {"name": "hook"}, "spec": {"ports": [{"port": 443, "targetPort": 8443}]}}
    )
    cluster.map_service(namespace, "hook", port)

    def hook(via: str, client_config: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": f"{via}.hook.test",
            "clientConfig": {**client_config, "caBundle": base64.b64encode(ca).decode()},
            "rules": [
                {"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}
            ],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "objectSelector": {"matchLabels": {"via": via}},
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "failurePolicy": "Fail",
            "timeoutSeconds": 5,
        }

    config = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": f"hook-{namespace}"},
        "webhooks": [
            hook("service", {"service": {"namespace": namespace, "name": "hook", "path": "/service"}}),
            hook("url", {"url": f"https://127.0.0.1:{port}/url"}),
        ],
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(config))
    try:
        for via in ("service", "url"):
            pod = {
                "metadata": {"name": via, "labels": {"via": via}},
                "spec": {"containers": [{"name": "c", "image": "x"}]},
            }
            created = wait_for(functools.partial(_create, core, namespace, pod), what=f"{via} webhook")
            assert created.metadata.labels["hooked"] == via
    finally:
        cluster.kubectl("delete", "mutatingwebhookconfiguration", f"hook-{namespace}")
        server.shutdown()


def _create(core: Any, namespace: str, pod: dict[str, Any]) -> Any:
    """Create, or None while the webhook configuration is not in effect yet."""
    created = core.create_namespaced_pod(namespace, pod, dry_run="All")
    return created if (created.metadata.labels or {}).get("hooked") else None
