"""The steps of a migration run's life as :func:`reconcile.decide` sees it: one under way (report how it
fares, or replace it if it never started and is outdated), one done (its verdict stands), a new one
(an upgrade, or a downgrade when allowed).

Why a module of its own: these are the branches that create, replace and judge migration Jobs;
reconcile.py only chooses between them. Pure.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from dbmigrate_operator import approval as ap
from dbmigrate_operator import constants as c
from dbmigrate_operator import jobs as j
from dbmigrate_operator import lockwatch, versions
from dbmigrate_operator.actions import CreateJob, DeleteJob, EmitEvent, Step
from dbmigrate_operator.diagnosis import why_stuck
from dbmigrate_operator.jobstate import has_run, never_started, parse_time
from dbmigrate_operator.results import Result, reason_of
from dbmigrate_operator.settings import Settings
from dbmigrate_operator.status import Phase, Reason, progressing, ready, stalled
from dbmigrate_runner.lockwait_line import LockWait
from dbmigrate_runner.report import Outcome

RERUN_HINT = "kubectl annotate dbm {name} -n {namespace} " + c.RERUN_ANNOTATION + '="$(date +%s)" --overwrite'


def active_step(
    job: dict[str, Any],
    jpods: list[dict[str, Any]],
    job_events: list[dict[str, Any]],
    desired_name: str,
    old: dict[str, Any],
    now: datetime,
    settings: Settings,
    lock_wait: LockWait | None = None,
) -> Step:
    """A Job is under way: replace it if it never started and is outdated, else report how it fares
    (``lock_wait``: the latest lock wait its runner logged, when it is in one; see lockwatch.py)."""
    jname = job["metadata"]["name"]
    stuck = why_stuck(jpods, job_events, now, settings)
    superseded = jname != desired_name
    under_way = Phase.RUNNING if has_run(job, jpods, old) else Phase.PENDING
    if superseded and stuck and never_started(jpods):
        what = stuck.reason.value
        return Step(
            Phase.PENDING,
            progressing(
                Reason.REPLACING_JOB,
                f"Job {jname} never started ({what}); replacing it with a run of the new spec",
            ),
            actions=[DeleteJob(jname, "superseded by a new spec before its container ever started")],
            events=[
                EmitEvent(
                    "Normal",
                    "RunSuperseded",
                    f"Deleted Job {jname}: it never started ({what}) and the spec changed",
                )
            ],
        )
    if stuck and stuck.until is not None:
        return Step(
            under_way,
            progressing(Reason.WAITING_FOR_NODE, f"Job {jname}: {stuck.message}"),
            recheck_at=stuck.until,
        )
    if stuck:
        return Step(under_way, stalled(stuck.reason, f"Job {jname}: {stuck.message}"))
    if superseded:
        return Step(
            Phase.RUNNING,
            progressing(
                Reason.WAITING_FOR_PREVIOUS_RUN,
                f"the spec changed while Job {jname} runs; the new run starts when it ends (a running "
                "migration is never interrupted)",
            ),
        )
    attempts = int((job.get("status") or {}).get("failed") or 0) + 1
    created = parse_time((job.get("metadata") or {}).get("creationTimestamp"))
    grace_ends = created + timedelta(seconds=settings.pod_create_grace_seconds) if created else None
    # Still no Pod when the grace ends? Then its Events are read (no watch event says so).
    recheck_at = grace_ends if not jpods and grace_ends and grace_ends > now else None
    # A running container: look at its log again at the next point of the lock watch's grid.
    for pod in jpods:
        if (due := lockwatch.next_due(job, pod, now, settings.lock_watch_seconds)) is not None:
            recheck_at = due if recheck_at is None else min(recheck_at, due)
    if lock_wait is not None:
        text = lockwatch.message(jname, lock_wait)
        entry = lockwatch.status_entry(jname, lock_wait)
        return Step(
            under_way,
            progressing(Reason.WAITING_FOR_LOCK, text),
            events=lockwatch.event(old, entry, text),
            recheck_at=recheck_at,
            lock_wait=entry,
        )
    return Step(
        under_way,
        progressing(
            Reason.JOB_RUNNING,
            f"Job {jname} is running the migrations (attempt {attempts} "
            f"of {int((job.get('spec') or {}).get('backoffLimit', 0)) + 1})",
        ),
        recheck_at=recheck_at,
    )


def done_step(run: dict[str, Any], results: dict[str, Result], hint: str) -> Step:
    """The desired run is done: its verdict stands until the spec changes or a rerun is asked for."""
    if run.get("outcome") == Outcome.SUCCEEDED.value:
        return Step(Phase.SUCCEEDED, ready(run.get("message") or "Applied"))
    found = results.get(str(run.get("job")))
    reason = found.reason if found else reason_of(str(run.get("outcome")))
    return Step(
        Phase.FAILED,
        stalled(
            reason,
            f"Job {run.get('job')} failed: {run.get('message') or reason.value}. Fix the cause, then "
            f"change the spec or ask for a rerun: {hint}",
        ),
    )


def new_run_step(
    cr: dict[str, Any],
    new: dict[str, Any],
    hash_: str,
    desired_name: str,
    now: datetime,
    settings: Settings,
    approved: ap.Approved | None = None,
) -> Step:
    """Create the desired run's Job: an upgrade, or a downgrade when allowed (``approved``: the
    approved plan's hash, so the run applies exactly that plan or nothing, in the image it was
    planned from)."""
    spec = cr.get("spec") or {}
    target = str(spec.get("target") or "")
    downgrade = versions.is_downgrade(target, new)
    if downgrade and not spec.get("allowDowngrade"):
        return Step(
            Phase.FAILED,
            stalled(
                Reason.DOWNGRADE_NOT_ALLOWED,
                f"spec.target {target} is below the applied version {new.get('currentVersion')}; set "
                "spec.allowDowngrade: true to revert the newer migrations, or raise the target",
            ),
        )
    command = "downgrade" if downgrade else "upgrade"
    gate = approved if command == "upgrade" else None
    manifest = j.build_job(
        cr,
        hash_=hash_,
        command=command,
        settings=settings,
        now=now,
        expect_plan=gate.hash if gate is not None else None,
        image=gate.image if gate is not None else None,
    )
    what = f"{command} to {target}" if target else f"{command} to the newest migration"
    image = gate.image if gate is not None and gate.image else spec.get("image")
    started = f"Created Job {desired_name} ({what}, image {image})"
    return Step(
        Phase.PENDING,
        progressing(Reason.JOB_CREATED, f"created Job {desired_name} ({what})"),
        actions=[CreateJob(manifest)],
        events=[EmitEvent("Normal", "RunStarted", started)],
    )
