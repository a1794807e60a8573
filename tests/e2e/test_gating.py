"""Pod gating end to end on the real control plane: admission chain, scheduler, ReplicaSets, Events.

The gating handlers run in-process (kopf in a thread, webhook server on loopback with a
self-signed certificate), registered through a MutatingWebhookConfiguration with a URL client
config — rendered by the same function the chart mirrors. The DatabaseMigration's status is set
directly through the status subresource, so these tests are about gating alone, not about the
controller that would normally write that status.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from dbmigrate_operator import identity
from dbmigrate_operator.constants import (
    GROUP,
    PLURAL,
    SCHEDULING_GATE,
    VERSION,
    WAIT_FOR_LABEL,
    WAIT_FOR_VERSION_ANNOTATION,
)
from dbmigrate_operator.gating import server, tls, webhook_config
from dbmigrate_operator.gating.kube import KubeApi
from dbmigrate_operator.gating.release import Releaser
from localcluster import Cluster
from localcluster.stack import free_port, install_crd, wait_for
from tests.gating.harness import KopfThread, gating_registry, port_open

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.local_cluster(
        "loopback webhook: the API server calls the in-process webhook on https://127.0.0.1, and the node"
        " agent shows pods of unmapped images Running"
    ),
]

SCOPE_LABEL = "e2e.dbmigrate.dev/gating"  # our webhook configurations only see labelled namespaces
IMAGE = "registry.example.com/shop-web:1"  # unmapped: the node agent reports such pods Running
V1 = {"app": "models", "version": "0_20260101000000_init"}
V2 = {"app": "models", "version": "1_20260102000000_add_bio"}


SPEC = {
    "image": "registry.example.com/shop-migrations:1",
    "database": {"urlSecretRef": {"name": "shop-db", "key": "url"}},
}
# The versions of these statuses belong to the database SPEC names (status.database, identity.py).
DATABASE = {"ref": identity.ref(SPEC), "job": "shop-db-1"}


def raw(response: Any) -> Any:
    return json.loads(response.data)


@dataclass
class Gating:
    cluster: Cluster
    run_id: str
    api: client.ApiClient

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def scope(self, namespace: str, value: str | None = None) -> None:
        """Put a namespace under one of our webhook configurations."""
        body = {"metadata": {"labels": {SCOPE_LABEL: value or self.run_id}}}
        self.core.patch_namespace(namespace, body)

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = raw(
            self.core.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False)
        )["items"]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]

    def events(self, namespace: str, kind: str, name: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = raw(self.core.list_namespaced_event(namespace, _preload_content=False))[
            "items"
        ]
        return [
            e for e in items if e["involvedObject"]["kind"] == kind and e["involvedObject"]["name"] == name
        ]

    def create_migration(self, namespace: str, name: str = "shop-db") -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "DatabaseMigration",
            "metadata": {"name": name},
            "spec": dict(SPEC),
        }
        self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

    def get_migration(self, namespace: str, name: str = "shop-db") -> dict[str, Any]:
        got: dict[str, Any] = raw(
            self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, _preload_content=False
            )
        )
        return got

    def patch_spec(self, namespace: str, spec: dict[str, Any], name: str = "shop-db") -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"spec": spec},
            _content_type="application/merge-patch+json",
        )

    def set_status(self, namespace: str, status: dict[str, Any], name: str = "shop-db") -> None:
        """Write the status as the controller would (merge patch of the status subresource)."""
        self.custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"status": status},
            _content_type="application/merge-patch+json",
        )

    def create_deployment(self, namespace: str, body: dict[str, Any]) -> None:
        self.apps.create_namespaced_deployment(namespace, body)

    def wait_until_webhook_serves(self, namespace: str) -> None:
        """The API server picks up webhook configurations asynchronously; probe with a dry run."""
        probe = pod_body("probe", wait_for="no-such-migration")

        def gated() -> bool:
            created = raw(
                self.core.create_namespaced_pod(namespace, probe, dry_run="All", _preload_content=False)
            )
            return SCHEDULING_GATE in gate_names(created)

        wait_for(gated, 30, "the webhook configuration to take effect")


def gate_names(pod: dict[str, Any]) -> list[str]:
    return [g["name"] for g in pod["spec"].get("schedulingGates") or []]


def is_scheduling_gated(pod: dict[str, Any]) -> bool:
    """What `kubectl get pods` shows as SchedulingGated: PodScheduled False, reason SchedulingGated."""
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "PodScheduled" and c.get("reason") == "SchedulingGated" for c in conditions)


def is_running(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running"


def ready_status(generation: int = 1, applied: list[dict[str, str]] | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "phase": "Succeeded",
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Applied", "observedGeneration": generation},
            {"type": "Reconciling", "status": "False", "reason": "Applied", "observedGeneration": generation},
            {"type": "Stalled", "status": "False", "reason": "Applied", "observedGeneration": generation},
        ],
    }
    if applied is not None:
        status["appliedVersions"] = applied
        status["appliedCount"] = len(applied)
        status["currentVersion"] = f"{applied[-1]['app']}:{applied[-1]['version']}"
        status["database"] = dict(DATABASE)
    return status


def failed_status(message: str, applied: list[dict[str, str]], generation: int = 1) -> dict[str, Any]:
    return {
        "observedGeneration": generation,
        "phase": "Failed",
        "appliedVersions": applied,
        "appliedCount": len(applied),
        "currentVersion": f"{applied[-1]['app']}:{applied[-1]['version']}",
        "database": dict(DATABASE),
        "lastRun": {"outcome": "migration_failed", "message": message},
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "MigrationFailed",
                "observedGeneration": generation,
            },
            {
                "type": "Stalled",
                "status": "True",
                "reason": "MigrationFailed",
                "observedGeneration": generation,
            },
        ],
    }


def pod_body(name: str, *, wait_for: str | None, version: str | None = None) -> dict[str, Any]:
    labels = {"app": name}
    if wait_for:
        labels[WAIT_FOR_LABEL] = wait_for
    meta: dict[str, Any] = {"name": name, "labels": labels}
    if version:
        meta["annotations"] = {WAIT_FOR_VERSION_ANNOTATION: version}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": "c", "image": IMAGE}]},
    }


def deployment_body(
    name: str, *, wait_for: str | None, version: str | None = None, replicas: int = 2
) -> dict[str, Any]:
    pod = pod_body(name, wait_for=wait_for, version=version)
    template = {"metadata": {k: v for k, v in pod["metadata"].items() if k != "name"}, "spec": pod["spec"]}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            # Never take an old pod down before its successor is Ready (what keeps serving below).
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": template,
        },
    }


@pytest.fixture(scope="module")
def gating(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gating]:
    install_crd(cluster)
    tmp: Path = tmp_path_factory.mktemp("gating")
    made = tls.self_signed(["127.0.0.1"])
    (tmp / "tls.crt").write_bytes(made.cert_pem)
    (tmp / "tls.key").write_bytes(made.key_pem)
    port = free_port()
    run_id = uuid.uuid4().hex[:8]
    api = cluster.api_client()
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        for key, value in {
            "KUBECONFIG": str(cluster.kubeconfig),
            "DBMIGRATE_WEBHOOK_LISTEN_HOST": "127.0.0.1",
            "DBMIGRATE_WEBHOOK_PORT": str(port),
            "DBMIGRATE_WEBHOOK_CERT_FILE": str(tmp / "tls.crt"),
            "DBMIGRATE_WEBHOOK_KEY_FILE": str(tmp / "tls.key"),
            "DBMIGRATE_OPERATOR_NAMESPACE": "dbmigrate-system",
            "DBMIGRATE_GATE_SWEEP_SECONDS": "5",
        }.items():
            mp.setenv(key, value)
        operator = KopfThread(gating_registry())
        operator.start()
        name = f"dbmigrate-gating-e2e-{run_id}"
        try:
            wait_for(lambda: operator.check_alive() or port_open(port), 60, "the webhook server")
            configuration = server.local_configuration(server.WebhookSettings.from_env(), made.cert_pem)
            configuration["metadata"]["name"] = name
            configuration["webhooks"][0]["namespaceSelector"]["matchLabels"] = {SCOPE_LABEL: run_id}
            server.register(api, configuration)
            yield Gating(cluster, run_id, api)
        finally:
            server.unregister(api, name)
            operator.join()
            api.close()


@pytest.fixture
def ns(gating: Gating, namespace: str) -> str:
    gating.scope(namespace)
    gating.wait_until_webhook_serves(namespace)
    return namespace


def test_deployment_waits_until_its_migration_is_ready(gating: Gating, ns: str) -> None:
    # The Deployment reaches the API before its DatabaseMigration even exists (kubectl apply -f dir/).
    gating.create_deployment(ns, deployment_body("web", wait_for="shop-db"))
    gating.create_deployment(ns, deployment_body("bystander", wait_for=None, replicas=1))

    gated = wait_for(
        lambda: (p := gating.pods(ns, "app=web")) and len(p) == 2 and all(map(is_scheduling_gated, p)) and p,
        60,
        "two SchedulingGated pods",
    )
    assert all(gate_names(p) == [SCHEDULING_GATE] for p in gated)
    # Pods that did not opt in are never touched.
    (bystander,) = wait_for(
        lambda: [p for p in gating.pods(ns, "app=bystander") if is_running(p)], 60, "bystander"
    )
    assert gate_names(bystander) == []

    # Users can see why: Events on the pod and on the Deployment name the migration.
    pod_name = gated[0]["metadata"]["name"]
    waiting = wait_for(lambda: gating.events(ns, "Pod", pod_name), 30, "an Event on the gated pod")
    assert "shop-db" in waiting[0]["message"]
    assert waiting[0]["reason"] == "WaitingForMigration"
    assert wait_for(lambda: gating.events(ns, "Deployment", "web"), 30, "an Event on the Deployment")

    gating.create_migration(ns)
    time.sleep(2)  # the migration exists but is not Ready: still gated
    assert all(map(is_scheduling_gated, gating.pods(ns, "app=web")))

    gating.set_status(ns, ready_status(applied=[V1]))
    running = wait_for(
        lambda: (p := gating.pods(ns, "app=web")) and len(p) == 2 and all(map(is_running, p)) and p,
        60,
        "the pods to be released and Running",
    )
    assert all(gate_names(p) == [] for p in running)
    released = gating.events(ns, "Pod", pod_name)
    assert any(e["reason"] == "MigrationSatisfied" for e in released)


def test_version_pin_holds_new_pods_even_when_the_migration_is_ready(gating: Gating, ns: str) -> None:
    gating.create_migration(ns)
    gating.set_status(ns, ready_status(applied=[V1]))
    # The new app version needs V2, but the migration (still at V1) is Ready for its generation:
    # only the pin keeps these pods from starting against the old schema.
    gating.create_deployment(
        ns, deployment_body("web", wait_for="shop-db", version=f"models:{V2['version']}")
    )
    gated = wait_for(
        lambda: (p := gating.pods(ns, "app=web")) and len(p) == 2 and all(map(is_scheduling_gated, p)) and p,
        60,
        "two SchedulingGated pods",
    )
    events = wait_for(lambda: gating.events(ns, "Pod", gated[0]["metadata"]["name"]), 30, "a waiting Event")
    assert V2["version"] in events[0]["message"]

    gating.set_status(ns, ready_status(applied=[V1, V2]))
    wait_for(
        lambda: (p := gating.pods(ns, "app=web")) and len(p) == 2 and all(map(is_running, p)),
        60,
        "the pods to be released and Running",
    )


def test_failed_migration_keeps_new_pods_gated_while_old_ones_serve(gating: Gating, ns: str) -> None:
    gating.create_migration(ns)
    gating.set_status(ns, ready_status(applied=[V1]))
    gating.create_deployment(ns, deployment_body("web", wait_for="shop-db", version=V1["version"]))
    old = wait_for(
        lambda: (p := gating.pods(ns, "app=web")) and len(p) == 2 and all(map(is_running, p)) and p,
        60,
        "the first version Running",
    )
    old_names = {p["metadata"]["name"] for p in old}

    # Roll out the next app version; its migration fails.
    gating.set_status(ns, failed_status('column "bio" of relation "user" already exists', applied=[V1]))
    patch = {
        "spec": {"template": {"metadata": {"annotations": {WAIT_FOR_VERSION_ANNOTATION: V2["version"]}}}}
    }
    gating.apps.patch_namespaced_deployment("web", ns, patch)

    new = wait_for(
        lambda: [p for p in gating.pods(ns, "app=web") if p["metadata"]["name"] not in old_names],
        60,
        "a pod of the new ReplicaSet",
    )
    assert all(map(is_scheduling_gated, new))
    warning = wait_for(
        lambda: [e for e in gating.events(ns, "Deployment", "web") if e["reason"] == "MigrationFailed"],
        30,
        "a MigrationFailed Event on the Deployment",
    )
    assert warning[0]["type"] == "Warning"
    assert "already exists" in warning[0]["message"]
    time.sleep(6)  # longer than a sweep: nothing releases the new pod
    pods = gating.pods(ns, "app=web")
    assert {p["metadata"]["name"] for p in pods if is_running(p)} == old_names
    assert all(is_scheduling_gated(p) for p in pods if p["metadata"]["name"] not in old_names)


def test_webhook_down_fails_closed(gating: Gating, namespace: str) -> None:
    # A second configuration, scoped to this namespace only, points at a port nobody listens on.
    scope = f"down-{gating.run_id}"
    gating.scope(namespace, scope)
    dead = webhook_config.mutating_webhook_configuration(
        client_config=webhook_config.url_client_config(f"https://127.0.0.1:{free_port()}", b"unused"),
        operator_namespace="dbmigrate-system",
        name=f"dbmigrate-gating-e2e-down-{gating.run_id}",
    )
    dead["webhooks"][0]["clientConfig"].pop("caBundle")
    dead["webhooks"][0]["namespaceSelector"]["matchLabels"] = {SCOPE_LABEL: scope}
    server.register(gating.api, dead)
    try:

        def refused() -> str | None:
            try:
                gating.core.create_namespaced_pod(
                    namespace, pod_body("opted-in", wait_for="shop-db"), dry_run="All"
                )
            except ApiException as e:
                return str(e.body)
            return None

        message = wait_for(refused, 30, "the dead webhook to refuse opted-in pods")
        assert "gate-pods.dbmigrate.dev" in message
        with pytest.raises(ApiException):
            gating.core.create_namespaced_pod(namespace, pod_body("opted-in", wait_for="shop-db"))
        assert gating.pods(namespace, "app=opted-in") == []
        # Pods that did not opt in never reach the webhook, so they are not affected.
        gating.core.create_namespaced_pod(namespace, pod_body("plain", wait_for=None))
        assert len(gating.pods(namespace, "app=plain")) == 1
    finally:
        server.unregister(gating.api, dead["metadata"]["name"])


class Interleaving(KubeApi):
    """The real API, with `between` run right after the first read of a pass returns: what happens
    in a cluster when a spec is edited and a pod admitted while a release pass is under way."""

    between: Callable[[], None] | None = None

    def _after_read(self) -> None:
        if self.between is not None:
            step, self.between = self.between, None
            step()

    def get_migration(self, namespace: str, name: str, timeout: float | None = None) -> dict[str, Any] | None:
        got = super().get_migration(namespace, name, timeout)
        self._after_read()
        return got

    def list_waiting_pods(
        self, namespace: str | None, migration: str | None, *, cached: bool = False
    ) -> list[dict[str, Any]]:
        got = super().list_waiting_pods(namespace, migration, cached=cached)
        self._after_read()
        return got


async def test_a_pod_gated_against_a_newer_generation_is_not_released_on_the_older_one(
    gating: Gating, ns: str
) -> None:
    """Issue 18 item 1 on the real API server and admission chain: generation 1 is Ready; between a
    pass's two reads generation 2 is applied and the webhook gates a pod against it. Neither that
    pass (a nudge's) nor an event pass carrying generation 1's body may release the pod."""
    gating.create_migration(ns)
    gating.set_status(ns, ready_status(generation=1, applied=[V1]))
    stale = gating.get_migration(ns)  # what a watch event delivered: generation 1, Ready

    def generation_2_and_a_pod() -> None:
        gating.patch_spec(ns, {"image": "registry.example.com/shop-migrations:2"})
        gating.core.create_namespaced_pod(ns, pod_body("web-2", wait_for="shop-db"))

    api = Interleaving(gating.api)
    api.between = generation_2_and_a_pod
    releaser = Releaser(api)
    await releaser.reconcile(ns, "shop-db")  # a nudge's pass
    (pod,) = gating.pods(ns, "app=web-2")
    assert gate_names(pod) == [SCHEDULING_GATE]  # the webhook gated it: generation 2 is not applied

    releaser.on_migration_event(ns, "shop-db", stale)  # a late event of generation 1
    await releaser.drain()  # its queued pass
    (pod,) = gating.pods(ns, "app=web-2")
    assert gate_names(pod) == [SCHEDULING_GATE]
    assert gating.get_migration(ns)["metadata"]["generation"] == 2

    gating.set_status(ns, ready_status(generation=2, applied=[V1]))  # generation 2 ran
    wait_for(lambda: [p for p in gating.pods(ns, "app=web-2") if is_running(p)], 60, "web-2 released")


def test_a_pin_waits_for_the_run_against_a_new_database(gating: Gating, ns: str) -> None:
    """spec.database changed: status still lists the old database's versions; pinned pods wait."""
    gating.create_migration(ns)
    gating.set_status(ns, ready_status(applied=[V1, V2]))
    gating.patch_spec(ns, {"database": {"urlSecretRef": {"name": "shop-db-new", "key": "url"}}})
    gating.create_deployment(
        ns, deployment_body("web", wait_for="shop-db", version=f"models:{V2['version']}")
    )
    gated = wait_for(
        lambda: (p := gating.pods(ns, "app=web")) and len(p) == 2 and all(map(is_scheduling_gated, p)) and p,
        60,
        "two SchedulingGated pods",
    )
    events = wait_for(lambda: gating.events(ns, "Pod", gated[0]["metadata"]["name"]), 30, "a waiting Event")
    assert "spec.database or spec.tool changed" in events[0]["message"]
    time.sleep(6)  # longer than a sweep: nothing releases them
    assert all(map(is_scheduling_gated, gating.pods(ns, "app=web")))

    # The run against the new database records its versions: released.
    moved = ready_status(generation=2, applied=[V1, V2])
    moved["database"] = {
        "ref": identity.ref({**SPEC, "database": {"urlSecretRef": {"name": "shop-db-new", "key": "url"}}}),
        "job": "shop-db-2",
    }
    gating.set_status(ns, moved)
    wait_for(
        lambda: (p := gating.pods(ns, "app=web")) and len(p) == 2 and all(map(is_running, p)),
        60,
        "the pods to be released and Running",
    )
