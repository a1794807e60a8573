"""The operator's cost grows with the number of DatabaseMigrations, never with the rest of the cluster.

On the real API server: every list and watch of Pods and Jobs the operator process makes carries a
``labelSelector`` (the API server's audit log records them with their requestURI), and a Pod and Job
that are not the operator's, created, changed and deleted, reach none of its handlers (its debug log).
"""

from __future__ import annotations

import contextlib
import json
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dbmigrate_operator import constants as c
from localcluster import Cluster, stack
from localcluster.stack import OperatorProcess
from tests.operator.builders import make_cr, success_report
from tests.operator.scenarios import V1

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(300),
    pytest.mark.local_cluster("the API server's audit log records the operator's lists and watches"),
]
IMAGE = "registry.example.com/watch-scope-migrations:1.0.0"
SELECTOR = f"{c.MANAGED_BY_LABEL}={c.MANAGED_BY},{c.MIGRATION_LABEL}"


class Running:
    def __init__(self, op: OperatorProcess, user: str) -> None:
        self.op, self.user = op, user


@contextlib.contextmanager
def operator_as_itself(
    cluster: Cluster, tmp: Path, name: str, image: str, env: dict[str, str], lease: str | None = None
) -> Iterator[tuple[OperatorProcess, str]]:
    """The operator process with a ServiceAccount of its own (namespace ``name``, whose requests the
    audit log names), the fake runner mapped for ``image``; yields it and that user's name."""
    stack.install_crd(cluster)
    ns = cluster.create_namespace(name)
    account = f"operator-{name}"
    kubeconfig = stack.install_operator_identity(cluster, ns, account, lease=lease or stack.DEFAULT_LEASE)
    stack.map_fake_runner(cluster, image, tmp)
    env = {"DBMIGRATE_OPERATOR_NAMESPACE": ns, **env}
    op = OperatorProcess(kubeconfig, tmp / "operator.log", env=env, lease=lease).start()
    try:
        yield op, f"system:serviceaccount:{ns}:{account}"
    finally:
        op.stop()


@pytest.fixture(scope="module")
def running(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    env = {"DBMIGRATE_VERBOSE": "true", "DBMIGRATE_RESYNC_SECONDS": "30"}
    tmp = tmp_path_factory.mktemp("watch-scope")
    with operator_as_itself(cluster, tmp, "dbmigrate-watch", IMAGE, env) as (op, user):
        yield Running(op, user)


def apply_migration(
    cluster: Cluster, namespace: str, name: str, image: str = IMAGE, versions: tuple[str, ...] = (V1,)
) -> None:
    """A Secret and a DatabaseMigration whose stand-in runner (stack.map_fake_runner on `image`)
    reports `versions` applied."""
    cluster.kubectl(
        "create",
        "secret",
        "generic",
        "shop-db",
        "-n",
        namespace,
        "--from-literal=url=postgres://u:p@db.invalid/x",
    )
    cr = make_cr(name, namespace, image=image)
    del cr["metadata"]["uid"], cr["metadata"]["generation"]
    cr["spec"]["job"] = {"env": [{"name": "FAKE_REPORT", "value": success_report(list(versions))}]}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(cr))


def bystanders(cluster: Cluster, namespace: str, name: str) -> None:
    """A Pod and a Job that are not ours (the Job's Pod neither): created, relabelled, deleted."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {"containers": [{"name": "app", "image": "registry.example.com/unrelated:1"}]},
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "app", "image": "registry.example.com/unrelated:1"}],
                },
            }
        },
    }
    for doc in (pod, job):
        cluster.kubectl("apply", "-f", "-", input=json.dumps(doc))
    stack.wait_for(
        lambda: stack.get_json(cluster, namespace, "pods", "-l", f"job-name={name}")["items"], 60, "its Pod"
    )
    for kind in ("pod", "job"):
        cluster.kubectl("label", kind, name, "-n", namespace, "churn=1")
    cluster.kubectl("delete", "job", name, "-n", namespace, "--cascade=foreground", "--wait=true")
    cluster.kubectl("delete", "pod", name, "-n", namespace, "--wait=true")


def test_job_and_pod_reads_are_label_selected_and_bystanders_never_reach_the_operator(
    cluster: Cluster, namespace: str, running: Running
) -> None:
    apply_migration(cluster, namespace, "shop-db")
    stack.wait_for(
        lambda: stack.true_condition(cluster, namespace, "shop-db") == ("Ready", "Applied"), 120, "Applied"
    )
    bystander = f"bystander-{uuid.uuid4().hex[:6]}"
    bystanders(cluster, namespace, bystander)
    # A sentinel on our own Job: once the operator saw it, it has seen everything sent before it.
    (job,) = stack.jobs_of(cluster, namespace, "shop-db")
    cluster.kubectl("annotate", "job", job["metadata"]["name"], "-n", namespace, "sentinel=1")
    sentinel = f"watch event job={namespace}/{job['metadata']['name']}"
    stack.wait_for(lambda: running.op.log_tail(10**7).count(sentinel) >= 2, 30, "the sentinel's event")

    log = running.op.log.read_text(errors="replace")
    assert f"watch event pod={namespace}/{job['metadata']['name']}-" in log  # our Job's Pod: seen
    assert bystander not in log, "an unrelated Pod or Job reached the operator"

    reads = [e for e in cluster.audited_reads() if (e.get("user") or {}).get("username") == running.user]
    seen = {(e["verb"], e["objectRef"]["resource"]) for e in reads}
    assert {("watch", "pods"), ("watch", "jobs"), ("list", "pods"), ("list", "jobs")} <= seen, seen
    allowed = {
        SELECTOR,  # kopf's list and watch of Jobs and Pods, cluster-wide
        f"{c.MIGRATION_LABEL}=shop-db",  # the controller's reads of one DatabaseMigration's Jobs and Pods
        c.WAIT_FOR_LABEL,  # gating's sweep of held pods (field-selected: Pending)
        f"{c.WAIT_FOR_LABEL}=shop-db",  # gating's release when shop-db changed
    }
    for event in reads:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(event["requestURI"]).query)
        selector = query.get("labelSelector", [""])[0]
        assert selector in allowed, f"{event['verb']} {event['requestURI']}"
        if event["verb"] == "watch":
            assert selector == SELECTOR, event["requestURI"]
