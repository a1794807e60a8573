"""The few API calls the controller makes, over the official (sync) kubernetes client, as plain dicts.

Blocking on purpose (callers use ``asyncio.to_thread``). Objects come back as the API's JSON, so
the pure decision code reads them exactly as ``kubectl get -o json`` shows them. No Secret is
ever read: the only Secret names here travel inside Job manifests.
"""

from __future__ import annotations

import json
import os
from typing import Any, cast

import kubernetes.client
import kubernetes.config
from kubernetes.client.exceptions import ApiException

from dbmigrate_operator import constants as c
from dbmigrate_operator.rawapi import RawApi

TIMEOUT = 30.0
MERGE_PATCH = "application/merge-patch+json"


def new_api_client(
    configuration: kubernetes.client.Configuration | None = None,
) -> kubernetes.client.ApiClient:
    """In-cluster service account, else the kubeconfig (like kubectl); or the configuration given."""
    if configuration is None:
        configuration = kubernetes.client.Configuration()
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            kubernetes.config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return kubernetes.client.ApiClient(configuration)


def describe(error: BaseException) -> str:
    """One line, without the response headers/bodies ApiException prints."""
    if isinstance(error, ApiException):
        detail = ""
        try:
            detail = json.loads(error.body or "{}").get("message", "")
        except (ValueError, AttributeError):
            detail = ""
        return f"API error {error.status} {error.reason or ''}: {detail}".strip().rstrip(":")
    return f"{type(error).__name__}: {error}"


class StaleObject(Exception):
    """A write guarded by a resourceVersion was refused (409): the object changed since it was read."""


def _json(response: Any) -> dict[str, Any]:
    data = json.loads(response.data or b"{}")
    return data if isinstance(data, dict) else {}


class Kube:
    def __init__(self, api_client: kubernetes.client.ApiClient) -> None:
        self.api_client = api_client
        # Not the generated API classes: see rawapi (they cost ~80 MiB of RSS for nothing here).
        self.custom = self.batch = self.core = RawApi(api_client)

    def get_migration(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            resp = self.custom.get_namespaced_custom_object(
                c.GROUP,
                c.VERSION,
                namespace,
                c.PLURAL,
                name,
                _preload_content=False,
                _request_timeout=TIMEOUT,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return _json(resp)

    def list_jobs(self, namespace: str, migration: str) -> list[dict[str, Any]]:
        resp = self.batch.list_namespaced_job(
            namespace,
            label_selector=f"{c.MIGRATION_LABEL}={migration}",
            _preload_content=False,
            _request_timeout=TIMEOUT,
        )
        return list(_json(resp).get("items") or [])

    def list_pods(self, namespace: str, migration: str) -> list[dict[str, Any]]:
        resp = self.core.list_namespaced_pod(
            namespace,
            label_selector=f"{c.MIGRATION_LABEL}={migration}",
            _preload_content=False,
            _request_timeout=TIMEOUT,
        )
        return list(_json(resp).get("items") or [])

    def list_job_events(self, namespace: str, uid: str) -> list[dict[str, Any]]:
        """The FailedCreate Events of one Job (field-selected, from the watch cache)."""
        resp = self.core.list_namespaced_event(
            namespace,
            field_selector=f"involvedObject.uid={uid},reason=FailedCreate",
            resource_version="0",
            _preload_content=False,
            _request_timeout=TIMEOUT,
        )
        return list(_json(resp).get("items") or [])

    def read_pod_log(
        self, namespace: str, pod: str, container: str, tail_lines: int, limit_bytes: int
    ) -> str:
        """The tail of one container's log (``pods/log``), bounded in lines and bytes: the runner's
        masked JSON lines (lockwatch.py). Never a Secret: the log is what the runner printed."""
        resp = self.core.read_namespaced_pod_log(
            pod,
            namespace,
            container=container,
            tail_lines=tail_lines,
            limit_bytes=limit_bytes,
            _preload_content=False,
            _request_timeout=TIMEOUT,
        )
        return bytes(resp.data or b"").decode("utf-8", errors="replace")

    def create_event(self, namespace: str, event: dict[str, Any]) -> None:
        self.core.create_namespaced_event(namespace, event, _preload_content=False, _request_timeout=TIMEOUT)

    def create_job(self, namespace: str, manifest: dict[str, Any]) -> dict[str, Any] | None:
        """Create-if-absent: the Job as stored, or None when it already exists (409: just as good)."""
        try:
            resp = self.batch.create_namespaced_job(
                namespace, cast(Any, manifest), _preload_content=False, _request_timeout=TIMEOUT
            )
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise
        return _json(resp)

    def delete_job(self, namespace: str, name: str, uid: str) -> bool:
        """Delete the Job the decision was made about, and only that one (its ``uid``).

        A Job of the same deterministic name re-created since (A → B → A) is another run: the API
        refuses the delete (409, precondition failed) and it is left alone. Background propagation:
        the Job goes at once, its Pods right after. False when it was gone or is not ours any more.
        """
        options = {"propagationPolicy": "Background", "preconditions": {"uid": uid}}
        try:
            self.batch.delete_namespaced_job(
                name, namespace, body=options, _preload_content=False, _request_timeout=TIMEOUT
            )
        except ApiException as exc:
            if exc.status in (404, 409):
                return False
            raise
        return True

    def patch_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str
    ) -> dict[str, Any] | None:
        """Set ``metadata.finalizers`` (a merge patch of the main resource), valid only on the version
        it was decided from (409: :class:`StaleObject`). Nothing else of the object is sent. Returns
        the object as written, or None when it is gone."""
        body = {"metadata": {"resourceVersion": resource_version, "finalizers": finalizers or None}}
        return self._guarded_patch(self.custom.patch_namespaced_custom_object, namespace, name, body)

    def patch_status(
        self, namespace: str, name: str, patch: dict[str, Any], resource_version: str
    ) -> dict[str, Any] | None:
        """JSON merge patch of the status subresource, valid only on the version it was decided from.

        The patch names ``metadata.resourceVersion``: when anyone wrote the object since it was read,
        the API server answers 409 and this raises :class:`StaleObject` (re-read and decide again,
        never overwrite). Returns the object as written (the controller's view takes it), or None
        when the object is gone.
        """
        body = {"metadata": {"resourceVersion": resource_version}, "status": patch}
        return self._guarded_patch(self.custom.patch_namespaced_custom_object_status, namespace, name, body)

    def _guarded_patch(
        self, call: Any, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any] | None:
        """A merge patch that names ``metadata.resourceVersion``: 409 is :class:`StaleObject`, 404 None."""
        try:
            resp = call(
                c.GROUP,
                c.VERSION,
                namespace,
                c.PLURAL,
                name,
                body,
                _content_type=MERGE_PATCH,
                _preload_content=False,
                _request_timeout=TIMEOUT,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            if exc.status == 409:
                version = body["metadata"]["resourceVersion"]
                raise StaleObject(
                    f"{c.PLURAL}/{name} in {namespace} changed since resourceVersion {version}"
                ) from None
            raise
        return _json(resp)
