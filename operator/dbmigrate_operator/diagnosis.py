"""Why a run's Pod cannot start (a missing Secret, an image that cannot be pulled, no node fits, a
Pod the API refused), said now rather than when the Job's deadline fires.

Why a module of its own: the kubelet's and the Job controller's words are read here and nowhere
else; change how a stuck or failed-to-start Pod is diagnosed here. Pure (no I/O).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from dbmigrate_operator.jobstate import job_verdict, parse_time, pods_of
from dbmigrate_operator.settings import Settings
from dbmigrate_operator.status import Reason

# The kubelet's words for a missing Secret or Secret key (pkg/kubelet/kubelet_pods.go), as opposed to the
# other CreateContainerConfigErrors: runAsNonRoot with a root image user, a missing ConfigMap in job.env...
SECRET_MISSING = re.compile(r'\bsecret "[^"]*" not found|couldn\'t find key \S+ in Secret ', re.IGNORECASE)


IMAGE_STATES = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}


CREATE_STATES = {"CreateContainerError", "RunContainerError"}


@dataclass(frozen=True)
class Stuck:
    """Why a Pod cannot start; ``until`` set: still within its grace period (Reconciling, not Stalled)."""

    reason: Reason
    message: str
    until: datetime | None = None


def pod_problem(pod: dict[str, Any], now: datetime, settings: Settings) -> Stuck | None:
    """A Pod that cannot start: say so now, not when the Job's deadline fires."""
    pstatus = pod.get("status") or {}
    if pstatus.get("phase") not in (None, "Pending"):
        return None
    for cs in [*(pstatus.get("initContainerStatuses") or []), *(pstatus.get("containerStatuses") or [])]:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        why, msg = waiting.get("reason"), str(waiting.get("message") or "").strip()
        if why == "CreateContainerConfigError":
            return _config_problem(msg or why)
        if why in IMAGE_STATES:
            return Stuck(
                Reason.IMAGE_PULL_FAILED,
                f"cannot pull image {cs.get('image') or ''}: {msg or why}. Check spec.image and "
                "spec.job.imagePullSecrets",
            )
        if why in CREATE_STATES:
            return Stuck(
                Reason.CONTAINER_CREATE_FAILED, f"the migration container cannot be created: {msg or why}"
            )
    for cond in pstatus.get("conditions") or []:
        if (
            cond.get("type") == "PodScheduled"
            and cond.get("status") == "False"
            and cond.get("reason") == "Unschedulable"
        ):
            return _unschedulable(pod, cond, now, settings)
    return None


def why_stuck(
    pods: list[dict[str, Any]], job_events: list[dict[str, Any]], now: datetime, settings: Settings
) -> Stuck | None:
    """Why a Job's run cannot start: its first Pod that cannot, or (no Pod yet) the Job's FailedCreate."""
    if not pods:
        return pod_create_problem(job_events)
    return next((p for p in (pod_problem(pod, now, settings) for pod in pods) if p), None)


def _unschedulable(pod: dict[str, Any], cond: dict[str, Any], now: datetime, settings: Settings) -> Stuck:
    """No node fits. Under a cluster autoscaler that is the first step of a scale-up: give it a grace period
    (from the PodScheduled condition's transition) before calling it Stalled."""
    said = cond.get("message") or "no node fits"
    since = parse_time(cond.get("lastTransitionTime") or (pod.get("metadata") or {}).get("creationTimestamp"))
    grace = settings.unschedulable_grace_seconds
    if since is not None and grace > 0 and now < since + timedelta(seconds=grace):
        return Stuck(
            Reason.UNSCHEDULABLE,
            f"the migration Pod is waiting for a node: {said}. Reported as Unschedulable if none fits "
            f"within {grace:g}s (a cluster autoscaler may be adding one)",
            until=since + timedelta(seconds=grace),
        )
    return Stuck(
        Reason.UNSCHEDULABLE,
        f"the migration Pod cannot be scheduled: {said}. Check spec.job.nodeSelector, tolerations and "
        "resources",
    )


def _config_problem(kubelet_says: str) -> Stuck:
    """CreateContainerConfigError: SecretNotFound only when the kubelet says so, else its words verbatim."""
    if SECRET_MISSING.search(kubelet_says):
        return Stuck(
            Reason.SECRET_NOT_FOUND,
            f"the migration container cannot start: {kubelet_says}. Create the Secret (or key) named in "
            "spec.database (or spec.job.env) in this namespace; the Pod starts by itself once it exists",
        )
    return Stuck(
        Reason.CONTAINER_CONFIG_ERROR,
        f"the kubelet refused the migration container's configuration: {kubelet_says}",
    )


def jobs_awaiting_pods(
    jobs: list[dict[str, Any]], pods: list[dict[str, Any]], now: datetime, settings: Settings
) -> list[str]:
    """Uids of running Jobs that still have no Pod after a short grace: only their Events say why.

    The Job controller reports a Pod the API refused (quota, missing ServiceAccount, admission policy)
    only as a FailedCreate Event on the Job, so the caller reads those Events, and only for these Jobs.
    """
    out = []
    grace = timedelta(seconds=settings.pod_create_grace_seconds)
    for job in jobs:
        meta = job.get("metadata") or {}
        created = parse_time(meta.get("creationTimestamp"))
        if (
            job_verdict(job) is None
            and not meta.get("deletionTimestamp")
            and created is not None
            and now >= created + grace
            and not pods_of(job, pods)
        ):
            out.append(str(meta.get("uid")))
    return out


def pod_create_problem(job_events: list[dict[str, Any]]) -> Stuck | None:
    """The newest FailedCreate Event of a Job that has no Pod: the API's own words."""
    refused = [e for e in job_events if e.get("reason") == "FailedCreate"]
    if not refused:
        return None
    newest = max(refused, key=_event_time)
    return Stuck(
        Reason.POD_CREATE_FAILED,
        f"the Job cannot create its Pod: {str(newest.get('message') or '').strip()}. The Job controller "
        "retries; fix the cause (quota, spec.job.serviceAccountName, admission policy) and the run goes on",
    )


def _event_time(event: dict[str, Any]) -> str:
    series = event.get("series") or {}
    return str(
        series.get("lastObservedTime")
        or event.get("lastTimestamp")
        or event.get("eventTime")
        or (event.get("metadata") or {}).get("creationTimestamp")
        or ""
    )
