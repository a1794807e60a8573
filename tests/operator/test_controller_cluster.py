"""The controller against the real control plane (localcluster): real API server (status
subresource, label selectors, generation, defaulting), real Job controller (podFailurePolicy,
backoff), real scheduler and garbage collector, the node agent as kubelet.

The operator runs in-process with a ServiceAccount bound to exactly the ClusterRole rules of
charts/dbmigrate-operator/files/rbac-rules.yaml, so a missing permission fails here. The migration
image is mapped to a stand-in ``dbmigrate-runner`` that writes the report it is given (the real
runner against PostgreSQL is covered by the runner's and the e2e suite's tests).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kopf
import kubernetes.client
import kubernetes.config
import pytest
import yaml

from dbmigrate_operator import constants as c
from dbmigrate_operator.handlers import register
from dbmigrate_operator.settings import Settings
from dbmigrate_runner.report import Outcome
from localcluster.stack import (
    condition,
    events_of,
    get_json,
    install_crd,
    install_operator_identity,
    jobs_of,
    map_fake_runner,
    status_of,
    true_condition,
    wait_for,
)
from tests.operator.builders import failure_report, make_cr, success_report
from tests.operator.scenarios import V1, V2, V3

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(600),
    pytest.mark.local_cluster("map_image: migration Job pods run a stand-in runner as local processes"),
]
IMAGE = "registry.example.com/fake-migrations:1.0.0"


class Operator:
    """kopf in its own thread and event loop, as the operator ServiceAccount."""

    def __init__(self, kubeconfig: Path, settings: Settings | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.settings = settings or Settings(resync_seconds=10, unschedulable_grace_seconds=5)
        self.config = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=self.config)
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        registry = kopf.OperatorRegistry()
        register(registry, self.settings, api_config=self.config)
        cfg = self.config
        token = yaml.safe_load(self.kubeconfig.read_text())["users"][0]["user"]["token"]

        @kopf.on.login(registry=registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(server=cfg.host, ca_path=cfg.ssl_ca_cert, token=token)

        try:
            asyncio.run(
                kopf.operator(registry=registry, clusterwide=True, standalone=True, stop_flag=self.stop_flag)
            )
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def __enter__(self) -> Operator:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop_flag.set()
        self.thread.join(30)
        assert self.error is None, self.error


@pytest.fixture(scope="module")
def operator_kubeconfig(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    install_crd(cluster)
    path = install_operator_identity(cluster, cluster.create_namespace("dbmigrate-system"), "operator")
    map_fake_runner(cluster, IMAGE, tmp_path_factory.mktemp("fake-image-bin"))
    return path


@pytest.fixture
def operator(operator_kubeconfig: Path) -> Iterator[Operator]:
    with Operator(operator_kubeconfig) as op:
        yield op


def apply_cr(cluster: Any, namespace: str, name: str, env: dict[str, str] | None = None, **spec: Any) -> None:
    cr = make_cr(name, namespace, image=IMAGE, **spec)
    del cr["metadata"]["uid"], cr["metadata"]["generation"]
    if env:
        cr["spec"]["job"] = {
            **cr["spec"].get("job", {}),
            "env": [{"name": k, "value": v} for k, v in env.items()],
        }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(cr))


def secret(cluster: Any, namespace: str) -> None:
    cluster.kubectl(
        "create",
        "secret",
        "generic",
        "shop-db",
        "-n",
        namespace,
        "--from-literal=url=postgres://shop:not-a-real-password@db.invalid:5432/shop",
    )


def test_service_account_outside_the_allowlist_is_stalled_and_gets_no_job(
    cluster: Any, namespace: str, operator_kubeconfig: Path
) -> None:
    settings = Settings(resync_seconds=10, allowed_service_accounts=("migrator",))
    with Operator(operator_kubeconfig, settings):
        apply_cr(cluster, namespace, "refused", job={"serviceAccountName": "admin-sa"})
        apply_cr(cluster, namespace, "allowed", job={"serviceAccountName": "migrator"})
        wait_for(
            lambda: true_condition(cluster, namespace, "refused") == (c.STALLED, "ServiceAccountNotAllowed"),
            60,
            "the refused resource to be Stalled",
        )
        refused = condition(cluster, namespace, "refused", c.STALLED)
        assert '"admin-sa" is not in the operator\'s allowlist (migrator)' in refused["message"]
        wait_for(lambda: jobs_of(cluster, namespace, "allowed"), 60, "the allowed resource's Job")
        assert jobs_of(cluster, namespace, "refused") == []
        wait_for(
            lambda: (
                [e["reason"] for e in events_of(cluster, namespace, "refused") if e["type"] == "Warning"]
                == ["ServiceAccountNotAllowed"]
            ),
            30,
            "the Warning event",
        )


def test_run_applies_and_a_spec_change_runs_again(cluster: Any, namespace: str, operator: Operator) -> None:
    secret(cluster, namespace)
    apply_cr(cluster, namespace, "shop-db", env={"FAKE_REPORT": success_report([V1, V2])})
    wait_for(lambda: true_condition(cluster, namespace, "shop-db") == ("Ready", "Applied"), what="Applied")
    status = status_of(cluster, namespace, "shop-db")
    assert status["currentVersion"] == f"models:{V2}"
    assert status["phase"] == "Succeeded"
    assert status["observedGeneration"] == 1
    assert status["lastRun"]["command"] == "upgrade"
    (job,) = jobs_of(cluster, namespace, "shop-db")
    assert job["metadata"]["ownerReferences"][0]["kind"] == c.KIND
    # the printer columns read the status
    row = cluster.kubectl("get", "dbm", "shop-db", "-n", namespace, "--no-headers").stdout.split()
    assert row[1:4] == ["True", f"models:{V2}", "Succeeded"]
    events = events_of(cluster, namespace, "shop-db")
    assert {"RunStarted", "Applied"} <= {e["reason"] for e in events}
    # a new image: a second Job, a second result
    patch = {
        "spec": {
            "image": IMAGE.replace("1.0.0", "1.0.0"),
            "target": V3,
            "job": {"env": [{"name": "FAKE_REPORT", "value": success_report([V1, V2, V3])}]},
        }
    }
    cluster.kubectl("patch", "dbm", "shop-db", "-n", namespace, "--type", "merge", "-p", json.dumps(patch))
    wait_for(lambda: len(jobs_of(cluster, namespace, "shop-db")) == 2, what="second job")
    wait_for(
        lambda: status_of(cluster, namespace, "shop-db").get("currentVersion") == f"models:{V3}",
        what="V3 applied",
    )
    status = status_of(cluster, namespace, "shop-db")
    assert status["observedGeneration"] == 2
    assert true_condition(cluster, namespace, "shop-db") == (
        "Ready",
        "Applied",
    )
    # deleting the CR: the garbage collector removes its Jobs, the operator writes nothing
    cluster.kubectl("delete", "dbm", "shop-db", "-n", namespace, "--wait=true")
    wait_for(lambda: jobs_of(cluster, namespace, "shop-db") == [], what="jobs garbage-collected")


def test_failed_migration_fails_fast_and_stays_failed(
    cluster: Any, namespace: str, operator: Operator
) -> None:
    secret(cluster, namespace)
    report = failure_report(
        Outcome.MIGRATION_FAILED,
        'column "bio" already exists',
        versions=[V1],
        kind="DuplicateColumnError",
        migration=f"models:{V2}",
    )
    apply_cr(cluster, namespace, "shop-db", env={"FAKE_REPORT": report, "FAKE_EXIT": "5"})
    wait_for(
        lambda: true_condition(cluster, namespace, "shop-db") == ("Stalled", "MigrationFailed"),
        what="MigrationFailed",
    )
    status = status_of(cluster, namespace, "shop-db")
    stalled = next(x for x in status["conditions"] if x["type"] == "Stalled")
    assert 'column "bio" already exists' in stalled["message"]
    assert status["phase"] == "Failed"
    (job,) = jobs_of(cluster, namespace, "shop-db")
    assert job["status"].get("failed") == 1  # podFailurePolicy: exit 5 is final, no pointless retries
    pods = get_json(cluster, namespace, "pods", "-l", f"{c.MIGRATION_LABEL}=shop-db")["items"]
    assert len(pods) == 1
    time.sleep(3)
    assert len(jobs_of(cluster, namespace, "shop-db")) == 1  # and no hot loop from the operator


@pytest.mark.parametrize(
    ("case", "reason", "fragment"),
    [
        ("secret", "SecretNotFound", 'secret "shop-db" not found'),
        ("image", "ImagePullFailed", "registry.example.com/not-mapped:9.9.9"),
        ("node", "Unschedulable", "didn't match Pod's node affinity/selector"),
        ("serviceaccount", "PodCreateFailed", 'serviceaccount "no-such-account" not found'),
    ],
)
def test_stuck_pods_are_reported_at_once(
    cluster: Any, namespace: str, operator: Operator, case: str, reason: str, fragment: str
) -> None:
    spec: dict[str, Any] = {}
    if case != "secret":
        secret(cluster, namespace)
    if case == "node":
        spec["job"] = {"nodeSelector": {"dbmigrate.dev/no-such-pool": "true"}}
    if case == "serviceaccount":  # the API refuses the Job's Pod: only a FailedCreate Event says so
        spec["job"] = {"serviceAccountName": "no-such-account"}
    apply_cr(cluster, namespace, "shop-db", **spec)
    if case == "image":
        cluster.kubectl(
            "patch",
            "dbm",
            "shop-db",
            "-n",
            namespace,
            "--type",
            "merge",
            "-p",
            json.dumps({"spec": {"image": "registry.example.com/not-mapped:9.9.9"}}),
        )
    wait_for(
        lambda: true_condition(cluster, namespace, "shop-db") == ("Stalled", reason), timeout=60, what=reason
    )
    stalled = condition(cluster, namespace, "shop-db", "Stalled")
    assert fragment in stalled["message"]
    if case == "secret":  # the Secret arrives: the Pod starts and the run goes on by itself
        secret(cluster, namespace)
        wait_for(lambda: true_condition(cluster, namespace, "shop-db")[0] != "Stalled", what="unstuck")
