"""`helm install` / `upgrade` / `uninstall` of the chart on the real local control plane.

The real API server checks what `helm template` cannot: CRD structural schemas, RBAC objects
(escalation checks), Pod Security admission, the webhook configuration, and `lookup` keeping the
generated certificate across upgrades. The node agent does not run the chart's pods (the image is
not mapped), so the second test runs the operator from the replayed image as a local process with
everything the install made for it: ServiceAccount token, RBAC, certificate, env (it makes its Lease);
the API server then reaches it through the chart's webhook configuration and gates a pod.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster import Cluster
from tests.chart.conftest import CHART
from tests.images.dockerfile_model import ImageState

pytestmark = pytest.mark.e2e


def _get(cluster: Cluster, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


@pytest.fixture
def app_namespace(cluster: Cluster) -> Iterator[str]:
    name = cluster.create_namespace("chart-app")
    yield name
    cluster.delete_namespace(name)


@pytest.mark.local_cluster(
    "node agent: the chart's operator pods (image not published) shown Running, as helm --wait needs"
)
def test_install_upgrade_uninstall(cluster: Cluster, namespace: str, app_namespace: str) -> None:
    release = f"dbm-{uuid.uuid4().hex[:6]}"
    fullname = f"{release}-dbmigrate-operator"  # the chart's default naming
    # Watching one namespace scopes the webhook to it, so other tests' pods are never sent to it.
    args = [
        str(CHART),
        "-n",
        namespace,
        "--set",
        f"watchNamespaces={{{app_namespace}}}",
        "--wait",
        "--timeout=120s",
    ]
    # The real PodSecurity admission plugin enforces the restricted standard on the operator's pods:
    # `--wait` only returns once they exist, which they would not if they broke it.
    cluster.kubectl(
        "label", "namespace", namespace,
        "pod-security.kubernetes.io/enforce=restricted", "pod-security.kubernetes.io/warn=restricted",
    )  # fmt: skip
    installed = cluster.helm("install", release, *args)
    assert "PodSecurity" not in installed.stderr, installed.stderr
    pods = _get(cluster, "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={release}")["items"]
    assert len(pods) == 2
    assert f"Watching: {app_namespace}" in installed.stdout  # NOTES.txt
    try:
        crd = "crd/databasemigrations.dbmigrate.dev"
        cluster.kubectl("wait", "--for=condition=Established", crd, "--timeout=60s")
        # leader election is a Lease the operator makes itself: nothing of kopf's peering is installed
        for crd in ("crd/kopfpeerings.kopf.dev", "crd/clusterkopfpeerings.kopf.dev"):
            assert cluster.kubectl("get", crd, check=False).returncode != 0, crd
        manifest = cluster.helm("get", "manifest", release, "-n", namespace).stdout
        assert "kopf.dev" not in manifest

        secret = _get(cluster, "secret", f"{fullname}-webhook-tls", "-n", namespace)["data"]
        configuration = _get(cluster, "mutatingwebhookconfiguration", fullname)
        assert configuration["webhooks"][0]["clientConfig"]["caBundle"] == secret["ca.crt"]

        # a values file from the kopf-peering days (peering.createObjects) still upgrades: ignored
        upgraded = cluster.helm(
            "upgrade", release, *args, "--set", "resyncSeconds=120", "--set", "peering.createObjects=true"
        )
        assert "kubectl delete crd clusterkopfpeerings.kopf.dev kopfpeerings.kopf.dev" in upgraded.stdout
        assert "kopf.dev" not in cluster.helm("get", "manifest", release, "-n", namespace).stdout
        again = _get(cluster, "secret", f"{fullname}-webhook-tls", "-n", namespace)["data"]
        assert again == secret, "an upgrade must keep the generated certificate (lookup)"
        configuration = _get(cluster, "mutatingwebhookconfiguration", fullname)
        assert configuration["webhooks"][0]["clientConfig"]["caBundle"] == secret["ca.crt"]
        assert b"BEGIN CERTIFICATE" in base64.b64decode(secret["ca.crt"])

        sa = f"system:serviceaccount:{namespace}:{fullname}"

        def can(verb: str, resource: str, *where: str) -> bool:
            done = cluster.kubectl("auth", "can-i", verb, resource, "--as", sa, *where, check=False)
            return done.stdout.strip() == "yes"

        assert can("create", "jobs.batch", "-n", app_namespace)
        assert can("patch", "databasemigrations.dbmigrate.dev", "--subresource=status", "-n", app_namespace)
        # patch on the resource itself: only for its run-in-progress finalizer (the admission policy
        # refuses any other change, tests/chart/test_least_privilege_e2e.py)
        assert can("patch", "databasemigrations.dbmigrate.dev", "-n", app_namespace)
        assert not can("update", "databasemigrations.dbmigrate.dev", "-n", app_namespace)
        assert can("patch", "pods", "-n", app_namespace)
        assert can("list", "customresourcedefinitions.apiextensions.k8s.io")
        assert not can("get", "secrets", "-n", app_namespace), "the operator must not read Secrets"
        assert not can("get", "secrets", "-n", namespace)
        assert not can("create", "jobs.batch", "-n", "default"), (
            "namespaced install leaks to other namespaces"
        )
        assert not can("create", "pods", "-n", app_namespace)
        # the leader-election Lease: its own, in the release namespace (test_least_privilege_e2e.py)
        for verb in ("get", "update"):
            assert can(verb, f"leases.coordination.k8s.io/{fullname}", "-n", namespace), verb
        assert can("create", "leases.coordination.k8s.io", "-n", namespace)
    finally:
        cluster.helm("uninstall", release, "-n", namespace, "--wait", check=False)
    gone = cluster.kubectl("get", "mutatingwebhookconfiguration", fullname, check=False)
    assert gone.returncode != 0


@pytest.mark.local_cluster("map_service: the API server reaches the operator's webhook on a loopback port")
def test_operator_from_the_image_runs_with_the_charts_namespaced_install(
    cluster: Cluster, namespace: str, app_namespace: str, operator_image: ImageState, tmp_path: Path
) -> None:
    """The operator as installed in the image, with the identity, RBAC and certificate a namespaced
    `helm install` made, and the env the chart's Deployment sets (it creates its Lease itself)."""
    release = f"dbm-{uuid.uuid4().hex[:6]}"
    fullname = f"{release}-dbmigrate-operator"
    cluster.helm(
        "install", release, str(CHART), "-n", namespace,
        "--set", f"watchNamespaces={{{app_namespace}}}", "--wait", "--timeout=120s",
    )  # fmt: skip
    proc: subprocess.Popen[bytes] | None = None
    log = tmp_path / "operator.log"
    try:
        deployment = _get(cluster, "deployment", fullname, "-n", namespace)
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value", namespace) for e in container["env"]}  # fieldRef: the namespace
        secret = _get(cluster, "secret", f"{fullname}-webhook-tls", "-n", namespace)["data"]
        for key in ("tls.crt", "tls.key"):
            (tmp_path / key).write_bytes(base64.b64decode(secret[key]))
        health, webhook = free_port(), free_port()
        env.update(
            {  # only what a pod has and a local process does not: its own IP/ports and mounted files
                "DBMIGRATE_LIVENESS_ENDPOINT": f"http://127.0.0.1:{health}/healthz",
                "DBMIGRATE_WEBHOOK_LISTEN_HOST": "127.0.0.1",
                "DBMIGRATE_WEBHOOK_PORT": str(webhook),
                "DBMIGRATE_METRICS_PORT": str(free_port()),
                "DBMIGRATE_WEBHOOK_CERT_FILE": str(tmp_path / "tls.crt"),
                "DBMIGRATE_WEBHOOK_KEY_FILE": str(tmp_path / "tls.key"),
                "KUBECONFIG": str(cluster.service_account_kubeconfig(namespace, fullname, create=False)),
            }
        )
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(operator_image.host_path("/opt/venv/bin/dbmigrate-operator"))],
                env={**operator_image.host_env(), "LANG": "C.UTF-8", **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=tmp_path,
            )

        def healthy() -> bool:
            assert proc is not None
            assert proc.poll() is None, f"the operator exited:\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=2) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        _wait(healthy, 120, "the operator's liveness endpoint")
        # the replica holds the leader-election Lease in the release namespace (RBAC: the chart's Role)
        _wait(
            lambda: bool(
                cluster.kubectl(
                    "get",
                    "lease",
                    fullname,
                    "-n",
                    namespace,
                    "-o",
                    "jsonpath={.spec.holderIdentity}",
                    check=False,
                ).stdout
            ),
            60,
            "the replica holding the Lease",
        )
        # the webhook serves the chart's certificate, valid for the Service's DNS name
        context = ssl.create_default_context(cadata=base64.b64decode(secret["ca.crt"]).decode())
        service = f"{fullname}-webhook.{namespace}.svc"
        with (
            socket.create_connection(("127.0.0.1", webhook), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=service) as tls_socket,
        ):
            assert tls_socket.version()
        # and the API server, following the chart's MutatingWebhookConfiguration (Service, path, CA
        # bundle) to this process, gets an opted-in pod gated
        cluster.map_service(namespace, f"{fullname}-webhook", webhook, 443)
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "app", "labels": {"dbmigrate.dev/wait-for": "shop-db"}},
            "spec": {"containers": [{"name": "app", "image": "registry.example.com/shop:1"}]},
        }
        cluster.kubectl("create", "-n", app_namespace, "-f", "-", input=json.dumps(pod))
        created = _get(cluster, "pod", "app", "-n", app_namespace)
        assert created["spec"]["schedulingGates"] == [{"name": "dbmigrate.dev/migration"}]
        assert "Forbidden" not in log.read_text(), log.read_text()[-3000:]
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        cluster.helm("uninstall", release, "-n", namespace, "--wait", check=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.5)
