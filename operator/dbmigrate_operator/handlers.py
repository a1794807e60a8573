"""kopf wiring: any event about a DatabaseMigration, its Jobs or their Pods → reconcile that one CR.

Thin on purpose: read the CR, its Jobs and Pods; ask :func:`reconcile.decide`; carry out the plan.
No kopf change-detecting handlers (no progress annotations) and no per-object timers (they would
put a finalizer on every CR, so deleting a CR would hang while the operator is down): a single
resync loop re-checks every known CR, spread evenly over ``DBMIGRATE_RESYNC_SECONDS``.

Importing this module registers the handlers in kopf's default registry (``kopf run -m`` works).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import kopf
import kubernetes.client
from kubernetes.client.exceptions import ApiException

from dbmigrate_operator import constants as c
from dbmigrate_operator.kube import Kube, describe, new_api_client
from dbmigrate_operator.reconcile import (
    CreateJob,
    DeleteJob,
    EmitEvent,
    PatchStatus,
    decide,
    jobs_awaiting_pods,
)
from dbmigrate_operator.settings import Settings
from dbmigrate_operator.status import Phase, Reason, conditions, stalled

logger = logging.getLogger("dbmigrate_operator")
OUR_LABELS: dict[str, Any] = {c.MANAGED_BY_LABEL: c.MANAGED_BY, c.MIGRATION_LABEL: kopf.PRESENT}


@dataclass
class _Slot:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    queued: bool = False


class Controller:
    """One per operator process: the API client, per-CR serialisation, the resync loop."""

    def __init__(self, settings: Settings, api_config: kubernetes.client.Configuration | None = None) -> None:
        self.settings = settings
        self.api_config = api_config
        self.kube: Kube | None = None
        self.known: set[tuple[str, str]] = set()
        self._slots: dict[tuple[str, str], _Slot] = {}
        self._resync: asyncio.Task[None] | None = None
        self._rechecks: dict[tuple[str, str], asyncio.TimerHandle] = {}  # a grace period ends: look again
        self._recheck_tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        api_client = await asyncio.to_thread(new_api_client, self.api_config)
        self.kube = Kube(api_client)
        self._resync = asyncio.get_running_loop().create_task(self._resync_forever(), name="dbmigrate-resync")

    async def stop(self) -> None:
        for handle in self._rechecks.values():
            handle.cancel()
        for task in list(self._recheck_tasks):
            task.cancel()
        if self._resync is not None:
            self._resync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resync
        if self.kube is not None:
            self.kube.api_client.close()  # type: ignore[no-untyped-call]

    async def _resync_forever(self) -> None:
        """The safety net for missed events, one CR at a time, never a burst."""
        while True:
            keys = sorted(self.known)
            if not keys:
                await asyncio.sleep(self.settings.resync_seconds)
                continue
            pause = self.settings.resync_seconds / len(keys)
            for namespace, name in keys:
                await asyncio.sleep(pause)
                if (namespace, name) in self.known:
                    await self.reconcile(namespace, name)

    async def reconcile(self, namespace: str, name: str) -> None:
        """Serialised per CR; a burst of events while one pass runs collapses into one more pass."""
        key = (namespace, name)
        slot = self._slots.setdefault(key, _Slot())
        if slot.queued:
            return  # a pass is already waiting, and it will read the state this event brought
        slot.queued = True
        async with slot.lock:
            slot.queued = False
            try:
                await self._reconcile(namespace, name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next event or the resync retries; never crash the watcher
                logger.warning("reconcile failed migration=%s/%s error=%s", namespace, name, describe(exc))

    async def _reconcile(self, namespace: str, name: str) -> None:
        kube = self.kube
        if kube is None:
            return
        cr = await asyncio.to_thread(kube.get_migration, namespace, name)
        if cr is None or (cr.get("metadata") or {}).get("deletionTimestamp"):
            self.forget(namespace, name)
            return  # its Jobs go with it (ownerReferences); the database is never touched
        jobs, pods = await asyncio.gather(
            asyncio.to_thread(kube.list_jobs, namespace, name),
            asyncio.to_thread(kube.list_pods, namespace, name),
        )
        now = datetime.now(UTC)
        job_events = await self._job_events(namespace, jobs_awaiting_pods(jobs, pods, now, self.settings))
        plan = decide(cr, jobs, pods, now, self.settings, job_events)
        for action in plan.actions:
            if isinstance(action, CreateJob):
                job_name = action.manifest["metadata"]["name"]
                try:
                    created = await asyncio.to_thread(kube.create_job, namespace, action.manifest)
                except ApiException as exc:
                    await self._job_create_failed(cr, job_name, exc)
                    return
                logger.info(
                    "job %s migration=%s/%s job=%s",
                    "created" if created else "already exists",
                    namespace,
                    name,
                    job_name,
                )
            elif isinstance(action, DeleteJob):
                await asyncio.to_thread(kube.delete_job, namespace, action.name)
                logger.info(
                    "job deleted migration=%s/%s job=%s why=%s", namespace, name, action.name, action.why
                )
            elif isinstance(action, PatchStatus):
                await asyncio.to_thread(kube.patch_status, namespace, name, action.patch)
                if "phase" in action.patch or "conditions" in action.patch:
                    ready: dict[str, Any] = next(
                        (x for x in plan.status.get("conditions", []) if x["status"] == "True"), {}
                    )
                    logger.info(
                        "status migration=%s/%s phase=%s condition=%s reason=%s",
                        namespace,
                        name,
                        plan.status.get("phase"),
                        ready.get("type"),
                        ready.get("reason"),
                    )
            elif isinstance(action, EmitEvent):
                kopf.event(cast(Any, cr), type=action.type, reason=action.reason, message=action.message)
        if plan.recheck_after is not None:
            self._recheck(namespace, name, plan.recheck_after)

    def _recheck(self, namespace: str, name: str, delay: float) -> None:
        """Reconcile again after ``delay`` seconds: the end of a grace period brings no watch event."""
        key = (namespace, name)
        if (pending := self._rechecks.pop(key, None)) is not None:
            pending.cancel()
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._rechecks.pop(key, None)
            task = loop.create_task(self.reconcile(namespace, name))
            self._recheck_tasks.add(task)
            task.add_done_callback(self._recheck_tasks.discard)

        self._rechecks[key] = loop.call_later(delay, fire)

    async def _job_events(self, namespace: str, uids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """FailedCreate Events of Jobs still without a Pod; unreadable (no RBAC...): no verdict from them."""
        assert self.kube is not None
        out: dict[str, list[dict[str, Any]]] = {}
        for uid in uids:
            try:
                out[uid] = await asyncio.to_thread(self.kube.list_job_events, namespace, uid)
            except ApiException as exc:
                logger.warning("cannot read the Events of job uid=%s: %s", uid, describe(exc))
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
        assert self.kube is not None
        await asyncio.to_thread(self.kube.patch_status, meta["namespace"], meta["name"], patch)
        kopf.event(cast(Any, cr), type="Warning", reason=Reason.JOB_CREATE_FAILED.value, message=message)

    def remember(self, namespace: str, name: str) -> None:
        self.known.add((namespace, name))

    def forget(self, namespace: str, name: str) -> None:
        self.known.discard((namespace, name))
        if (pending := self._rechecks.pop((namespace, name), None)) is not None:
            pending.cancel()
        slot = self._slots.get((namespace, name))
        if slot is not None and not slot.lock.locked() and not slot.queued:
            self._slots.pop((namespace, name), None)


def register(
    registry: kopf.OperatorRegistry,
    settings: Settings,
    api_config: kubernetes.client.Configuration | None = None,
) -> Controller:
    """Attach the controller's handlers to ``registry``; tests use a fresh registry each."""
    controller = Controller(settings, api_config)

    @kopf.on.startup(registry=registry, id="dbmigrate-start")
    async def start(settings: kopf.OperatorSettings, **_: Any) -> None:
        # Our own Events are explicit; kopf's log lines become Events only when they are warnings.
        settings.posting.level = logging.WARNING
        await controller.start()

    @kopf.on.cleanup(registry=registry, id="dbmigrate-stop")
    async def stop(**_: Any) -> None:
        await controller.stop()

    @kopf.on.event(c.GROUP, c.VERSION, c.PLURAL, registry=registry, id="dbmigrate-migration")
    async def on_migration(type: str, name: str, namespace: str | None, **_: Any) -> None:
        if namespace is None:
            return
        if type == "DELETED":
            controller.forget(namespace, name)
            return
        controller.remember(namespace, name)
        await controller.reconcile(namespace, name)

    @kopf.on.event("batch", "v1", "jobs", labels=OUR_LABELS, registry=registry, id="dbmigrate-job")
    async def on_job(labels: Mapping[str, str], namespace: str | None, **_: Any) -> None:
        if namespace is not None:
            await controller.reconcile(namespace, labels[c.MIGRATION_LABEL])

    @kopf.on.event("", "v1", "pods", labels=OUR_LABELS, registry=registry, id="dbmigrate-pod")
    async def on_pod(labels: Mapping[str, str], namespace: str | None, **_: Any) -> None:
        if namespace is not None:
            await controller.reconcile(namespace, labels[c.MIGRATION_LABEL])

    return controller


CONTROLLER = register(kopf.get_default_registry(), Settings.from_env())
