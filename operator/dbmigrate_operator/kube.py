"""The few API calls the controller makes, as plain dicts, over the one client (``rawapi.py``: the
``ApiClient``, its timeout, error descriptions and requests live there; this module only names calls).

Blocking on purpose (callers use ``asyncio.to_thread``). Objects come back as the API's JSON, so
the pure decision code reads them exactly as ``kubectl get -o json`` shows them. No Secret is
ever read: the only Secret names here travel inside Job manifests.
"""

from __future__ import annotations

from typing import Any, cast

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from dbmigrate_operator import constants as c
from dbmigrate_operator.rawapi import MERGE_PATCH, REQUEST_TIMEOUT, RawApi, found, items_of, json_of


class StaleObject(Exception):
    """A guarded write was refused (409): the object changed since it was read (re-read, decide again)."""


class Kube:
    """The controller's calls; gating's facade (``gating/kube.py``) extends it with its own."""

    def __init__(
        self, api_client: kubernetes.client.ApiClient, timeout: tuple[float, float] | float = REQUEST_TIMEOUT
    ) -> None:
        self.api_client = api_client
        self.raw = RawApi(api_client, timeout)  # not the generated API classes: see rawapi (memory)

    def get_migration(self, namespace: str, name: str, timeout: float | None = None) -> dict[str, Any] | None:
        """The DatabaseMigration, or None when it does not exist (``timeout``: this read's own)."""
        return found(
            self.raw.get_namespaced_custom_object,
            c.GROUP,
            c.VERSION,
            namespace,
            c.PLURAL,
            name,
            _request_timeout=timeout,
        )

    def list_jobs(self, namespace: str, migration: str) -> list[dict[str, Any]]:
        selector = f"{c.MIGRATION_LABEL}={migration}"
        return items_of(self.raw.list_namespaced_job(namespace, label_selector=selector))

    def list_pods(self, namespace: str, migration: str) -> list[dict[str, Any]]:
        selector = f"{c.MIGRATION_LABEL}={migration}"
        return items_of(self.raw.list_namespaced_pod(namespace, label_selector=selector))

    def list_job_events(self, namespace: str, uid: str) -> list[dict[str, Any]]:
        """The FailedCreate Events of one Job (field-selected, from the watch cache)."""
        selector = f"involvedObject.uid={uid},reason=FailedCreate"
        return items_of(
            self.raw.list_namespaced_event(namespace, field_selector=selector, resource_version="0")
        )

    def read_pod_log(
        self, namespace: str, pod: str, container: str, tail_lines: int, limit_bytes: int
    ) -> str:
        """The tail of one container's log (``pods/log``), bounded in lines and bytes: the runner's
        masked JSON lines (lockwatch.py). Never a Secret: the log is what the runner printed."""
        resp = self.raw.read_namespaced_pod_log(
            pod, namespace, container=container, tail_lines=tail_lines, limit_bytes=limit_bytes
        )
        return bytes(resp.data or b"").decode("utf-8", errors="replace")

    def create_event(self, namespace: str, event: dict[str, Any]) -> None:
        if not event:
            raise ValueError("empty Event")
        self.raw.create_namespaced_event(namespace, event)

    def create_job(self, namespace: str, manifest: dict[str, Any]) -> dict[str, Any] | None:
        """Create-if-absent: the Job as stored, or None when it already exists (409: just as good)."""
        try:
            resp = self.raw.create_namespaced_job(namespace, cast(Any, manifest))
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise
        return json_of(resp)

    def delete_job(self, namespace: str, name: str, uid: str) -> bool:
        """Delete the Job the decision was made about, and only that one (its ``uid``).

        A Job of the same deterministic name re-created since (A → B → A) is another run: the API
        refuses the delete (409, precondition failed) and it is left alone. Background propagation:
        the Job goes at once, its Pods right after. False when it was gone or is not ours any more.
        """
        options = {"propagationPolicy": "Background", "preconditions": {"uid": uid}}
        try:
            self.raw.delete_namespaced_job(name, namespace, body=options)
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
        return self._guarded_patch(self.raw.patch_namespaced_custom_object, namespace, name, body)

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
        return self._guarded_patch(self.raw.patch_namespaced_custom_object_status, namespace, name, body)

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
        return json_of(resp)
