"""The few API calls gating makes, over the official (sync) kubernetes client, as plain dicts.

Everything here is blocking; callers run it in a thread (the webhook in its own small pool).
Objects come back as the API's JSON (camelCase dicts), so the pure modules read them exactly as
`kubectl get -o json` shows.

Every request carries a timeout (`REQUEST_TIMEOUT`: connect, then each read of the response), so a
hung API server or connection cannot hold a thread, a release pass or the sweep forever: the call
raises, the pass logs it, and the next trigger (nudge, event, sweep) tries again. Nothing is
released on an error: a pod leaves its gate only by a patch that succeeded.
"""

from __future__ import annotations

import json
import os
from typing import Any, Protocol

import kubernetes.client
import kubernetes.config
from kubernetes.client.exceptions import ApiException

from dbmigrate_operator.constants import GROUP, PLURAL, VERSION, WAIT_FOR_LABEL
from dbmigrate_operator.rawapi import RawApi

JSON_PATCH = "application/json-patch+json"
# (connect, read) seconds for every gating request; the webhook's own read is shorter (webhook_config).
REQUEST_TIMEOUT: tuple[float, float] = (5.0, 30.0)


class Conflict(Exception):
    """The guarded patch did not apply: the object changed since we read it (HTTP 409/422)."""


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


def describe_error(error: BaseException) -> str:
    """A one-line description; ApiException's own text carries response headers and bodies."""
    if isinstance(error, ApiException):
        return f"API error {error.status} {error.reason or ''}".rstrip()
    return f"{type(error).__name__}: {error}"


def new_api_client() -> kubernetes.client.ApiClient:
    """A client configured like kubectl: in-cluster service account, else the kubeconfig."""
    configuration = kubernetes.client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        # The client reads $KUBECONFIG once at import time; read it now (tests and tools set it late).
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=os.environ.get("KUBECONFIG") or None, client_configuration=configuration
        )
    return kubernetes.client.ApiClient(configuration)


def _json(response: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(response.data)
    return data


class KubeApi:
    """`GatingApi` over an ApiClient; raw JSON responses (`_preload_content=False`) keep it cheap."""

    def __init__(
        self, api_client: kubernetes.client.ApiClient, timeout: tuple[float, float] = REQUEST_TIMEOUT
    ) -> None:
        # Not the generated API classes: see dbmigrate_operator.rawapi (memory).
        self.core = self.apps = self.custom = RawApi(api_client)
        self.timeout = timeout

    def get_migration(self, namespace: str, name: str, timeout: float | None = None) -> dict[str, Any] | None:
        try:
            return _json(
                self.custom.get_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    name,
                    _preload_content=False,
                    _request_timeout=self.timeout if timeout is None else timeout,
                )
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def list_waiting_pods(
        self, namespace: str | None, migration: str | None, *, cached: bool = False
    ) -> list[dict[str, Any]]:
        selector = f"{WAIT_FOR_LABEL}={migration}" if migration else WAIT_FOR_LABEL
        # A gated pod is never scheduled, so it is Pending: the field selector keeps the running
        # opted-in pods (most of them, most of the time) out of every list.
        options: dict[str, Any] = {
            "label_selector": selector,
            "field_selector": "status.phase=Pending",
            "_preload_content": False,
            "_request_timeout": self.timeout,
        }
        if cached:  # resourceVersion=0: any version the watch cache holds will do, no quorum read of etcd
            options["resource_version"] = "0"
        if namespace is None:
            response = self.core.list_pod_for_all_namespaces(**options)
        else:
            response = self.core.list_namespaced_pod(namespace, **options)
        items: list[dict[str, Any]] = _json(response).get("items") or []
        return items

    def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return _json(
                self.core.read_namespaced_pod(
                    name, namespace, _preload_content=False, _request_timeout=self.timeout
                )
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def patch_pod(self, namespace: str, name: str, patch: list[dict[str, Any]]) -> None:
        try:
            self.core.patch_namespaced_pod(
                name,
                namespace,
                patch,
                _content_type=JSON_PATCH,
                _preload_content=False,
                _request_timeout=self.timeout,
            )
        except ApiException as e:
            if e.status in (404, 409, 422):  # 404: gone since a (cached) list showed it
                raise Conflict(f"pod {namespace}/{name} changed: HTTP {e.status}") from None
            raise

    def get_replicaset(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return _json(
                self.apps.read_namespaced_replica_set(
                    name, namespace, _preload_content=False, _request_timeout=self.timeout
                )
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def create_event(self, namespace: str, event: dict[str, Any]) -> None:
        if not event:
            raise ValueError("empty Event")
        self.core.create_namespaced_event(
            namespace, event, _preload_content=False, _request_timeout=self.timeout
        )
