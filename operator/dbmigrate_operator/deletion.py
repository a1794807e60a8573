"""Deleting a DatabaseMigration waits for its running migration: whether the run-in-progress
finalizer holds, what a resource being deleted reports, and the last status once it may go.

Why a module of its own: garbage collection would otherwise kill a migration Pod mid-run; every rule
about that race is here. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from dbmigrate_operator.actions import (
    Action,
    DeleteJob,
    EmitEvent,
    HoldDeletion,
    PatchStatus,
    Plan,
    Step,
    merge_patch,
)
from dbmigrate_operator.diagnosis import why_stuck
from dbmigrate_operator.jobstate import RUNNING, Observed, never_started, pods_of
from dbmigrate_operator.results import Result
from dbmigrate_operator.run_steps import RERUN_HINT, done_step
from dbmigrate_operator.settings import Settings
from dbmigrate_operator.status import conditions


def holds_deletion(
    seen: Observed,
    pods: list[dict[str, Any]],
    job_events: Mapping[str, list[dict[str, Any]]],
    now: datetime,
    settings: Settings,
    *,
    deleting: bool,
) -> bool:
    """Must a deletion of this resource wait? Yes while one of its migration Jobs is under way.

    Garbage collection would otherwise delete the Job and kill its Pod mid-migration (a
    non-transactional step such as CREATE INDEX CONCURRENTLY left half done). Plan Jobs never hold
    (they only read). Once deletion has begun, a Job whose container never started and cannot start
    (a missing Secret, an image that cannot be pulled, a refused Pod) holds nothing: it cannot have
    touched the database, and waiting for it would keep the resource until the Job's deadline.
    """
    for job in seen.active:
        if not deleting:
            return True
        jpods = pods_of(job, pods)
        if not never_started(jpods):
            return True
        stuck = why_stuck(jpods, job_events.get(str(job["metadata"].get("uid")), []), now, settings)
        if stuck is None or stuck.until is not None:
            return True  # its container may start any moment
    return False


def let_go(
    cr: dict[str, Any],
    new: dict[str, Any],
    results: dict[str, Result],
    events: list[EmitEvent],
    held: bool,
    now: datetime,
    stranded: Sequence[Mapping[str, Any]] = (),
) -> Plan:
    """Deleted, and nothing runs any more (or nothing that ever started and could): garbage
    collection may go on. A run that ended meanwhile is recorded first (its status, counted in the
    metrics, and its Event); nothing else is written for a resource about to vanish.

    `stranded`: unfinished Jobs that hold nothing (their container never started and cannot). The
    chart's running-migrations policy keeps the garbage collector off every unfinished migration
    Job, so the operator deletes these itself; they would otherwise stay until their deadline."""
    meta, old = cr.get("metadata") or {}, dict(cr.get("status") or {})
    run = dict(new.get("lastRun") or {})
    actions: list[Action] = []
    if held and run.get("outcome") not in (None, "", RUNNING) and run != old.get("lastRun"):
        hint = RERUN_HINT.format(name=meta.get("name", ""), namespace=meta.get("namespace", ""))
        done = done_step(run, results, hint)
        generation = int(meta.get("generation") or 0)
        new["phase"] = done.phase.value
        new["conditions"] = conditions(done.verdict, old.get("conditions"), generation, now)
        actions.append(PatchStatus(merge_patch(old, new)))
    else:
        new = old
    deletes = [
        DeleteJob(str(job["metadata"]["name"]), "its DatabaseMigration is being deleted and it never started")
        for job in stranded
    ]
    return Plan(actions=[*actions, *events, *deletes, *([HoldDeletion(False)] if held else [])], status=new)


def deleting_step(step: Step) -> Step:
    """The resource is being deleted while its run goes on: say why it is still there."""
    why = (
        " The DatabaseMigration is being deleted: it goes once this run ends (a running migration is "
        "never interrupted)."
    )
    message = step.verdict.message.rstrip(".") + "." + why
    return Step(step.phase, replace(step.verdict, message=message), recheck_at=step.recheck_at)
