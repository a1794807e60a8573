"""The gating handlers wired into a real kopf operator, against the kmock API emulator.

See harness.py for kmock's limits and how the tests avoid passing only because of them.
"""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import kmock
import pytest

from dbmigrate_operator.constants import SCHEDULING_GATE
from tests.gating.harness import (
    DM_RESOURCE,
    NAMESPACE,
    Operator,
    applied,
    declare_resources,
    gates_of,
    make_pod,
    migration_body,
    running_operator,
)

OTHER_GATE = "example.com/other-controller"
DM_PATH = f"/apis/dbmigrate.dev/v1alpha1/namespaces/{NAMESPACE}/databasemigrations"
RS_OWNER = {
    "apiVersion": "apps/v1",
    "kind": "ReplicaSet",
    "name": "web-7d9",
    "uid": "uid-rs",
    "controller": True,
}
DEPLOY_OWNER = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "name": "web",
    "uid": "uid-deploy",
    "controller": True,
}


@pytest.fixture
def k(kmock: kmock.KubernetesEmulator) -> kmock.KubernetesEmulator:
    declare_resources(kmock)
    return kmock


@pytest.fixture
async def operator(
    k: kmock.KubernetesEmulator, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Operator]:
    async with running_operator(k, tmp_path, monkeypatch, DBMIGRATE_GATE_SWEEP_SECONDS="0.5") as op:
        yield op


def pod_in(k: kmock.KubernetesEmulator, name: str) -> dict[str, Any]:
    return dict(k.objects["v1/pods", NAMESPACE, name])


async def eventually(check: Callable[[], bool]) -> None:
    """Poll the emulator's state (it has no change notifications for direct reads)."""
    async with asyncio.timeout(15):
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


def events_about(k: kmock.KubernetesEmulator, name: str) -> list[dict[str, Any]]:
    return [
        dict(obj)
        for (res, _, _), obj in k.objects.items()
        if res == kmock.resource("v1/events") and dict(obj)["involvedObject"]["name"] == name
    ]


V1 = {"app": "models", "version": "0_20260101000000_init"}
V2 = {"app": "models", "version": "1_20260102000000_add_bio"}


# --- the webhook, over HTTPS, with AdmissionReview payloads ------------------------------------


async def test_webhook_gates_a_pod_whose_migration_does_not_exist(operator: Operator) -> None:
    pod = make_pod("web-1", owner=RS_OWNER)
    response = await operator.review(pod)
    assert response["allowed"] is True
    assert gates_of(applied(pod, response)) == [SCHEDULING_GATE]
    assert any("does not exist" in w for w in response.get("warnings", []))


async def test_webhook_admits_ungated_when_the_migration_is_ready(
    k: kmock.KubernetesEmulator, operator: Operator
) -> None:
    k.objects[DM_RESOURCE, NAMESPACE, "shop-db"] = migration_body(ready=True)
    response = await operator.review(make_pod("web-1"))
    assert response["allowed"] is True
    assert "patch" not in response


async def test_webhook_appends_to_other_controllers_gates(operator: Operator) -> None:
    pod = make_pod("web-1", gates=(OTHER_GATE,))
    response = await operator.review(pod)
    assert gates_of(applied(pod, response)) == [OTHER_GATE, SCHEDULING_GATE]


async def test_webhook_is_idempotent_on_reinvocation(operator: Operator) -> None:
    pod = make_pod("web-1", gates=(SCHEDULING_GATE,))
    response = await operator.review(pod)
    assert response["allowed"] is True
    assert "patch" not in response


async def test_webhook_version_pin(k: kmock.KubernetesEmulator, operator: Operator) -> None:
    # Ready, but only V1 is applied: a pod pinned to V2 waits, a pod pinned to V1 does not.
    k.objects[DM_RESOURCE, NAMESPACE, "shop-db"] = migration_body(ready=True, applied=[V1])
    new = make_pod("web-new", version=f"models:{V2['version']}")
    old = make_pod("web-old", version=V1["version"])
    new_response, old_response = await operator.review(new), await operator.review(old)
    assert gates_of(applied(new, new_response)) == [SCHEDULING_GATE]
    assert any(V2["version"] in w for w in new_response["warnings"])
    assert gates_of(applied(old, old_response)) == []


async def test_webhook_fails_closed_when_the_migration_cannot_be_read(
    k: kmock.KubernetesEmulator, operator: Operator
) -> None:
    k.objects[DM_RESOURCE, NAMESPACE, "shop-db"] = migration_body(ready=True)
    k[f"get {DM_PATH}/shop-db"] << 503 << {"kind": "Status", "code": 503, "message": "etcd is sad"}
    pod = make_pod("web-1")
    response = await operator.review(pod)
    assert response["allowed"] is True
    assert gates_of(applied(pod, response)) == [SCHEDULING_GATE]
    assert any("could not read" in w for w in response["warnings"])


async def test_webhook_leaves_pods_without_the_label_alone(operator: Operator) -> None:
    pod = make_pod("web-1", wait_for=None)
    response = await operator.review(pod)
    assert response["allowed"] is True
    assert "patch" not in response


async def test_webhook_denies_an_unmet_pod_that_cannot_be_gated(operator: Operator) -> None:
    pod = make_pod("web-1")
    pod["spec"]["nodeName"] = "node-1"  # the API forbids scheduling gates on such pods
    response = await operator.review(pod)
    assert response["allowed"] is False
    assert "nodeName" in response["status"]["message"]


# --- releasing -----------------------------------------------------------------------------------


def put_deployment_pods(k: kmock.KubernetesEmulator) -> None:
    k.objects["apps/v1/replicasets", NAMESPACE, "web-7d9"] = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": "web-7d9",
            "namespace": NAMESPACE,
            "uid": "uid-rs",
            "ownerReferences": [DEPLOY_OWNER],
        },
    }
    gated = (OTHER_GATE, SCHEDULING_GATE)
    k.objects["v1/pods", NAMESPACE, "web-1"] = make_pod("web-1", gates=gated, owner=RS_OWNER)
    k.objects["v1/pods", NAMESPACE, "web-2"] = make_pod("web-2", gates=(SCHEDULING_GATE,), owner=RS_OWNER)
    # Bystanders, in the same namespace (kmock ignores label selectors, so they are listed too):
    k.objects["v1/pods", NAMESPACE, "other-1"] = make_pod("other-1", wait_for="other-db", gates=gated)
    k.objects["v1/pods", NAMESPACE, "plain-1"] = make_pod("plain-1", wait_for=None, gates=gated)


async def test_pods_wait_with_events_then_are_released_when_ready(
    k: kmock.KubernetesEmulator, operator: Operator
) -> None:
    put_deployment_pods(k)
    await k.post(DM_PATH, json=migration_body(ready=False))

    await eventually(lambda: bool(events_about(k, "web-1")) and bool(events_about(k, "web")))
    (waiting,) = events_about(k, "web-1")
    assert waiting["reason"] == "WaitingForMigration"
    assert "shop-db" in waiting["message"]
    # One Event on the ReplicaSet and one on the Deployment, though two of their pods wait.
    assert [e["involvedObject"]["kind"] for e in events_about(k, "web-7d9")] == ["ReplicaSet"]
    assert [e["involvedObject"]["kind"] for e in events_about(k, "web")] == ["Deployment"]
    assert SCHEDULING_GATE in gates_of(pod_in(k, "web-1"))

    status = migration_body(ready=True)["status"]
    await k.patch(f"{DM_PATH}/shop-db/status", json={"status": status})

    await eventually(lambda: SCHEDULING_GATE not in gates_of(pod_in(k, "web-1")))
    await eventually(lambda: SCHEDULING_GATE not in gates_of(pod_in(k, "web-2")))
    assert gates_of(pod_in(k, "web-1")) == [OTHER_GATE]
    assert gates_of(pod_in(k, "web-2")) == []
    await eventually(lambda: any(e["reason"] == "MigrationSatisfied" for e in events_about(k, "web-1")))
    # Pods waiting for another migration, or not opted in, are never touched.
    assert gates_of(pod_in(k, "other-1")) == [OTHER_GATE, SCHEDULING_GATE]
    assert gates_of(pod_in(k, "plain-1")) == [OTHER_GATE, SCHEDULING_GATE]
    assert events_about(k, "plain-1") == []


async def test_the_sweep_releases_a_pod_no_event_would(
    k: kmock.KubernetesEmulator, operator: Operator
) -> None:
    await k.post(DM_PATH, json=migration_body(ready=True))
    # Stored without any API event and without the webhook: only the periodic sweep can see it.
    k.objects["v1/pods", NAMESPACE, "web-1"] = make_pod("web-1", gates=(SCHEDULING_GATE,))
    await eventually(lambda: gates_of(pod_in(k, "web-1")) == [])


async def test_a_failed_migration_keeps_pods_gated_and_says_so(
    k: kmock.KubernetesEmulator, operator: Operator
) -> None:
    put_deployment_pods(k)
    failed = migration_body(ready=False)
    failed["status"]["phase"] = "Failed"
    failed["status"]["conditions"].append({"type": "Stalled", "status": "True", "reason": "MigrationFailed"})
    failed["status"]["lastRun"] = {"outcome": "migration_failed", "message": 'column "bio" already exists'}
    await k.post(DM_PATH, json=failed)

    await eventually(lambda: bool(events_about(k, "web")))
    (warning,) = events_about(k, "web")
    assert warning["type"] == "Warning"
    assert warning["reason"] == "MigrationFailed"
    assert 'column "bio" already exists' in warning["message"]
    assert SCHEDULING_GATE in gates_of(pod_in(k, "web-1"))
