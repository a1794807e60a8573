"""The few API calls gating makes, as plain dicts: the controller's facade (``kube.Kube``: the
DatabaseMigration read, Events) plus pods and ReplicaSets, over the one client (``rawapi.py``, where
the ``ApiClient``, the request timeout and error descriptions live).

Everything here is blocking; callers run it in a thread (the webhook in its own small pool).
Objects come back as the API's JSON (camelCase dicts), so the pure modules read them exactly as
`kubectl get -o json` shows. Every request carries the client's timeout: on a hung API server the
call raises, the pass logs it, and the next trigger (nudge, event, sweep) tries again. Nothing is
released on an error: a pod leaves its gate only by a patch that succeeded.
"""

from __future__ import annotations

from typing import Any, Protocol

from kubernetes.client.exceptions import ApiException

from dbmigrate_operator.constants import WAIT_FOR_LABEL
from dbmigrate_operator.kube import Kube, StaleObject
from dbmigrate_operator.rawapi import JSON_PATCH, found, items_of

# The pod patch's `test` op failed: the pod changed since it was read (the controller's 409, one class).
Conflict = StaleObject


class GatingApi(Protocol):
    """What the release logic needs from the API; `KubeApi` is the real one."""

    def get_migration(self, namespace: str, name: str, timeout: float | None = None) -> dict[str, Any] | None:
        """The DatabaseMigration, or None when it does not exist."""

    def list_waiting_pods(
        self, namespace: str | None, migration: str | None, *, cached: bool = False
    ) -> list[dict[str, Any]]:
        """Pods that opted in (to `migration`, or to any), in `namespace` or in all namespaces.

        `cached`: the API server may answer from its watch cache (slightly stale, never from etcd).
        """

    def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def patch_pod(self, namespace: str, name: str, patch: list[dict[str, Any]]) -> None:
        """Apply a JSON patch; raise `Conflict` when its `test` op fails."""

    def get_replicaset(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def create_event(self, namespace: str, event: dict[str, Any]) -> None: ...


class KubeApi(Kube):
    """`GatingApi` over the one client (raw JSON responses keep it cheap)."""

    def list_waiting_pods(
        self, namespace: str | None, migration: str | None, *, cached: bool = False
    ) -> list[dict[str, Any]]:
        selector = f"{WAIT_FOR_LABEL}={migration}" if migration else WAIT_FOR_LABEL
        # A gated pod is never scheduled, so it is Pending: the field selector keeps the running
        # opted-in pods (most of them, most of the time) out of every list.
        options: dict[str, Any] = {"label_selector": selector, "field_selector": "status.phase=Pending"}
        if cached:  # resourceVersion=0: any version the watch cache holds will do, no quorum read of etcd
            options["resource_version"] = "0"
        if namespace is None:
            return items_of(self.raw.list_pod_for_all_namespaces(**options))
        return items_of(self.raw.list_namespaced_pod(namespace, **options))

    def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return found(self.raw.read_namespaced_pod, name, namespace)

    def patch_pod(self, namespace: str, name: str, patch: list[dict[str, Any]]) -> None:
        try:
            self.raw.patch_namespaced_pod(name, namespace, patch, _content_type=JSON_PATCH)
        except ApiException as e:
            if e.status in (404, 409, 422):  # 404: gone since a (cached) list showed it
                raise Conflict(f"pod {namespace}/{name} changed: HTTP {e.status}") from None
            raise

    def get_replicaset(self, namespace: str, name: str) -> dict[str, Any] | None:
        return found(self.raw.read_namespaced_replica_set, name, namespace)
