"""The controller's pass runner: any event about a DatabaseMigration, its Jobs or their Pods puts that
CR's key in the work queue (:mod:`workqueue`: the one thing that keeps a CR out of two passes at
once; so do the resync loop, takeovers and grace-period rechecks); a few workers take keys out,
take the CR, its Jobs and Pods from the watched view (:mod:`view`, fed by kopf's watches through
index handlers in handlers.py), ask :func:`reconcile.decide` and carry out the plan (:mod:`writes`).
The API is read only when the view cannot be trusted for a CR: its first pass after a (re)listing,
after a takeover, and after a status write refused as stale (see :meth:`Controller._observe`).

No per-object timers (kopf would put its finalizer on every CR, so deleting any CR would hang while
the operator is down): a single resync loop re-checks every known CR, spread evenly over
``DBMIGRATE_RESYNC_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kubernetes.client

from dbmigrate_operator import check_requests, metrics
from dbmigrate_operator import constants as c
from dbmigrate_operator import leadership as lead
from dbmigrate_operator.actions import CreateJob, DeleteJob, EmitEvent, HoldDeletion, PatchStatus, Plan
from dbmigrate_operator.diagnosis import jobs_awaiting_pods
from dbmigrate_operator.kube import Kube, StaleObject
from dbmigrate_operator.lock_reads import LockReads
from dbmigrate_operator.rawapi import describe, new_api_client
from dbmigrate_operator.reconcile import decide
from dbmigrate_operator.settings import Settings
from dbmigrate_operator.view import Key, View
from dbmigrate_operator.workqueue import WorkQueue
from dbmigrate_operator.writes import ApiWrites

logger = logging.getLogger("dbmigrate_operator")
STALE_RETRIES = 5  # passes in a row whose status write was refused as stale, before leaving it to resync
# A run's progress (Reconciling → Reconciling: JobCreated → JobRunning, Pending → Running, startedAt) is
# written at most this long after it was first seen, together with whatever came meanwhile; a verdict
# (Ready, Stalled), a first status, a Job to create or delete and every Event go out at once.
PROGRESS_WRITE_SECONDS = 1.0


class Controller(ApiWrites):
    """One per operator process: the API client, the work queue and its workers, the resync loop.

    Writes only while this replica is active (:class:`leadership.Writer`): every write checks right
    before it is sent, and a replica that is not active does not even run passes. It still follows
    kopf's events to know every CR, and re-checks all of them the moment it becomes active (a takeover).
    """

    def __init__(self, settings: Settings, api_config: kubernetes.client.Configuration | None = None) -> None:
        self.settings = settings
        self.api_config = api_config
        self.kube: Kube | None = None
        self.known: set[tuple[str, str]] = set()
        self.view = View()
        self.queue: WorkQueue[Key] = WorkQueue(admit=self.active)
        # CRs whose view may lag what another writer recorded: their next pass reads the API once.
        self._unsure: set[Key] = set()
        # A watch (re)listed (monotonic time of its latest listing event): deletions made while it
        # was down bring no event, so every CR's view is doubted until a pass has read the API since.
        self._listed_at = float("-inf")
        # Since when each CR's view is vouched for: its last read from the API, or its first live event.
        self._read_at: dict[Key, float] = {}
        self._progress_due: dict[Key, float] = {}  # a held progress write goes out by then (monotonic)
        # FailedCreate Events read for a Job without a Pod, by Job uid: (monotonic time read, events)
        self._events_read: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        self.leadership = None  # None: the process's (lead.current()); see lead.Writer
        self._elector: lead.LeaseElector | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._rechecks: dict[tuple[str, str], asyncio.TimerHandle] = {}  # a grace period ends: look again
        self.lock_reads = LockReads(settings.lock_watch_seconds)  # running migrations' log tails
        # Rollouts waiting for a database check, as the release pass said (handlers.py wires the two).
        self.wanted = check_requests.Wanted(self.enqueue)

    async def start(self) -> None:
        api_client = await asyncio.to_thread(new_api_client, self.api_config)
        self.kube = Kube(api_client)
        if not self.settings.standalone:
            await self._elect(api_client)
        takeovers = (self.leadership or lead.current()).subscribe()
        loop = asyncio.get_running_loop()
        self._tasks += [
            loop.create_task(self._resync_forever(), name="dbmigrate-resync"),
            loop.create_task(self._takeovers(takeovers), name="dbmigrate-takeovers"),
        ]
        self.start_workers()

    def start_workers(self) -> None:
        """The ``settings.workers`` tasks that take keys out of the queue (``stop()`` ends them)."""
        loop = asyncio.get_running_loop()
        self._tasks += [
            loop.create_task(self._work(), name=f"dbmigrate-worker-{i}") for i in range(self.settings.workers)
        ]

    async def _elect(self, api_client: kubernetes.client.ApiClient) -> None:
        """Several replicas: the process's leadership becomes this Lease (gating's writes use it too)."""
        config = lead.LeaseConfig.from_duration(
            self.settings.lease_name,
            lead.lease_namespace(self.settings.lease_namespace),
            lead.new_identity(),
            self.settings.lease_seconds,
        )
        self._elector = lead.LeaseElector(api_client, config)
        lead.install(self._elector)
        await self._elector.start()

    async def stop(self) -> None:
        for handle in self._rechecks.values():
            handle.cancel()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._elector is not None:  # stop writing, then hand the Lease over
            await self._elector.stop()
        if self.kube is not None:
            self.kube.api_client.close()  # type: ignore[no-untyped-call]

    async def _takeovers(self, acquired: asyncio.Event) -> None:
        """Became active: re-check every CR now, not at the next resync (a pending run goes on)."""
        while True:
            await acquired.wait()
            acquired.clear()
            keys = sorted(self.known)
            logger.info("active: re-checking %d DatabaseMigrations", len(keys))
            # The previous holder wrote statuses this replica's Job and Pod watches may not have caught
            # up with yet: one read from the API per CR, then the view again.
            self._unsure.update(keys)
            for key in keys:
                self.enqueue(*key)

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
                    self.enqueue(namespace, name)

    def enqueue(self, namespace: str, name: str) -> None:
        """A pass for this CR soon (at most one waiting per CR, however many events ask). A standby
        queues nothing (the queue's leadership check); a takeover re-checks every CR."""
        self.queue.add((namespace, name))
        metrics.QUEUE_DEPTH.set(len(self.queue))

    async def _work(self) -> None:
        """One of ``settings.workers``: passes, one CR at a time, for as long as the operator runs."""
        while True:
            await self.queue.run_one(self._run)
            metrics.QUEUE_DEPTH.set(len(self.queue))  # also when a key was dropped (Lease lost)

    async def _run(self, key: Key) -> None:
        metrics.QUEUE_DEPTH.set(len(self.queue))
        await self.reconcile(*key)

    async def reconcile(self, namespace: str, name: str) -> None:
        """One pass for this CR, as a worker runs it. Only the workers call it (tests aside): every
        path that asks for a pass (events, resync, takeover, grace-period recheck) goes through
        :meth:`enqueue`, so the queue alone keeps a CR from being in two passes at once and runs it
        once more when asked during its pass (no lock of its own)."""
        if not self.active():
            return  # a direct call on a standby (the queue's workers checked already): no pass
        try:
            with metrics.reconcile_pass(benign=(lead.NotActive,)):  # losing the Lease is no error
                await self._reconcile(namespace, name)
        except asyncio.CancelledError:
            raise
        except lead.NotActive:
            logger.info("no longer active: pass for migration=%s/%s stopped before writing", namespace, name)
        except Exception as exc:  # the next event or the resync retries; never crash the watcher
            logger.warning("reconcile failed migration=%s/%s error=%s", namespace, name, describe(exc))

    async def _reconcile(self, namespace: str, name: str) -> None:
        """One pass; a status write refused as stale means the world moved: read and decide again."""
        for _ in range(STALE_RETRIES):
            try:
                await self._pass(namespace, name)
                return
            except StaleObject as exc:
                # Someone else wrote the CR: the view may lag what they saw, so read the API this time.
                self._unsure.add((namespace, name))
                logger.info("status conflict migration=%s/%s, deciding again: %s", namespace, name, exc)
        logger.warning(
            "status kept conflicting migration=%s/%s; the next event or resync retries", namespace, name
        )

    async def _observe(
        self, namespace: str, name: str
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]], list[dict[str, Any]]]:
        """The CR, its Jobs and its Pods, from the view; from the API when the view may lag.

        The view is as new as the watches, and each watch is in order, but the three watches are not
        in step with each other: a status another writer recorded from a Pod can be in the view
        before that Pod's update. This replica's own writes go into the view as the API answered
        them, so its passes agree with themselves; for a CR that someone else may have written (a
        takeover, a refused write, a fresh listing) the CR is read first, then its Jobs and Pods, so
        they are never older than what the status says.
        """
        key = (namespace, name)
        if self.kube is not None and (key in self._unsure or self._predates_listing(key)):
            kube, reading = self.kube, time.monotonic()
            cr = await asyncio.to_thread(kube.get_migration, namespace, name)
            jobs, pods = await asyncio.gather(
                asyncio.to_thread(kube.list_jobs, namespace, name),
                asyncio.to_thread(kube.list_pods, namespace, name),
            )
            self.view.replace(key, cr, jobs, pods)
            self._read_at[key] = reading  # a listing that began during the read doubts it again
            self._unsure.discard(key)
        return (
            self.view.migration(namespace, name),
            self.view.jobs(namespace, name),
            self.view.pods(namespace, name),
        )

    async def _pass(self, namespace: str, name: str) -> None:
        """Observe the CR, its Jobs and Pods; decide; carry out the plan in its order."""
        if self.kube is None:
            return
        cr, jobs, pods = await self._observe(namespace, name)
        if cr is None or _deleted_unheld(cr):
            self.forget(namespace, name)
            return  # its Jobs go with it (ownerReferences); the database is never touched
        metrics.status_seen(namespace, name, cr.get("status") or {})
        now = datetime.now(UTC)
        job_events = await self._job_events(namespace, jobs_awaiting_pods(jobs, pods, now, self.settings))
        lock_waits = await self.lock_reads.waits(self.kube, (namespace, name), jobs, pods, now)
        wanted = self.wanted.now((namespace, name))
        plan = decide(cr, jobs, pods, now, self.settings, job_events, lock_waits, wanted)
        if (hold := self._hold_progress((namespace, name), cr, plan)) is not None:
            after = hold if plan.recheck_after is None else min(hold, plan.recheck_after)
            self._recheck(namespace, name, after)
            return
        for action in plan.actions:
            if isinstance(action, CreateJob):
                if not await self._create_job(cr, action):
                    return
            elif isinstance(action, DeleteJob):
                await self._delete_job(namespace, name, action, jobs)
            elif isinstance(action, PatchStatus):
                cr = await self._patch_status(cr, action.patch, plan.status)
            elif isinstance(action, HoldDeletion):
                cr = await self._hold_deletion(cr, action.hold)
                if action.hold and (cr.get("metadata") or {}).get("deletionTimestamp"):
                    return  # deleted meanwhile: no new run; the next pass decides again
            elif isinstance(action, EmitEvent):
                await self._emit(cr, action.type, action.reason, action.message)
        if plan.recheck_after is not None:
            self._recheck(namespace, name, plan.recheck_after)

    def _hold_progress(self, key: Key, cr: dict[str, Any], plan: Plan) -> float | None:
        """Seconds to hold this plan's write back, or None to carry it out now.

        Only a plan that writes nothing but a run's progress is held: the pass that follows the hold
        decides again from the view, so it writes what is true then (often the verdict itself, and
        the intermediate states cost no request at all).
        """
        if not progress_only(cr, plan):
            self._progress_due.pop(key, None)
            return None
        now = time.monotonic()
        due = self._progress_due.setdefault(key, now + PROGRESS_WRITE_SECONDS)
        if now >= due:
            self._progress_due.pop(key, None)
            return None
        return due - now

    def _recheck(self, namespace: str, name: str, delay: float) -> None:
        """Reconcile again after ``delay`` seconds: the end of a grace period brings no watch event."""
        key = (namespace, name)
        if (pending := self._rechecks.pop(key, None)) is not None:
            pending.cancel()
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._rechecks.pop(key, None)
            self.enqueue(namespace, name)

        self._rechecks[key] = loop.call_later(delay, fire)

    def mark_unsure(self, namespace: str, name: str) -> None:
        self._unsure.add((namespace, name))

    def _predates_listing(self, key: Key) -> bool:
        """Is what the view holds for this known CR older than the latest listing? (A CR forgotten
        since, deleted, is not doubted: the events of its Jobs and Pods going are no reason to read.)"""
        return key in self.known and self._read_at.get(key, float("-inf")) < self._listed_at

    def relisted(self) -> None:
        """An event from a watch's (re)listing: what was deleted while the watch was down brings no
        event (a CR gone, or every Job and Pod of a CR gone), so each CR's next pass reads the API
        once. The operator's start is a listing too: every CR's first pass reads the API."""
        self._listed_at = time.monotonic()

    def remember(self, namespace: str, name: str, *, listed: bool = False) -> None:
        """A CR's event. One first seen live (not from a listing) is as new as the watches: its first
        pass decides from the view."""
        key = (namespace, name)
        if listed:
            self.relisted()
        elif key not in self.known:
            self._read_at[key] = time.monotonic()
        self.known.add(key)

    def forget(self, namespace: str, name: str) -> None:
        self.known.discard((namespace, name))
        self._unsure.discard((namespace, name))
        self._read_at.pop((namespace, name), None)
        self.queue.discard((namespace, name))
        self._progress_due.pop((namespace, name), None)
        self.lock_reads.forget((namespace, name))
        self.wanted.forget((namespace, name))
        metrics.forget(namespace, name)
        if (pending := self._rechecks.pop((namespace, name), None)) is not None:
            pending.cancel()


def _deleted_unheld(cr: Mapping[str, Any]) -> bool:
    """Being deleted without our finalizer: nothing of ours to finish, garbage collection goes on."""
    meta = cr.get("metadata") or {}
    return bool(meta.get("deletionTimestamp")) and c.RUN_FINALIZER not in (meta.get("finalizers") or [])


def _true_type(status: Mapping[str, Any]) -> str | None:
    for cond in status.get("conditions") or []:
        if isinstance(cond, Mapping) and cond.get("status") == "True":
            return str(cond.get("type"))
    return None


def progress_only(cr: Mapping[str, Any], plan: Plan) -> bool:
    """Does ``plan`` only write a run's progress: one status patch, Reconciling before and after?"""
    return (
        len(plan.actions) == 1
        and isinstance(plan.actions[0], PatchStatus)
        and _true_type(cr.get("status") or {}) == c.RECONCILING
        and _true_type(plan.status) == c.RECONCILING
    )
