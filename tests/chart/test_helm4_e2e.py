"""The chart with Helm 4 (helm.sh/helm/v4, built by hack/build-binaries.sh helm4) on the local control
plane: install, upgrade and uninstall, each with `--wait=watcher`, Helm 4's wait that judges every
object of the release with the kstatus library (Deployment rolled out, pods Ready; the rest Current).
Helm 3 is covered by test_install_e2e.py; the chart is the same for both.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster import Cluster
from tests.chart.conftest import CHART

pytestmark = pytest.mark.e2e


@pytest.fixture
def app_namespace(cluster: Cluster) -> Iterator[str]:
    name = cluster.create_namespace("helm4-app")
    yield name
    cluster.delete_namespace(name)


def helm4(cluster: Cluster, binary: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [str(binary), "--kubeconfig", str(cluster.kubeconfig), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env=cluster.env(), timeout=300, check=False)
    if check:
        assert done.returncode == 0, f"{' '.join(args[:2])}: {done.stdout}{done.stderr}"
    return done


def _get(cluster: Cluster, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def test_helm4_is_helm4(helm4_bin: Path) -> None:
    done = subprocess.run([str(helm4_bin), "version", "--short"], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("v4.3.2"), done.stdout


@pytest.mark.local_cluster(
    "node agent: the chart's operator pods (image not published) shown Running, as helm --wait needs"
)
def test_install_upgrade_uninstall_with_helm4(
    cluster: Cluster, namespace: str, app_namespace: str, helm4_bin: Path
) -> None:
    release = f"dbm4-{uuid.uuid4().hex[:6]}"
    fullname = f"{release}-dbmigrate-operator"
    args = [
        str(CHART), "-n", namespace, "--set", f"watchNamespaces={{{app_namespace}}}",
        "--wait=watcher", "--timeout=120s",
    ]  # fmt: skip
    cluster.kubectl(
        "label", "namespace", namespace,
        "pod-security.kubernetes.io/enforce=restricted", "pod-security.kubernetes.io/warn=restricted",
    )  # fmt: skip
    installed = helm4(cluster, helm4_bin, "install", release, *args)
    try:
        assert f"Watching: {app_namespace}" in installed.stdout  # NOTES.txt
        assert "PodSecurity" not in installed.stderr, installed.stderr
        # --wait returned: kstatus saw the Deployment rolled out, so its pods exist and are Ready
        selector = f"app.kubernetes.io/instance={release}"
        pods = _get(cluster, "pods", "-n", namespace, "-l", selector)["items"]
        assert len(pods) == 2
        for pod in pods:
            ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
            assert ready["Ready"] == "True", pod["status"]
        deployment = _get(cluster, "deployment", fullname, "-n", namespace)
        assert deployment["status"]["readyReplicas"] == 2
        # the rest of the release, as Helm 3 installs it
        policies = cluster.kubectl("get", "validatingadmissionpolicies", "-o", "name").stdout
        assert f"{fullname}-jobs" in policies
        role = _get(cluster, "role", f"{fullname}-leader-election", "-n", namespace)
        assert [r.get("resourceNames") for r in role["rules"]] == [None, [fullname]]
        secret = _get(cluster, "secret", f"{fullname}-webhook-tls", "-n", namespace)["data"]
        configuration = _get(cluster, "mutatingwebhookconfiguration", fullname)
        assert configuration["webhooks"][0]["clientConfig"]["caBundle"] == secret["ca.crt"]

        upgraded = helm4(cluster, helm4_bin, "upgrade", release, *args, "--set", "resyncSeconds=120")
        assert "has been upgraded" in upgraded.stdout, upgraded.stdout
        deployment = _get(cluster, "deployment", fullname, "-n", namespace)
        env = {
            e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert env["DBMIGRATE_RESYNC_SECONDS"] == "120"
        # --wait covered the rollout the upgrade started: the new template's pods are the Ready ones
        assert deployment["status"]["observedGeneration"] == deployment["metadata"]["generation"]
        assert deployment["status"]["updatedReplicas"] == deployment["status"]["readyReplicas"] == 2
        assert _get(cluster, "secret", f"{fullname}-webhook-tls", "-n", namespace)["data"] == secret, (
            "the generated certificate is kept across upgrades (lookup) with Helm 4 too"
        )
        status = json.loads(
            helm4(cluster, helm4_bin, "status", release, "-n", namespace, "-o", "json").stdout
        )
        assert status["info"]["status"] == "deployed"
        assert status["version"] == 2
    finally:
        uninstalled = helm4(
            cluster, helm4_bin, "uninstall", release, "-n", namespace, "--wait=watcher", check=False
        )
    assert uninstalled.returncode == 0, uninstalled.stdout + uninstalled.stderr
    # --wait on uninstall: everything is gone when it returns
    assert cluster.kubectl("get", "mutatingwebhookconfiguration", fullname, check=False).returncode != 0
    assert cluster.kubectl("get", "deployment", fullname, "-n", namespace, check=False).returncode != 0
    assert not _get(cluster, "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={release}")["items"]
    assert helm4(cluster, helm4_bin, "status", release, "-n", namespace, check=False).returncode != 0


@pytest.mark.local_cluster(
    "node agent: the chart's operator pods (image not published) shown Running, as helm --wait needs"
)
def test_a_helm3_release_upgrades_with_helm4(
    cluster: Cluster, namespace: str, app_namespace: str, helm4_bin: Path
) -> None:
    """Moving to Helm 4: a release installed with Helm 3 upgrades (and uninstalls) with Helm 4."""
    release = f"dbm34-{uuid.uuid4().hex[:6]}"
    fullname = f"{release}-dbmigrate-operator"
    args = [str(CHART), "-n", namespace, "--set", f"watchNamespaces={{{app_namespace}}}", "--timeout=120s"]
    cluster.helm("install", release, *args, "--wait")
    try:
        helm4(cluster, helm4_bin, "upgrade", release, *args, "--wait=watcher", "--set", "resyncSeconds=90")
        deployment = _get(cluster, "deployment", fullname, "-n", namespace)
        env = {
            e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        assert env["DBMIGRATE_RESYNC_SECONDS"] == "90"
        history = json.loads(
            helm4(cluster, helm4_bin, "history", release, "-n", namespace, "-o", "json").stdout
        )
        assert [h["status"] for h in history] == ["superseded", "deployed"]
    finally:
        helm4(cluster, helm4_bin, "uninstall", release, "-n", namespace, "--wait=watcher", check=False)
    assert cluster.kubectl("get", "mutatingwebhookconfiguration", fullname, check=False).returncode != 0
