"""Removing our scheduling gate from pods once their requirement is met, and saying why they wait.

What releases a pod: a pass lists the gated pods first, and only then reads the DatabaseMigration
from the API (a quorum read, never the body an event carried, never a cache), and removes a pod's
gate when `requirement.evaluate` says that fresh object meets the pod's requirement. Every pod a
pass sees was admitted (and judged by the webhook) before that listing, so the DatabaseMigration it
is judged against is at least as new as the one the webhook saw: a body older than the pod's
admission cannot release it. This order is the same on every path (`Releaser._judge`). A pass also
tells the controller which rollouts wait only for a database check (`request_checks`, wired at
startup, `check_requests.py`): the controller runs the check Job, the status it records releases them
in a later pass.

Three triggers ask for such a pass for one DatabaseMigration (`Releaser.reconcile`) or for all:
- an event of a DatabaseMigration that can release a pod or tells of a failure: it became Ready, its
  applied versions or their database changed (a pinned pod may be met), or its run failed (a Warning
  to say at once). The event's body only decides whether a pass is worth it; progress of a run that
  releases nothing (Pending, Running...) costs no pod listing: the sweep refreshes what the held
  pods' Events say;
- a nudge shortly after the webhook gated a pod, which closes the race where the migration became
  Ready between the webhook's read and the pod being stored (and announces the wait promptly);
- a periodic sweep over every gated pod in the cluster (from the watch cache), each group judged
  against its DatabaseMigration read after that listing, so a missed event or a failed patch never
  strands a pod.

No trigger runs its pass itself: each puts a key in the releaser's work queue (`workqueue.py`, the
class the controller's passes go through, with its semantics: a key waits at most once, is never in
two passes at once, and goes round once more when asked for during its own pass), and a few workers
run the passes. A key is a DatabaseMigration (an event's pass and a nudge's are the same pass, so
they collapse into one) or `SWEEP`. A sweep and a pass for one of the DatabaseMigrations it covers
can still overlap: every write is idempotent (the guarded JSON patch of `patches.py`), so they cannot
do harm. Only the active replica (`leadership`) queues or runs passes, and every write (gate removal,
Event) checks it right before it is sent: a standby writes nothing. The kopf handler that feeds the
events in lives in `runtime.py`. What a pass says about the pods it holds or releases (Events on
each pod and its owners, each said once) is `announcements.py`'s.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

from dbmigrate_operator import check_requests, metrics
from dbmigrate_operator import leadership as lead
from dbmigrate_operator.gating.announcements import Announcer
from dbmigrate_operator.gating.kube import Conflict, GatingApi
from dbmigrate_operator.gating.patches import remove_gate_patch
from dbmigrate_operator.gating.requirement import (
    CHECK_REASON,
    Requirement,
    Verdict,
    evaluate,
    has_gate,
    requirement_of,
    rollout_of,
)
from dbmigrate_operator.rawapi import describe
from dbmigrate_operator.workqueue import WorkQueue

logger = logging.getLogger(__name__)

MigrationKey = tuple[str, str]  # (namespace, name)
# The release queue's key for a sweep over every gated pod: no DatabaseMigration has an empty namespace.
SWEEP: Final[MigrationKey] = ("", "")
_NOT_READ: Any = object()  # a pass that found no waiting pod did not read the DatabaseMigration


@dataclasses.dataclass(frozen=True)
class Decision:
    """What to do with one gated pod."""

    pod: Mapping[str, Any]
    verdict: Verdict

    @property
    def release(self) -> bool:
        return self.verdict.met


def decide(pods: list[dict[str, Any]], name: str, migration: Mapping[str, Any] | None) -> list[Decision]:
    """Decisions for the gated pods among `pods` that wait for the DatabaseMigration `name`.

    Filters on the client side too: the label selector of the list is an optimisation, not a
    guarantee we rely on (and test doubles ignore selectors).
    """
    decisions = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        requirement = requirement_of(meta.get("labels"), meta.get("annotations"), str(meta.get("name") or ""))
        if requirement is not None and _waits_for(pod, name):
            decisions.append(Decision(pod=pod, verdict=evaluate(requirement, migration)))
    return decisions


def rollouts_to_check(decisions: list[Decision]) -> frozenset[str]:
    """The rollouts whose pods wait only for the database check (their pin is applied)."""
    out = set()
    for decision in decisions:
        if decision.verdict.reason == CHECK_REASON:
            meta = decision.pod.get("metadata") or {}
            rollout = rollout_of(meta.get("labels"), str(meta.get("name") or ""))
            if rollout:
                out.add(rollout)
    return frozenset(out)


def _waits_for(pod: Mapping[str, Any], name: str) -> bool:
    """A live pod that carries our gate and waits for the DatabaseMigration `name`."""
    meta = pod.get("metadata") or {}
    if meta.get("deletionTimestamp") or not has_gate(pod):
        return False
    requirement = requirement_of(meta.get("labels"), meta.get("annotations"))
    return requirement is not None and requirement.migration == name


def group_by_migration(pods: list[dict[str, Any]]) -> dict[MigrationKey, list[dict[str, Any]]]:
    """Gated, opted-in pods grouped by the DatabaseMigration they wait for (for the sweep)."""
    groups: dict[MigrationKey, list[dict[str, Any]]] = {}
    for pod in pods:
        meta = pod.get("metadata") or {}
        requirement = requirement_of(meta.get("labels"), meta.get("annotations"))
        if requirement is None or not has_gate(pod) or not meta.get("namespace"):
            continue
        groups.setdefault((meta["namespace"], requirement.migration), []).append(pod)
    return groups


def _label_verdict(migration: Mapping[str, Any]) -> Verdict:
    """The verdict for a pod that waits for this DatabaseMigration without a version pin."""
    return evaluate(
        Requirement(migration=str((migration.get("metadata") or {}).get("name") or "")), migration
    )


def fingerprint(migration: Mapping[str, Any] | None) -> str:
    """A digest of what in a DatabaseMigration can release a pod or tell of a failure.

    Status patches of a run in progress (phase, reasons, timestamps, messages) change nothing here, so
    they do not cost a pod listing each.
    """
    if migration is None:
        return "absent"
    status = migration.get("status") or {}
    verdict = _label_verdict(migration)
    relevant = {
        "label": verdict.reason if verdict.reason in ("MigrationReady", "MigrationFailed") else "waiting",
        # Ready for another generation is another state: a pod gated against the newer one waits for it.
        "generation": status.get("observedGeneration") if verdict.reason == "MigrationReady" else None,
        "database": status.get("database"),  # pins count only the current database's versions
        "databaseCheck": status.get("databaseCheck"),  # ... and only for rollouts checked against it
        "failure": verdict.message if verdict.reason == "MigrationFailed" else None,
        "appliedVersions": status.get("appliedVersions"),
        "appliedCount": status.get("appliedCount"),
        "ancestry": status.get("ancestry"),  # Alembic pins are checked against it
        "currentVersion": status.get("currentVersion"),
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()


def worth_a_pass(migration: Mapping[str, Any] | None) -> bool:
    """Can a pass over this DatabaseMigration's held pods release one or say a failure?

    No when it is absent or a run is under way with nothing applied: its pods stay held either way,
    what they wait for was said when they were gated (the webhook's nudge), and the sweep says more.
    """
    if migration is None:
        return False
    status = migration.get("status") or {}
    return _label_verdict(migration).reason in ("MigrationReady", "MigrationFailed") or bool(
        status.get("appliedVersions") or status.get("currentVersion") or status.get("ancestry")
    )


class Releaser(lead.Writer):
    """Executes decisions against the API; remembers what it announced to avoid Event spam."""

    def __init__(
        self,
        api: GatingApi,
        *,
        namespaces: tuple[str, ...] = (),
        nudge_delay: float = 1.0,
        workers: int = 4,
        on_error: Callable[[str, BaseException], None] | None = None,
        leadership: lead.Leadership | None = None,
        request_checks: check_requests.Request = check_requests.nobody,
    ) -> None:
        self.api = api
        self.request_checks = request_checks  # told which rollouts wait only for a database check
        self.leadership = leadership  # None: the process's (lead.current(), installed at startup)
        self.namespaces = namespaces  # empty: the whole cluster
        self.nudge_delay = nudge_delay
        self.workers = workers
        self._on_error = on_error
        self.announcer = Announcer(api, self._ensure_active, self._error)  # why pods wait, said once
        self._fingerprints: dict[MigrationKey, str] = {}
        self.queue: WorkQueue[MigrationKey] = WorkQueue(admit=self.active)
        # The latest event digest per queued DatabaseMigration: its pass remembers it once clean.
        self._event_digests: dict[MigrationKey, str] = {}
        self._nudges: dict[MigrationKey, asyncio.TimerHandle] = {}  # pending (the delay not over)
        self._tasks: list[asyncio.Task[None]] = []  # the workers

    # --- the queue ------------------------------------------------------------------------------

    def start(self) -> None:
        """The workers that run the queued passes (``cancel()`` ends them)."""
        loop = asyncio.get_running_loop()
        self._tasks += [
            loop.create_task(self._work(), name=f"dbmigrate-release-{i}") for i in range(self.workers)
        ]

    def enqueue(self, key: MigrationKey) -> None:
        """A pass for this DatabaseMigration (or `SWEEP`) soon; a standby queues nothing (the queue's
        leadership check)."""
        self.queue.add(key)

    async def _work(self) -> None:
        await self.queue.serve(self._run)

    async def run_one(self) -> None:
        """Run the oldest queued pass (waiting for one) in this task: tests, step by step."""
        await self.queue.run_one(self._run)

    async def drain(self) -> None:
        """Run queued passes in this task until none waits (tests, and a caller that needs it done)."""
        while len(self.queue):
            await self.run_one()

    async def _run(self, key: MigrationKey) -> None:
        digest = self._event_digests.pop(key, None)  # an event asked for this pass (else a nudge)
        if key == SWEEP:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the next sweep may succeed
                self._error("sweep failed", e)
            return
        try:
            clean, judged = await self._pass(*key)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._error(f"pass for {key[0]}/{key[1]} failed", e)
            return
        if clean and digest is not None:
            # What the pods were judged against (when read), else what the event said.
            self._fingerprints[key] = digest if judged is _NOT_READ else fingerprint(judged)

    # --- triggers -------------------------------------------------------------------------------

    def on_migration_event(self, namespace: str, name: str, migration: Mapping[str, Any] | None) -> None:
        """A DatabaseMigration was seen (listed, changed or deleted: `migration` None).

        Its body decides only whether a pass is worth queueing: the pass reads the object again after
        listing the pods (the body may be older than a pod gated meanwhile).
        """
        key = (namespace, name)
        digest = fingerprint(migration)
        if not self.active():
            # Not remembered: the first pass once active sees it (and the sweep does); nor is what
            # an event said before the Lease was lost (its queued pass was dropped).
            self._event_digests.pop(key, None)
            return
        if self._fingerprints.get(key) == digest:
            return
        if not worth_a_pass(migration):
            self._event_digests.pop(key, None)  # a pass already queued remembers nothing older
            if migration is None:
                self._fingerprints.pop(key, None)
            else:
                self._fingerprints[key] = digest
            return
        self._event_digests[key] = digest
        self.enqueue(key)

    def nudge(self, namespace: str, name: str) -> None:
        """A pass for one DatabaseMigration after `nudge_delay` (coalesced: one pending per migration)."""
        key = (namespace, name)
        if key in self._nudges:
            return

        def fire() -> None:
            # From now on, a new nudge schedules a new pass: it may be about a pod we will not see.
            self._nudges.pop(key, None)
            self.enqueue(key)

        self._nudges[key] = asyncio.get_running_loop().call_later(self.nudge_delay, fire)

    def request_sweep(self) -> None:
        """A sweep over every gated pod soon (the periodic loop and a takeover ask for it)."""
        self.enqueue(SWEEP)

    async def sweep(self) -> None:
        """One pass over every gated pod of the cluster (only while active)."""
        if not self.active():
            return
        pods: list[dict[str, Any]] = []
        for namespace in self.namespaces or (None,):
            # From the API server's watch cache: this runs every 30 s over the cluster; a pod it misses
            # now is caught by the next sweep or by its DatabaseMigration's next status change.
            waiting = await asyncio.to_thread(
                functools.partial(self.api.list_waiting_pods, namespace, None, cached=True)
            )
            pods.extend(waiting)
        groups = group_by_migration(pods)
        seen: set[str] = set()
        held: list[Mapping[str, Any]] = []  # still gated after this pass (the metrics)
        for (namespace, name), group in groups.items():
            seen.update(str((p.get("metadata") or {}).get("uid")) for p in group)
            try:
                _, _, decisions = await self._judge(namespace, name, group)  # listed above, read now
            except Exception as e:
                self._error(f"reading DatabaseMigration {namespace}/{name} failed", e)
                held.extend(group)
                continue
            held.extend(d.pod for d in decisions if not d.release)
        metrics.held_pods(held)
        self.announcer.keep_only(seen)  # pods that no longer wait (released, deleted) are forgotten

    async def cancel(self) -> None:
        for handle in self._nudges.values():
            handle.cancel()
        self._nudges.clear()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- the pass -------------------------------------------------------------------------------

    async def reconcile(self, namespace: str, name: str) -> bool:
        """Release or announce every gated pod waiting for `namespace/name`; True if all went well.
        The pass itself, run in the caller's task (the workers run it from the queue, `_run`)."""
        clean, _ = await self._pass(namespace, name)
        return clean

    async def _pass(self, namespace: str, name: str) -> tuple[bool, Any]:
        """A pass: list the waiting pods, then judge them (`_judge`); and the body judged against."""
        pods = await asyncio.to_thread(self.api.list_waiting_pods, namespace, name)
        clean, migration, _ = await self._judge(namespace, name, pods)
        return clean, migration

    async def _judge(
        self, namespace: str, name: str, pods: list[dict[str, Any]]
    ) -> tuple[bool, Any, list[Decision]]:
        """Decide for `pods`, listed by the caller *before* this call, with the DatabaseMigration read
        now, and carry the decisions out: the one place a release decision gets its DatabaseMigration
        (every path comes here). Without a waiting pod nothing is read (`_NOT_READ`).
        Returns whether all went well, the object judged against, and the decisions."""
        if not any(_waits_for(pod, name) for pod in pods):
            self.request_checks(namespace, name, frozenset())  # no rollout waits for a check
            return True, _NOT_READ, []
        migration = await asyncio.to_thread(self.api.get_migration, namespace, name)
        decisions = decide(pods, name, migration)
        if migration is not None:
            # Pins met but not verified: the controller runs the check (one Job for these rollouts); a
            # standby's controller queues nothing (its queue's leadership check).
            self.request_checks(namespace, name, rollouts_to_check(decisions))
        return await self._execute(decisions), migration, decisions

    async def _execute(self, decisions: list[Decision]) -> bool:
        clean = self.active()
        for decision in decisions if clean else []:
            try:
                if decision.release:
                    await self._release(decision)
                else:
                    await self.announcer.waiting(decision.pod, decision.verdict)
            except lead.NotActive:
                return False  # lost the Lease mid-pass: the new active replica takes over
            except Exception as e:
                clean = False
                meta = decision.pod.get("metadata") or {}
                self._error(f"pod {meta.get('namespace')}/{meta.get('name')}", e)
        return clean

    async def _release(self, decision: Decision) -> None:
        pod = decision.pod
        meta = pod.get("metadata") or {}
        namespace, name = meta["namespace"], meta["name"]
        for attempt in range(2):
            patch = remove_gate_patch(pod)
            if patch is None:
                return  # someone else removed it meanwhile
            self._ensure_active()
            try:
                await asyncio.to_thread(self.api.patch_pod, namespace, name, patch)
                break
            except Conflict:
                if attempt:
                    raise
                fresh = await asyncio.to_thread(self.api.get_pod, namespace, name)
                if fresh is None or (fresh.get("metadata") or {}).get("uid") != meta.get("uid"):
                    return  # gone
                pod = fresh
        logger.info(f"Released pod {namespace}/{name}: {decision.verdict.message}")
        await self.announcer.released(pod, decision.verdict)

    def _error(self, what: str, error: BaseException) -> None:
        logger.warning(f"Gating: {what}: {describe(error)}")
        if self._on_error is not None:
            self._on_error(what, error)
