"""examples/alembic-shop through the operator on the real control plane, with gated Deployments.

The operator runs as its own process with the chart's RBAC and serves the gating webhook (registered
by the test as an installer would). The migration image is mapped by the node agent to the real
runner in a copy of examples/alembic-shop with 120 more revisions whose ids are not hex
(`rel_0001`…), so the applied history (124 revisions) is longer than status.appliedVersions keeps
(50): a pod pinned to one of the shop's first revisions is released only through status.ancestry,
and a pod pinned to a revision that is not applied yet stays gated until it is.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dbmigrate_operator import ancestry
from dbmigrate_operator import constants as c
from localcluster import Cluster, stack
from localcluster.postgres import PostgresServer
from localcluster.stack import OperatorProcess
from tests.e2e.gated_operator import gated_operator

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.postgres,
    pytest.mark.timeout(300),
    pytest.mark.local_cluster(
        "map_image: the migration Job's pod runs the real runner as a local process; the webhook is the"
        " operator process on loopback; app pods of unmapped images show Running"
    ),
]

REPO = Path(__file__).resolve().parents[2]
ALEMBIC_SHOP = REPO / "examples" / "alembic-shop"
EXAMPLE = REPO / "examples" / "databasemigration-alembic.yaml"
IMAGE = f"registry.example.com/alembic-shop-migrations:e2e-{uuid.uuid4().hex[:6]}"
APP_IMAGE = "registry.example.com/shop-web:2"  # unmapped: the node agent shows its pods Running
SCOPE = "e2e.dbmigrate.dev/alembic"  # our webhook configuration only sees namespaces labelled so
ORDERS, MERGE = "b7e1f0c2a9d3", "d0e1f2a3b4c5"  # a branch of the shop's history, and its merge
CHAIN = [f"rel_{i:04d}" for i in range(1, 121)]  # ids as `alembic revision --rev-id rel_0001` makes


def long_shop(dst: Path) -> Path:
    project = shutil.copytree(ALEMBIC_SHOP, dst, ignore=shutil.ignore_patterns("__pycache__"))
    down = MERGE
    for rev in CHAIN:
        (project / "migrations" / "versions" / f"{rev}.py").write_text(
            f'"""{rev}"""\n\nfrom alembic import op\n\nrevision = "{rev}"\ndown_revision = "{down}"\n'
            "branch_labels = None\ndepends_on = None\n\n\n"
            f"def upgrade() -> None:\n    op.execute(\"COMMENT ON TABLE users IS '{rev}'\")\n\n\n"
            "def downgrade() -> None:\n    pass\n"
        )
        down = rev
    return project


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[OperatorProcess, str]]:
    tmp = tmp_path_factory.mktemp("alembic-e2e")
    stack.install_crd(cluster)
    stack.map_runner_image(cluster, IMAGE, long_shop(tmp / "alembic-shop"))
    with gated_operator(cluster, tmp, SCOPE, "alembic-e2e") as (op, run_id):
        yield op, run_id


def deployment(name: str, namespace: str, pin: str) -> dict[str, Any]:
    labels = {"app": name, c.WAIT_FOR_LABEL: "alembic-shop"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": labels, "annotations": {c.WAIT_FOR_VERSION_ANNOTATION: pin}},
                "spec": {"containers": [{"name": "web", "image": APP_IMAGE}]},
            },
        },
    }


def pods(cluster: Cluster, namespace: str, app: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = stack.get_json(cluster, namespace, "pods", "-l", f"app={app}")["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def gated(pod: dict[str, Any]) -> bool:
    return any(g["name"] == c.SCHEDULING_GATE for g in pod["spec"].get("schedulingGates") or [])


def running(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running" and not gated(pod)


def test_alembic_example_goes_ready_and_releases_pods_pinned_to_applied_revisions(
    cluster: Cluster,
    namespace: str,
    operator: tuple[OperatorProcess, str],
    postgres: PostgresServer,
) -> None:
    op, run_id = operator
    db = postgres.create_database()

    def wait(check: Any, what: str, timeout: float = 150) -> Any:
        try:
            return stack.wait_for(check, timeout, what)
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- operator log ---\n{op.log_tail()}") from None

    cluster.kubectl("label", "namespace", namespace, f"{SCOPE}={run_id}")
    stack.wait_for_gating(cluster, namespace)
    # The app first, as `kubectl apply -f dir/` or Argo CD may deliver it before its migration:
    # `legacy` needs a revision of the shop's first release, `next` one the image has but the spec
    # does not apply yet.
    stack.apply_docs(
        cluster,
        [
            deployment("legacy", namespace, f"alembic:{ORDERS}"),
            deployment("next", namespace, CHAIN[-1]),
        ],
    )
    wait(lambda: len(p := pods(cluster, namespace, "legacy")) == 2 and all(map(gated, p)), "legacy gated")

    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d and d["kind"] != "Namespace"]
    for doc in docs:
        doc["metadata"]["namespace"] = namespace
        if doc["kind"] == "Secret":
            doc["stringData"]["url"] = postgres.url(db)
        elif doc["kind"] == c.KIND:
            doc["spec"]["image"] = IMAGE
            doc["spec"]["target"] = CHAIN[-2]  # not hex: accepted for tool alembic
    stack.apply_docs(cluster, docs)

    def ready(generation: int) -> Any:
        status = stack.status_of(cluster, namespace, "alembic-shop")
        done = stack.true_condition_in(status) == ("Ready", "Applied")
        return status if done and status.get("observedGeneration") == generation else None

    status = wait(lambda: ready(1), "alembic-shop Ready")
    assert status["currentVersion"] == f"alembic:{CHAIN[-2]}"
    assert status["appliedCount"] == 5 + 119
    assert len(status["appliedVersions"]) == 50  # capped: the shop's first revisions are not listed
    assert status["appliedVersions"][-1] == {"app": "alembic", "version": CHAIN[-2]}
    known = ancestry.known(status)
    assert known is not None
    assert known.heads == (CHAIN[-2],)
    assert known.omitted == 0
    assert len(known.revisions) == 124
    assert postgres.psql(db, "SELECT version_num FROM shop_alembic_version") == CHAIN[-2]

    wait(
        lambda: len(p := pods(cluster, namespace, "legacy")) == 2 and all(map(running, p)), "legacy released"
    )
    held = pods(cluster, namespace, "next")
    assert len(held) == 2
    assert all(map(gated, held))
    events = wait(
        lambda: [
            e
            for e in stack.events_of(cluster, namespace, held[0]["metadata"]["name"])
            if e["reason"] == "WaitingForMigration"
        ],
        "a WaitingForMigration Event on a held pod",
    )
    assert CHAIN[-1] in events[-1]["message"]

    # The spec moves to head: the same pods are released once the revision is applied.
    cluster.kubectl(
        "patch", "dbm", "alembic-shop", "-n", namespace, "--type=merge", "-p", '{"spec":{"target":"head"}}'
    )
    status = wait(lambda: ready(2), "alembic-shop Ready at head")
    assert status["currentVersion"] == f"alembic:{CHAIN[-1]}"
    wait(lambda: len(p := pods(cluster, namespace, "next")) == 2 and all(map(running, p)), "next released")
    assert [p["metadata"]["name"] for p in pods(cluster, namespace, "next")] == [
        p["metadata"]["name"] for p in held
    ]  # released, not replaced
    text = cluster.kubectl("get", "-n", namespace, "-o", "yaml", "dbm,events,jobs").stdout
    assert postgres.password not in text
