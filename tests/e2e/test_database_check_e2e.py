"""A Secret changed in place to another database, through the operator on the real control plane
(issue 18 item 9).

The operator runs as its own process with the chart's RBAC (no access to Secrets) and serves the gating
webhook; the migration image is mapped by the node agent to the real runner in a copy of
examples/alembic-shop, against real PostgreSQL. The story the issue saw through Argo CD: the shop is
migrated, a Deployment pinned to its head runs; then the Secret is edited in place to name a new, empty
database and a new ReplicaSet rolls out. Its pods must stay gated until the new database is migrated.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dbmigrate_operator import constants as c
from dbmigrate_operator import database_check
from localcluster import Cluster, stack
from localcluster.postgres import PostgresServer
from localcluster.stack import OperatorProcess
from tests.e2e.gated_operator import gated_operator

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.postgres,
    pytest.mark.timeout(300),
    pytest.mark.local_cluster(
        "map_image: the check and migration Jobs' pods run the real runner as local processes; the webhook"
        " is the operator process on loopback; app pods of unmapped images show Running"
    ),
]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "databasemigration-alembic.yaml"
IMAGE = f"registry.example.com/alembic-shop-migrations:check-{uuid.uuid4().hex[:6]}"
APP_IMAGE = "registry.example.com/shop-web:3"  # unmapped: the node agent shows its pods Running
SCOPE = "e2e.dbmigrate.dev/dbcheck"  # our webhook configuration only sees namespaces labelled so
HEAD = "d0e1f2a3b4c5"  # examples/alembic-shop's merge revision


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[OperatorProcess, str]]:
    tmp = tmp_path_factory.mktemp("dbcheck-e2e")
    stack.install_crd(cluster)
    project = shutil.copytree(REPO / "examples" / "alembic-shop", tmp / "alembic-shop")
    stack.map_runner_image(cluster, IMAGE, project)
    with gated_operator(cluster, tmp, SCOPE, "dbcheck-e2e") as (op, run_id):
        yield op, run_id


def deployment(namespace: str, revision: str) -> dict[str, Any]:
    labels = {"app": "web", c.WAIT_FOR_LABEL: "alembic-shop"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {
            "replicas": 1,
            "strategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {c.WAIT_FOR_VERSION_ANNOTATION: f"alembic:{HEAD}", "release": revision},
                },
                "spec": {"containers": [{"name": "web", "image": APP_IMAGE}]},
            },
        },
    }


def pods_of_rollout(cluster: Cluster, namespace: str, rollout: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = stack.get_json(
        cluster, namespace, "pods", "-l", f"app=web,pod-template-hash={rollout}"
    )["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def rollout_of(cluster: Cluster, namespace: str, release: str) -> str | None:
    for rs in stack.get_json(cluster, namespace, "replicasets", "-l", "app=web")["items"]:
        if (rs["spec"]["template"]["metadata"].get("annotations") or {}).get("release") == release:
            return str(rs["metadata"]["labels"]["pod-template-hash"])
    return None


def gated(pod: dict[str, Any]) -> bool:
    return any(g["name"] == c.SCHEDULING_GATE for g in pod["spec"].get("schedulingGates") or [])


def running(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running" and not gated(pod)


def test_a_secret_edited_to_another_database_holds_the_new_rollout_until_that_database_is_migrated(
    cluster: Cluster,
    namespace: str,
    operator: tuple[OperatorProcess, str],
    postgres: PostgresServer,
) -> None:
    op, run_id = operator
    old_db, new_db = postgres.create_database(), postgres.create_database()

    def wait(check: Any, what: str, timeout: float = 150) -> Any:
        try:
            return stack.wait_for(check, timeout, what)
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- operator log ---\n{op.log_tail()}") from None

    cluster.kubectl("label", "namespace", namespace, f"{SCOPE}={run_id}")
    stack.wait_for_gating(cluster, namespace)
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d and d["kind"] != "Namespace"]
    secret = next(d for d in docs if d["kind"] == "Secret")
    for doc in docs:
        doc["metadata"]["namespace"] = namespace
        if doc["kind"] == "Secret":
            doc["stringData"]["url"] = postgres.url(old_db)
        elif doc["kind"] == c.KIND:
            doc["spec"]["image"] = IMAGE
    stack.apply_docs(cluster, docs)

    def status() -> dict[str, Any]:
        return dict(stack.status_of(cluster, namespace, "alembic-shop") or {})

    wait(lambda: stack.true_condition_in(status()) == ("Ready", "Applied"), "alembic-shop Ready")
    first_fingerprint = status()["database"]["fingerprint"]
    assert first_fingerprint

    # A rollout pinned to the head: its pods start once a check verified the Secret's database.
    stack.apply_docs(cluster, [deployment(namespace, "1")])
    one = wait(lambda: rollout_of(cluster, namespace, "1"), "the first ReplicaSet")
    wait(
        lambda: (p := pods_of_rollout(cluster, namespace, one)) and all(map(running, p)), "first rollout runs"
    )
    verified = status()["databaseCheck"]["verified"]
    assert {"rollout": one, "fingerprint": first_fingerprint} in [
        {k: e[k] for k in ("rollout", "fingerprint")} for e in verified
    ]
    assert any(
        e["reason"] == database_check.REASON_VERIFIED
        for e in stack.events_of(cluster, namespace, "alembic-shop")
    )

    # The Secret is edited in place (same name, same key) to a new, empty database, and a new rollout comes.
    secret["stringData"]["url"] = postgres.url(new_db)
    stack.apply_docs(cluster, [secret])
    stack.apply_docs(cluster, [deployment(namespace, "2")])
    two = wait(lambda: rollout_of(cluster, namespace, "2"), "the second ReplicaSet")
    held = wait(lambda: pods_of_rollout(cluster, namespace, two), "the second rollout's pod")
    assert all(map(gated, held)), "the new rollout's pods are held although status lists their version"

    moved = wait(
        lambda: [
            e
            for e in stack.events_of(cluster, namespace, "alembic-shop")
            if e["reason"] == database_check.REASON_MOVED
        ],
        "a DatabaseMoved Event",
    )
    assert "the Secret now points at another database" in moved[-1]["message"]

    # Released only once the new database holds the pinned revision (its run, then a check against it).
    def released() -> bool:
        pods = pods_of_rollout(cluster, namespace, two)
        if not (pods and all(map(running, pods))):
            return False
        # Seen running: the new database holds the pinned revision by then.
        assert postgres.psql(new_db, "SELECT version_num FROM shop_alembic_version") == HEAD
        return True

    wait(released, "the second rollout released after its database was migrated", timeout=200)
    assert postgres.psql(new_db, "SELECT version_num FROM shop_alembic_version") == HEAD
    final = status()
    assert final["database"]["fingerprint"] == final["databaseCheck"]["moved"] != first_fingerprint
    assert any(e["rollout"] == two for e in final["databaseCheck"]["verified"])
    assert all(map(running, pods_of_rollout(cluster, namespace, one))), "the old rollout kept serving"
    text = cluster.kubectl("get", "-n", namespace, "-o", "yaml", "dbm,events,jobs").stdout
    assert postgres.password not in text
