"""What a Job and its Pods say about where a run is: which Pods are its, has it started, has the Job
controller ended it; and `Observed`, this resource's Jobs sorted for the decision.

Why a module of its own: diagnosis, results, deletion and the steps all read the same fields of the
same objects; read once here, they cannot disagree on what "started" or "its Pods" means. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dbmigrate_operator import constants as c
from dbmigrate_operator import jobs as j
from dbmigrate_operator.status import Phase

RUNNING = "Running"  # status.lastRun.outcome while its Job runs


@dataclass
class Observed:
    """This resource's Jobs, sorted into what the decision needs (newest first)."""

    ours: list[dict[str, Any]]
    active: list[dict[str, Any]]  # not finished
    finished: list[dict[str, Any]]
    # Succeeded by its Pod, not yet closed by the Job controller: its result counts, but the Job object
    # is still active, so no other Job is created (or deleted) for this CR until it is closed.
    closing: list[dict[str, Any]]

    @property
    def head(self) -> dict[str, Any] | None:
        return self.ours[0] if self.ours else None


def job_verdict(job: dict[str, Any]) -> str | None:
    """'Complete' or 'Failed' once the Job controller says so; None while it runs."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return str(cond["type"])
    return None


def job_condition(job: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


def owned(obj: dict[str, Any], uid: str, kind: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == uid and r.get("kind") == kind for r in refs) if uid else True


def order_key(job: dict[str, Any]) -> tuple[str, str, str]:
    meta = job.get("metadata") or {}
    created = str((meta.get("annotations") or {}).get(j.CREATED_ANNOTATION) or "")
    return (str(meta.get("creationTimestamp") or ""), created, str(meta.get("name") or ""))


def pods_of(job: dict[str, Any], pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    meta = job.get("metadata") or {}
    uid, name = meta.get("uid"), meta.get("name")
    out = []
    for pod in pods:
        pmeta = pod.get("metadata") or {}
        labels = pmeta.get("labels") or {}
        by_owner = uid and any(r.get("uid") == uid for r in pmeta.get("ownerReferences") or [])
        by_label = labels.get("batch.kubernetes.io/job-name", labels.get("job-name")) == name
        if by_owner or (not uid and by_label):
            out.append(pod)
    return out


def container_status(pod: dict[str, Any]) -> dict[str, Any]:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == c.CONTAINER_NAME:
            return dict(cs)
    return {}


def parse_time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def never_started(pods: list[dict[str, Any]]) -> bool:
    """True when no container of these Pods ever ran, so no migration code can have touched the DB."""
    for pod in pods:
        if (pod.get("status") or {}).get("phase") not in (None, "Pending"):
            return False
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            state = cs.get("state") or {}
            if "running" in state or "terminated" in state or (cs.get("lastState") or {}).get("terminated"):
                return False
    return True


def has_run(job: dict[str, Any], pods: list[dict[str, Any]], old: dict[str, Any]) -> bool:
    """Has this Job's migration started? Then its phase is Running until the Job ends, never Pending again.

    Any sign counts: a container that ran (even if it already ended and the Job controller has not
    caught up), an attempt the Job counted, or status already saying Running for this very Job (an
    evicted attempt's Pod may be gone and is not counted as a failure).
    """
    jstatus = job.get("status") or {}
    if any(int(jstatus.get(key) or 0) for key in ("failed", "succeeded", "ready")):
        return True
    if pods and not never_started(pods):
        return True
    run = old.get("lastRun") or {}
    return (
        old.get("phase") == Phase.RUNNING.value
        and run.get("job") == (job.get("metadata") or {}).get("name")
        and run.get("startedAt") == jstatus.get("startTime")
    )
