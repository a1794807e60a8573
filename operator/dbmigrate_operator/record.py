"""The record part of status: the applied versions and the database they belong to, the ancestry,
status.lastRun, and the Event for a run that just ended.

Why a module of its own: what status remembers (and so what survives a Pod's garbage collection or an
operator restart) is decided here, apart from what to do next. Pure.
"""

from __future__ import annotations

from typing import Any

from dbmigrate_operator import ancestry, identity
from dbmigrate_operator import constants as c
from dbmigrate_operator import jobs as j
from dbmigrate_operator.actions import EmitEvent
from dbmigrate_operator.jobstate import RUNNING, Observed
from dbmigrate_operator.results import Result
from dbmigrate_operator.settings import Settings
from dbmigrate_operator.status import Reason
from dbmigrate_runner.report import Report


def status_record(
    old: dict[str, Any],
    seen: Observed,
    results: dict[str, Result],
    kept: set[str],
    settings: Settings,
    current: tuple[str, str],
) -> tuple[dict[str, Any], list[EmitEvent]]:
    """The new status's record part (versions and their database, lastRun) and the Event for a run
    that just ended. `current`: the run hash and the database ref (identity.py) of the spec as it is."""
    new: dict[str, Any] = {
        k: old[k]
        for k in (
            "currentVersion",
            "appliedVersions",
            "appliedCount",
            "ancestry",
            "database",
            "lastRun",
            "plan",
        )
        if k in old
    }
    old_database = identity.recorded(old)
    # The applied versions come from the newest finished Job that left a report (deterministic, so
    # reading it again after a restart gives the same answer). A newer finished Job whose report can no
    # longer be read ends the search: what status holds is newer than any older Job's report.
    for job in seen.finished:
        result = results[job["metadata"]["name"]]
        if result.report is None:
            break
        if result.report.apps:
            new.update(versions_status(result.report, settings.applied_versions_cap))
            job_hash = str(((job["metadata"].get("labels") or {}).get(c.RUN_HASH_LABEL)) or "")
            database = identity.record(
                result.report.database, job["metadata"]["name"], job_hash, *current, old_database
            )
            new["database"] = database
            # Another database's ancestry is never merged into this one's.
            known = old.get("ancestry") if identity.same_database(old_database, database) else None
            alembic = result.report.apps.get(c.ALEMBIC_APP) if result.report.tool == "alembic" else None
            if alembic is not None:
                new["ancestry"] = ancestry.merge(known, alembic, settings.ancestry_cap)
            else:
                new.pop("ancestry", None)
            break
    if (legacy := identity.legacy(new, *current)) is not None:
        new["database"] = legacy
    # lastRun describes the newest Job (running or finished); without Jobs, what status remembers.
    old_run = dict(old.get("lastRun") or {})
    head = seen.head
    if head is None:
        return new, []
    hname = head["metadata"]["name"]
    new["lastRun"] = old_run if hname in kept else _last_run(head, results.get(hname), settings)
    run = dict(new["lastRun"] or {})
    ended = head in seen.finished and (old_run.get("job"), old_run.get("outcome")) != (
        run.get("job"),
        run.get("outcome"),
    )
    if not ended:
        return new, []
    head_result = results[hname]
    if head_result.reason is Reason.APPLIED:
        return new, [EmitEvent("Normal", "Applied", f"Job {run['job']}: {run.get('message', '')}")]
    return new, [EmitEvent("Warning", head_result.reason.value, f"Job {run['job']}: {head_result.message}")]


def versions_status(report: Report, cap: int) -> dict[str, Any]:
    flat = [{"app": app, "version": v} for app, state in sorted(report.apps.items()) for v in state.versions]
    return {
        "currentVersion": report.current_version() or "",
        "appliedVersions": flat[-cap:] if cap else [],
        "appliedCount": sum(state.count for state in report.apps.values()),
    }


def _last_run(job: dict[str, Any], result: Result | None, settings: Settings) -> dict[str, Any]:
    meta = job.get("metadata") or {}
    jspec = job.get("spec") or {}
    containers = ((jspec.get("template") or {}).get("spec") or {}).get("containers") or [{}]
    run: dict[str, Any] = {
        "job": meta.get("name", ""),
        "runHash": (meta.get("labels") or {}).get(c.RUN_HASH_LABEL, ""),
        "image": containers[0].get("image", ""),
        "command": (meta.get("annotations") or {}).get(j.COMMAND_ANNOTATION, ""),
        "outcome": RUNNING,
    }
    if started := (job.get("status") or {}).get("startTime"):
        run["startedAt"] = started
    if result is not None:
        run["outcome"] = result.outcome
        if result.completed_at:
            run["completedAt"] = result.completed_at
        if result.report is not None:
            run["applied"] = result.report.applied[-20:]
            run["appliedCount"] = result.report.applied_count
        run["message"] = result.message or _success_message(result.report)
    return run


def _success_message(report: Report | None) -> str:
    if report is None:
        return ""
    now_at = report.current_version() or "an empty schema"
    verb = "Reverted" if report.command == "downgrade" else "Applied"
    if report.applied_count:
        return f"{verb} {report.applied_count} migration(s); now at {now_at}{_lock_waits(report)}"
    return f"Up to date at {now_at} (nothing to apply){_lock_waits(report)}"


def _lock_waits(report: Report) -> str:
    """What a run that got through after lock timeouts says about them (the blocker to look at)."""
    waits = report.locking
    if waits is None:
        return ""
    text = ""
    if waits.timeouts:
        text = f"; {waits.migration} waited for a table lock {waits.timeouts} time(s)"
        if waits.blocker:
            text += f", last for {waits.blocker}"
    if waits.note:
        text += f"; {waits.note}"
    return text
