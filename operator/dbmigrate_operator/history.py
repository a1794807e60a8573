"""Which old Jobs go: finished migration Jobs beyond spec.historyLimit, plan Jobs of runs no longer
desired.

Why a module of its own: cleanup never decides a run's fate and must never delete the Job whose result
stands; keeping it apart keeps that rule in one place. Pure.
"""

from __future__ import annotations

from typing import Any

from dbmigrate_operator import jobs as j
from dbmigrate_operator.actions import Action, DeleteJob
from dbmigrate_operator.jobstate import Observed
from dbmigrate_operator.settings import Settings


def jobs_beyond_limit(
    spec: dict[str, Any], seen: Observed, actions: list[Action], desired_name: str, settings: Settings
) -> list[Action]:
    """Keep the newest historyLimit finished Jobs (never the one whose result stands)."""
    limit = max(1, int(spec.get("historyLimit") or settings.history_limit))
    deleting = {a.name for a in actions if isinstance(a, DeleteJob)}
    out: list[Action] = []
    for job in seen.finished[limit:]:
        jname = job["metadata"]["name"]
        if (
            jname not in deleting
            and job is not seen.head
            and jname != desired_name
            and job not in seen.closing
        ):
            out.append(DeleteJob(jname, f"beyond spec.historyLimit ({limit})"))
    return out


def stale_plans(cr: dict[str, Any], plan_jobs: list[dict[str, Any]], hash_: str) -> list[Action]:
    """Plan Jobs of runs no longer desired go (a plan is read-only: deleting one loses nothing);
    the current run's plan Job stays, its log holds the whole SQL."""
    keep = j.plan_job_name(str((cr.get("metadata") or {}).get("name", "")), hash_)
    return [
        DeleteJob(job["metadata"]["name"], "plan of a run that is no longer desired")
        for job in plan_jobs
        if job["metadata"]["name"] != keep and not job["metadata"].get("deletionTimestamp")
    ]
