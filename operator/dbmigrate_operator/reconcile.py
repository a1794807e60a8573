"""The controller's brain: (CR, its Jobs, their Pods, now) -> a Plan of actions. No I/O here.

Level-triggered: the plan depends only on what is observed, never on which event woke us up,
so running it twice in a row changes nothing the second time (the status patch it asks for is
what the second call sees, and it then asks for none).

This module is the table of contents of the decision: :func:`decide` and its named steps. The steps'
bodies live in modules named for what they decide:

- jobstate.py: what a Job and its Pods say (started, finished by the Job controller, its Pods)
- results.py: a finished run's result (report, termination state, what status recorded)
- record.py: what status records (versions, their database, lastRun) and the Event of a run that ended
- diagnosis.py: why a run's Pod cannot start
- spec_rules.py: a spec's validity and the operator's allowlists
- run_steps.py: a run under way, a run done, a new run (upgrade or downgrade)
- approval_step.py: plan, then wait for an approval (approval.py: what plans and approvals are)
- history.py: which old Jobs go
- deletion.py: a deletion waits for the running migration
- database_check.py: whether the database a Secret names now is the one the versions belong to
- actions.py: the actions a Plan is made of
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from dbmigrate_operator import constants as c
from dbmigrate_operator import identity
from dbmigrate_operator import jobs as j
from dbmigrate_operator.actions import (
    Action,
    CreateJob,
    DeleteJob,
    EmitEvent,
    HoldDeletion,
    PatchStatus,
    Plan,
    Step,
    merge_patch,
)
from dbmigrate_operator.approval_step import approval_step
from dbmigrate_operator.database_check import CheckStep, check_step
from dbmigrate_operator.deletion import deleting_step, holds_deletion, let_go
from dbmigrate_operator.history import jobs_beyond_limit, stale_plans
from dbmigrate_operator.jobstate import RUNNING, Observed, job_verdict, order_key, owned, pods_of
from dbmigrate_operator.record import status_record
from dbmigrate_operator.results import Result, finished_as, keeps_record, read_result, result_of_record
from dbmigrate_operator.run_steps import RERUN_HINT, active_step, done_step, new_run_step
from dbmigrate_operator.settings import Settings
from dbmigrate_operator.spec_rules import not_allowed, validate
from dbmigrate_operator.status import Phase, Reason, Verdict, conditions, progressing, stalled
from dbmigrate_runner.lockwait_line import LockWait


def decide(
    cr: dict[str, Any],
    jobs: list[dict[str, Any]],
    pods: list[dict[str, Any]],
    now: datetime,
    settings: Settings,
    job_events: Mapping[str, list[dict[str, Any]]] | None = None,
    lock_waits: Mapping[str, LockWait] | None = None,
    wanted: frozenset[str] = frozenset(),
) -> Plan:
    """What to do now for one DatabaseMigration, given everything observed about it:
    observe → results → record → next step (approval before a new run) → deletion → database check →
    the work → the status → the order it goes out in.

    ``job_events``: the Events of the Jobs :func:`diagnosis.jobs_awaiting_pods` named, by Job uid.
    ``lock_waits``: the lock wait each running Job's runner is in, read from its log (lockwatch.py),
    by Job uid.
    ``wanted``: the rollouts whose pinned pods wait for a database check (the gate's release pass).
    """
    meta = cr.get("metadata") or {}
    old = dict(cr.get("status") or {})
    old_run = dict(old.get("lastRun") or {})
    plan_jobs, check_jobs, run_jobs = _by_purpose(jobs)
    seen = _observe(cr, run_jobs, pods, old_run)
    results, kept = _results(seen, pods, old_run, settings)
    hash_ = j.run_hash(cr)
    new, events = status_record(
        old, seen, results, kept, settings, (hash_, identity.ref(cr.get("spec") or {}))
    )
    step = _next_step(
        cr, seen, plan_jobs, pods, results, new, hash_, job_events or {}, lock_waits or {}, now, settings
    )
    deleting = bool(meta.get("deletionTimestamp"))
    held = c.RUN_FINALIZER in (meta.get("finalizers") or [])
    hold = holds_deletion(seen, pods, job_events or {}, now, settings, deleting=deleting)
    hold = hold or _starts_a_run(step, deleting)
    if deleting and not hold:
        return let_go(cr, new, results, events, held, now, stranded=seen.active)
    if deleting:
        step = deleting_step(step)
    running = bool(seen.active) or any(isinstance(a, CreateJob) for a in step.actions)
    checking = check_step(cr, check_jobs, pods, wanted, new, now, settings, running=running or deleting)
    events.extend((*step.events, *checking.events))
    _warn_on_stall(old, step.verdict, events)
    work = _work(cr, step, checking, seen, plan_jobs, hash_, settings, deleting)
    new = _status(new, meta, step, old, now)
    actions = _in_order(old, new, work, checking, events, hold=hold, held=held, deleting=deleting)
    due = [at for at in (step.recheck_at, checking.recheck_at) if at is not None]
    return Plan(
        actions=actions, status=new, recheck_after=(min(due) - now).total_seconds() + 1 if due else None
    )


def _by_purpose(jobs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], ...]:
    """Plan Jobs (they compute a plan), check Jobs (they read which database) and run Jobs (they
    migrate): only the last make a run."""
    plans = [job for job in jobs if j.is_plan_job(job)]
    checks = [job for job in jobs if j.is_check_job(job)]
    runs = [job for job in jobs if not j.is_plan_job(job) and not j.is_check_job(job)]
    return plans, checks, runs


def _starts_a_run(step: Step, deleting: bool) -> bool:
    """A migration Job is about to be created: the finalizer goes on before it exists."""
    return not deleting and any(
        isinstance(a, CreateJob) and not j.is_plan_job(a.manifest) for a in step.actions
    )


def _work(
    cr: dict[str, Any],
    step: Step,
    checking: CheckStep,
    seen: Observed,
    plan_jobs: list[dict[str, Any]],
    hash_: str,
    settings: Settings,
    deleting: bool,
) -> list[Action]:
    """The Jobs to create and delete: the step's, a check Job, old Jobs beyond the history limit and
    stale plans. A resource being deleted starts nothing and deletes nothing: its Jobs go with it."""
    meta, spec = cr.get("metadata") or {}, cr.get("spec") or {}
    work: list[Action] = [
        *step.actions,
        *(a for a in checking.actions if isinstance(a, CreateJob)),
        *jobs_beyond_limit(spec, seen, step.actions, j.job_name(str(meta.get("name", "")), hash_), settings),
        *stale_plans(cr, plan_jobs, hash_),
    ]
    if deleting:
        return [a for a in work if not isinstance(a, CreateJob | DeleteJob)]
    return work


def _status(
    new: dict[str, Any], meta: dict[str, Any], step: Step, old: dict[str, Any], now: datetime
) -> dict[str, Any]:
    """The full status after this pass: the record, plus the step's phase, conditions and lock wait
    (left out when there is none, so the merge patch clears it)."""
    generation = int(meta.get("generation") or 0)
    new["observedGeneration"] = generation
    if step.lock_wait is not None:
        new["lockWait"] = step.lock_wait
    new["phase"] = step.phase.value
    new["conditions"] = conditions(step.verdict, old.get("conditions"), generation, now)
    return new


def _in_order(
    old: dict[str, Any],
    new: dict[str, Any],
    work: list[Action],
    checking: CheckStep,
    events: list[EmitEvent],
    *,
    hold: bool,
    held: bool,
    deleting: bool,
) -> list[Action]:
    """Act first, then record, events last (they describe what happened). Except the very first
    status: kstatus readers (kubectl wait, Argo CD, Flux) take a resource without conditions for done,
    so Ready=False / Reconciling=True go out before anything else (creating a Job may be slow, or
    fail). A finished check Job goes only after its result is recorded; the finalizer is put on
    before the first Job exists (the API refuses a new finalizer once deletion has begun) and taken
    off last."""
    actions = list(work)
    patch = merge_patch(old, new)
    if patch and not old.get("conditions"):
        actions.insert(0, PatchStatus(patch))
    elif patch:
        actions.append(PatchStatus(patch))
    actions.extend(a for a in checking.actions if isinstance(a, DeleteJob) and not deleting)
    if hold and not held and not deleting:
        first_job = next((i for i, a in enumerate(actions) if isinstance(a, CreateJob)), 0)
        actions.insert(first_job, HoldDeletion(True))
    actions.extend(events)
    if held and not hold:
        actions.append(HoldDeletion(False))
    return actions


def _observe(
    cr: dict[str, Any], jobs: list[dict[str, Any]], pods: list[dict[str, Any]], old_run: dict[str, Any]
) -> Observed:
    """Our Jobs (labelled for this resource, owned by it, not being deleted), newest first."""
    meta = cr.get("metadata") or {}
    name, uid = str(meta.get("name", "")), str(meta.get("uid") or "")
    ours = [
        job
        for job in jobs
        if (job.get("metadata") or {}).get("labels", {}).get(c.MIGRATION_LABEL) == name
        and owned(job, uid, c.KIND)
        and not (job.get("metadata") or {}).get("deletionTimestamp")
    ]
    ours.sort(key=order_key, reverse=True)
    done = {job["metadata"]["name"]: finished_as(job, pods_of(job, pods), old_run) for job in ours}
    active = [job for job in ours if done[job["metadata"]["name"]] is None]
    finished = [job for job in ours if done[job["metadata"]["name"]] is not None]
    closing = [job for job in finished if job_verdict(job) is None]
    return Observed(ours, active, finished, closing)


def _results(
    seen: Observed, pods: list[dict[str, Any]], old_run: dict[str, Any], settings: Settings
) -> tuple[dict[str, Result], set[str]]:
    """Each finished Job's result, and which of them come from status.lastRun.

    A result learned from a Pod's report is never unlearned: once that Pod is gone (Pod GC, node
    drain), the Job alone says far less (JobFailed, no database error), so the outcome status.lastRun
    recorded for this very Job stands. Status is the record, so a restarted operator agrees.
    """
    results: dict[str, Result] = {}
    kept: set[str] = set()
    for job in seen.finished:
        jname = job["metadata"]["name"]
        fresh = read_result(job, pods_of(job, pods), settings)
        if keeps_record(old_run, job, fresh):
            results[jname] = result_of_record(old_run)
            kept.add(jname)
        else:
            results[jname] = fresh
    return results, kept


def _next_step(
    cr: dict[str, Any],
    seen: Observed,
    plan_jobs: list[dict[str, Any]],
    pods: list[dict[str, Any]],
    results: dict[str, Result],
    new: dict[str, Any],
    hash_: str,
    job_events: Mapping[str, list[dict[str, Any]]],
    lock_waits: Mapping[str, LockWait],
    now: datetime,
    settings: Settings,
) -> Step:
    """The one branch that applies: a run under way, a bad spec, the desired run done, a run to close,
    a stale namesake to replace, a refused spec, or a new run."""
    meta, spec = cr.get("metadata") or {}, cr.get("spec") or {}
    old = dict(cr.get("status") or {})
    desired_name = j.job_name(str(meta.get("name", "")), hash_)
    run = dict(new.get("lastRun") or {})
    problem = validate(spec)
    if seen.active:
        job = seen.active[0]
        uid = str(job["metadata"].get("uid"))
        return active_step(
            job,
            pods_of(job, pods),
            job_events.get(uid, []),
            desired_name,
            old,
            now,
            settings,
            lock_waits.get(uid),
        )
    if problem:
        return Step(Phase.FAILED, stalled(Reason.INVALID_SPEC, problem))
    if run.get("runHash") == hash_ and run.get("outcome") not in (None, "", RUNNING):
        return done_step(
            run, results, RERUN_HINT.format(name=meta.get("name", ""), namespace=meta.get("namespace", ""))
        )
    if seen.closing:
        jname = seen.closing[0]["metadata"]["name"]
        return Step(
            Phase.RUNNING,
            progressing(
                Reason.WAITING_FOR_PREVIOUS_RUN,
                f"the spec changed while Job {jname} ran; the new run starts once the Job controller "
                "has closed it",
            ),
        )
    if any(job["metadata"]["name"] == desired_name for job in seen.finished):
        # An old Job of the same run exists but a newer run happened since (A → B → A): its result is
        # stale, so remove it and run again under the same deterministic name.
        return Step(
            Phase.PENDING,
            progressing(
                Reason.REPLACING_JOB, f"re-running {desired_name}: a newer run happened since it ran"
            ),
            actions=[DeleteJob(desired_name, "stale result of an older run of the same spec")],
        )
    if (refused := not_allowed(spec, settings)) is not None:
        # Checked before a Job is made, never against a run already made: a Ready resource stays Ready.
        return Step(Phase.FAILED, refused)
    gate = approval_step(cr, plan_jobs, pods, new, hash_, now, settings)
    if isinstance(gate, Step):
        return gate
    return new_run_step(cr, new, hash_, desired_name, now, settings, approved=gate)


def _warn_on_stall(old: dict[str, Any], verdict: Verdict, events: list[EmitEvent]) -> None:
    """Stalled transitions are worth a Warning even when no Job ended (stuck Pod, refused downgrade)."""
    old_stalled = [cond for cond in old.get("conditions") or [] if cond.get("type") == c.STALLED]
    was = old_stalled[0] if old_stalled else {}
    repeated = was.get("status") == "True" and was.get("reason") == verdict.reason.value
    if verdict.kind == "stalled" and not repeated and not any(e.type == "Warning" for e in events):
        events.append(EmitEvent("Warning", verdict.reason.value, verdict.message))
