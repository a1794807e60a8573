"""The approval step before a new upgrade run under spec.approval OnDestructive or Manual: run the plan
Job, read its plan, then wait for an approval naming the plan's hash.

Why a module of its own: approval.py says what a plan and an approval are (status.plan, where an
approval may be written, what needs review); this module decides, within a reconcile pass, which
Step that makes. Change how a plan is approved in those two modules. Pure.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dbmigrate_operator import approval as ap
from dbmigrate_operator import jobs as j
from dbmigrate_operator import versions
from dbmigrate_operator.actions import CreateJob, EmitEvent, Step
from dbmigrate_operator.diagnosis import why_stuck
from dbmigrate_operator.jobstate import container_status, pods_of
from dbmigrate_operator.results import finished_as, read_result
from dbmigrate_operator.run_steps import RERUN_HINT
from dbmigrate_operator.settings import Settings
from dbmigrate_operator.status import Phase, Reason, progressing, stalled
from dbmigrate_runner.report import Outcome


def approval_step(
    cr: dict[str, Any],
    plan_jobs: list[dict[str, Any]],
    pods: list[dict[str, Any]],
    new: dict[str, Any],
    hash_: str,
    now: datetime,
    settings: Settings,
) -> Step | ap.Approved | None:
    """Before a new upgrade run under spec.approval OnDestructive or Manual: plan it, then wait for
    an approval naming the plan's hash. Returns the Step to take while that is not done, else what
    was approved (the plan's hash: the run applies only that plan; the image the plan ran: the run
    uses it) or None (Auto, or a downgrade: no plan)."""
    spec, meta = cr.get("spec") or {}, cr.get("metadata") or {}
    if ap.mode(spec) == ap.AUTO:
        return None
    if versions.is_downgrade(str(spec.get("target") or ""), new):
        return None  # allowDowngrade is the explicit decision for a downgrade; plans cover upgrades
    name, namespace = str(meta.get("name", "")), str(meta.get("namespace", ""))
    pname = j.plan_job_name(name, hash_)
    job = next((pj for pj in plan_jobs if pj["metadata"]["name"] == pname), None)
    record = dict(new.get("plan") or {})
    known = record if record.get("job") == pname and record.get("hash") else None
    if known is None:
        new.pop("plan", None)  # the plan of another run: it says nothing about this one
    if job is None and known is None:
        manifest = j.build_plan_job(cr, hash_=hash_, settings=settings, now=now)
        return Step(
            Phase.PENDING,
            progressing(Reason.PLANNING, f"created plan Job {pname}: the SQL the run would apply"),
            actions=[CreateJob(manifest)],
            events=[
                EmitEvent("Normal", "PlanStarted", f"Created plan Job {pname} (image {spec.get('image')})")
            ],
        )
    if job is not None and known is None:
        jpods = pods_of(job, pods)
        if finished_as(job, jpods) is None:
            stuck = why_stuck(jpods, [], now, settings)
            if stuck is not None and stuck.until is None:
                return Step(Phase.PENDING, stalled(stuck.reason, f"plan Job {pname}: {stuck.message}"))
            return Step(
                Phase.PENDING,
                progressing(
                    Reason.PLANNING, f"plan Job {pname} is computing the SQL of the pending migrations"
                ),
                recheck_at=stuck.until if stuck is not None else None,
            )
        result = read_result(job, jpods, settings)
        summary = result.report.plan if result.report is not None else None
        if result.outcome != Outcome.SUCCEEDED.value or summary is None:
            hint = RERUN_HINT.format(name=name, namespace=namespace)
            return Step(
                Phase.FAILED,
                stalled(
                    Reason.PLAN_FAILED,
                    f"plan Job {pname} failed: {result.message or result.outcome}. Fix the cause, then "
                    f"change the spec or ask for a rerun: {hint}",
                ),
            )
        known = ap.plan_status(summary, pname, str(spec.get("tool") or "aerich"))
        known.update(ap.image_record(str(spec.get("image") or ""), _image_id(jpods)))
    assert known is not None
    new["plan"] = known
    found = ap.approvals(cr)
    if not known.get("pendingCount"):
        known["approvedBy"] = "nothing to apply"
    elif ap.mode(spec) == ap.ON_DESTRUCTIVE and not ap.needs_review(known):
        known["approvedBy"] = "approval OnDestructive: nothing destructive found"
    elif by := [where for where, value in found.items() if value == known["hash"]]:
        known["approvedBy"] = by[0]
    else:
        known.pop("approvedBy", None)
        stale = {where: value for where, value in found.items() if value != known["hash"]}
        return Step(
            Phase.PENDING,
            progressing(Reason.WAITING_FOR_APPROVAL, ap.waiting_message(known, stale, name, namespace)),
        )
    return ap.approved(known)


def _image_id(pods: list[dict[str, Any]]) -> str:
    """The image the plan ran, as the kubelet reports it: the imageID of the container whose report
    was read (the one that exited 0); empty when no Pod says."""
    for pod in pods:
        status = container_status(pod)
        if ((status.get("state") or {}).get("terminated") or {}).get("exitCode") == 0:
            return str(status.get("imageID") or "")
    return ""
