"""`helm install` / `upgrade` / `uninstall` of the chart on the real local control plane.

The real API server checks what `helm template` cannot: CRD structural schemas, RBAC objects
(escalation checks), the webhook configuration, and `lookup` keeping the generated certificate
across upgrades. The operator image is not mapped on the node agent, so its pods only report
Ready; running the operator itself is tests/e2e's job.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.chart.conftest import CHART
from tests.cluster import Cluster

pytestmark = pytest.mark.e2e


def _get(cluster: Cluster, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


@pytest.fixture
def app_namespace(cluster: Cluster) -> Iterator[str]:
    name = cluster.create_namespace("chart-app")
    yield name
    cluster.delete_namespace(name)


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
        for crd in (
            "databasemigrations.dbmigrate.dev",
            "kopfpeerings.kopf.dev",
            "clusterkopfpeerings.kopf.dev",
        ):
            cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
        assert _get(cluster, "kopfpeering", fullname, "-n", app_namespace)["metadata"]["name"] == fullname

        secret = _get(cluster, "secret", f"{fullname}-webhook-tls", "-n", namespace)["data"]
        configuration = _get(cluster, "mutatingwebhookconfiguration", fullname)
        assert configuration["webhooks"][0]["clientConfig"]["caBundle"] == secret["ca.crt"]

        cluster.helm("upgrade", release, *args, "--set", "resyncSeconds=120")
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
        assert not can("patch", "databasemigrations.dbmigrate.dev", "-n", app_namespace), "spec is the user's"
        assert can("patch", "pods", "-n", app_namespace)
        assert can("list", "customresourcedefinitions.apiextensions.k8s.io")
        assert not can("get", "secrets", "-n", app_namespace), "the operator must not read Secrets"
        assert not can("get", "secrets", "-n", namespace)
        assert not can("create", "jobs.batch", "-n", "default"), (
            "namespaced install leaks to other namespaces"
        )
        assert not can("create", "pods", "-n", app_namespace)
    finally:
        cluster.helm("uninstall", release, "-n", namespace, "--wait", check=False)
    gone = cluster.kubectl("get", "mutatingwebhookconfiguration", fullname, check=False)
    assert gone.returncode != 0
