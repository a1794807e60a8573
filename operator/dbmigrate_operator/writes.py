"""Carrying out a plan's actions against the API: create or delete a Job, write the status or the
run-in-progress finalizer, post an Event; and the one read a plan needs beyond the view (a Job's
FailedCreate Events). Each write checks leadership right before it is sent and puts the API's
answer into the view, so the next pass decides from what was written.

Why a module of its own: the pass runner (controller.py) decides when a pass runs; this module is
how its writes reach the API. `Controller` takes these methods by inheritance (`ApiWrites`), so they
share its client, view and leadership without a second object to keep in step.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from dbmigrate_operator import constants as c
from dbmigrate_operator import leadership as lead
from dbmigrate_operator import metrics
from dbmigrate_operator.actions import CreateJob, DeleteJob
from dbmigrate_operator.gating.events import build_event, ref_of
from dbmigrate_operator.kube import Kube
from dbmigrate_operator.rawapi import describe
from dbmigrate_operator.settings import Settings
from dbmigrate_operator.status import Phase, Reason, conditions, stalled
from dbmigrate_operator.view import Kind, View

logger = logging.getLogger("dbmigrate_operator")


class ApiWrites(lead.Writer):
    """The write side of :class:`controller.Controller` (it sets these attributes); every write asks
    :meth:`leadership.Writer._ensure_active` right before it is sent."""

    settings: Settings
    kube: Kube | None
    view: View
    _events_read: dict[str, tuple[float, list[dict[str, Any]]]]

    async def _create_job(self, cr: dict[str, Any], action: CreateJob) -> bool:
        """Create-if-absent; False (and the refusal on the CR) when the API refused the Job."""
        assert self.kube is not None
        meta = cr["metadata"]
        job_name = action.manifest["metadata"]["name"]
        self._ensure_active()
        try:
            created = await asyncio.to_thread(self.kube.create_job, meta["namespace"], action.manifest)
        except ApiException as exc:
            await self._job_create_failed(cr, job_name, exc)
            return False
        if created is not None:  # the next pass sees it even before the watch does
            self.view.put(Kind.JOB, created)
        logger.info(
            "job %s migration=%s/%s job=%s",
            "created" if created is not None else "already exists",
            meta["namespace"],
            meta["name"],
            job_name,
        )
        return True

    async def _delete_job(
        self, namespace: str, name: str, action: DeleteJob, jobs: list[dict[str, Any]]
    ) -> None:
        """Delete exactly the Job the plan was decided from (its uid), never a namesake created since."""
        assert self.kube is not None
        uid = uid_of(jobs, action.name)
        if uid is None:
            logger.warning(
                "job delete skipped migration=%s/%s job=%s: not listed", namespace, name, action.name
            )
            return
        self._ensure_active()
        deleted = await asyncio.to_thread(self.kube.delete_job, namespace, action.name, uid)
        if deleted:
            self.view.delete(
                Kind.JOB, {"metadata": {"namespace": namespace, "name": action.name, "uid": uid}}
            )
        logger.info(
            "job %s migration=%s/%s job=%s uid=%s why=%s",
            "deleted" if deleted else "left alone (gone, or re-created since)",
            namespace,
            name,
            action.name,
            uid,
            action.why,
        )

    async def _patch_status(
        self, cr: dict[str, Any], patch: dict[str, Any], status: dict[str, Any]
    ) -> dict[str, Any]:
        """Write the status decided from ``cr``, only if ``cr`` is still current (else StaleObject).

        Returns the CR as written (the view takes it too), so later writes of the same plan and the
        next pass start from it instead of a version the API would refuse.
        """
        assert self.kube is not None
        meta = cr["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        self._ensure_active()
        written = await asyncio.to_thread(
            self.kube.patch_status, namespace, name, patch, str(meta.get("resourceVersion") or "")
        )
        if written is None:  # deleted meanwhile: its DELETED event follows
            self.view.delete(Kind.MIGRATION, cr)
        else:
            self.view.put(Kind.MIGRATION, written)
        metrics.status_written(namespace, name, cr.get("status") or {}, status)
        if "phase" in patch or "conditions" in patch:
            true: dict[str, Any] = next(
                (x for x in status.get("conditions", []) if x["status"] == "True"), {}
            )
            logger.info(
                "status migration=%s/%s phase=%s condition=%s reason=%s",
                namespace,
                name,
                status.get("phase"),
                true.get("type"),
                true.get("reason"),
            )
        return written or cr

    async def _hold_deletion(self, cr: dict[str, Any], hold: bool) -> dict[str, Any]:
        """Add or remove the run-in-progress finalizer on the CR decided from (else StaleObject).

        Only that one finalizer changes; any other stays. Returns the CR as written; removing the
        last finalizer of a CR being deleted lets the API server (and garbage collection) finish.
        """
        assert self.kube is not None
        meta = cr["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        others = [f for f in meta.get("finalizers") or [] if f != c.RUN_FINALIZER]
        self._ensure_active()
        written = await asyncio.to_thread(
            self.kube.patch_finalizers,
            namespace,
            name,
            [*others, c.RUN_FINALIZER] if hold else others,
            str(meta.get("resourceVersion") or ""),
        )
        logger.info(
            "finalizer %s %s migration=%s/%s",
            c.RUN_FINALIZER,
            "added (a run is under way)" if hold else "removed (no run under way)",
            namespace,
            name,
        )
        if written is None:
            self.view.delete(Kind.MIGRATION, cr)
            return cr
        self.view.put(Kind.MIGRATION, written)
        return written

    async def _emit(self, cr: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Post an Event about the CR; one that cannot be posted is logged, never fails the pass.

        Posted by us rather than ``kopf.event``: kopf's poster only works inside the task of the
        kopf handler that received the event, and passes run in the work queue's workers.
        """
        assert self.kube is not None
        self._ensure_active()
        about = ref_of(cr, api_version=f"{c.GROUP}/{c.VERSION}", kind=c.KIND)
        event = build_event(about, reason=reason, message=message, warning=type_ == "Warning")
        try:
            await asyncio.to_thread(self.kube.create_event, about.namespace, event)
        except Exception as exc:  # refused, or the connection failed: the status says it all the same
            logger.warning(
                "cannot post Event %s migration=%s/%s: %s", reason, about.namespace, about.name, describe(exc)
            )

    async def _job_events(self, namespace: str, uids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """FailedCreate Events of Jobs still without a Pod; unreadable (no RBAC...): no verdict from them.

        Events are not watched, so they are read, but only for these Jobs, and at most once per
        ``pod_create_grace_seconds`` per Job: every event of a busy CR would otherwise read them again.
        """
        assert self.kube is not None
        out: dict[str, list[dict[str, Any]]] = {}
        now = time.monotonic()
        for uid in uids:
            read_at, events = self._events_read.get(uid, (float("-inf"), []))
            if now - read_at < self.settings.pod_create_grace_seconds:
                out[uid] = events
                continue
            try:
                out[uid] = await asyncio.to_thread(self.kube.list_job_events, namespace, uid)
            except ApiException as exc:
                logger.warning("cannot read the Events of job uid=%s: %s", uid, describe(exc))
                continue
            self._events_read[uid] = (now, out[uid])
        for uid in [
            u
            for u, (at, _) in self._events_read.items()
            if now - at > 10 * self.settings.pod_create_grace_seconds
        ]:
            del self._events_read[uid]  # bounded: Jobs that got their Pod (or went) are dropped
        return out

    async def _job_create_failed(self, cr: dict[str, Any], job_name: str, exc: ApiException) -> None:
        """The API refused the Job (quota, admission policy...): say so on the CR, retry on resync."""
        meta = cr["metadata"]
        message = f"cannot create Job {job_name}: {describe(exc)}"
        logger.warning("job create failed migration=%s/%s %s", meta["namespace"], meta["name"], message)
        generation = int(meta.get("generation") or 0)
        verdict = stalled(Reason.JOB_CREATE_FAILED, message)
        patch = {
            "observedGeneration": generation,
            "phase": Phase.FAILED.value,
            "conditions": conditions(
                verdict, (cr.get("status") or {}).get("conditions"), generation, datetime.now(UTC)
            ),
        }
        await self._patch_status(cr, patch, patch)
        await self._emit(cr, "Warning", Reason.JOB_CREATE_FAILED.value, message)


def uid_of(objects: list[dict[str, Any]], name: str) -> str | None:
    """The uid of the object called ``name`` among ``objects`` (what a decision was made from)."""
    for obj in objects:
        meta = obj.get("metadata") or {}
        if meta.get("name") == name and meta.get("uid"):
            return str(meta["uid"])
    return None
