"""kstatus conditions (Ready / Reconciling / Stalled) and their reasons. Pure functions."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dbmigrate_operator import constants as c
from dbmigrate_runner.report import Outcome


class Reason(enum.StrEnum):
    """Condition reasons; docs/operator.md says what each means and what to do."""

    # In progress (Reconciling=True)
    JOB_CREATED = "JobCreated"
    JOB_RUNNING = "JobRunning"
    WAITING_FOR_PREVIOUS_RUN = "WaitingForPreviousRun"
    REPLACING_JOB = "ReplacingJob"
    WAITING_FOR_NODE = "WaitingForNode"
    WAITING_FOR_LOCK = "WaitingForLock"  # the running migration's lock timeouts, read from its log
    PLANNING = "Planning"
    # Not Ready and not stuck: a person has to approve the plan (Argo CD: Degraded, docs/argocd.md).
    WAITING_FOR_APPROVAL = "WaitingForApproval"
    # Done (Ready=True)
    APPLIED = "Applied"
    # Stuck or failed (Stalled=True)
    MIGRATION_FAILED = "MigrationFailed"
    DATABASE_UNREACHABLE = "DatabaseUnreachable"
    LOCK_TIMEOUT = "LockTimeout"
    LOCK_NOT_AVAILABLE = "LockNotAvailable"
    CONFIG_ERROR = "ConfigError"
    INVALID_SPEC = "InvalidSpec"
    SECRET_NOT_FOUND = "SecretNotFound"
    IMAGE_PULL_FAILED = "ImagePullFailed"
    UNSCHEDULABLE = "Unschedulable"
    CONTAINER_CONFIG_ERROR = "ContainerConfigError"
    CONTAINER_CREATE_FAILED = "ContainerCreateFailed"
    DOWNGRADE_NOT_ALLOWED = "DowngradeNotAllowed"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    OOM_KILLED = "OOMKilled"
    RUNNER_ERROR = "RunnerError"
    JOB_FAILED = "JobFailed"
    JOB_CREATE_FAILED = "JobCreateFailed"
    POD_CREATE_FAILED = "PodCreateFailed"
    SERVICE_ACCOUNT_NOT_ALLOWED = "ServiceAccountNotAllowed"
    IMAGE_NOT_ALLOWED = "ImageNotAllowed"
    PLAN_FAILED = "PlanFailed"


OUTCOME_REASONS: dict[Outcome, Reason] = {
    Outcome.SUCCEEDED: Reason.APPLIED,
    Outcome.CONFIG_ERROR: Reason.CONFIG_ERROR,
    Outcome.DATABASE_UNREACHABLE: Reason.DATABASE_UNREACHABLE,
    Outcome.LOCK_TIMEOUT: Reason.LOCK_TIMEOUT,
    Outcome.MIGRATION_FAILED: Reason.MIGRATION_FAILED,
    Outcome.DOWNGRADE_REFUSED: Reason.DOWNGRADE_NOT_ALLOWED,
    Outcome.LOCK_NOT_AVAILABLE: Reason.LOCK_NOT_AVAILABLE,
    Outcome.INTERNAL_ERROR: Reason.RUNNER_ERROR,
}


class Phase(enum.StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass(frozen=True)
class Verdict:
    """The one state the CR is in; expands to the three kstatus conditions."""

    kind: str  # "progressing" | "ready" | "stalled"
    reason: Reason
    message: str


def progressing(reason: Reason, message: str) -> Verdict:
    return Verdict("progressing", reason, message)


def ready(message: str) -> Verdict:
    return Verdict("ready", Reason.APPLIED, message)


def stalled(reason: Reason, message: str) -> Verdict:
    return Verdict("stalled", reason, message)


def timestamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def conditions(
    verdict: Verdict, old: list[dict[str, Any]] | None, generation: int, now: datetime
) -> list[dict[str, Any]]:
    """All three kstatus conditions, always; a transition time moves only when a status flips."""
    wanted = {
        c.READY: verdict.kind == "ready",
        c.RECONCILING: verdict.kind == "progressing",
        c.STALLED: verdict.kind == "stalled",
    }
    previous = {cond.get("type"): cond for cond in old or []}
    out = []
    for type_, true in wanted.items():
        status = "True" if true else "False"
        before = previous.get(type_) or {}
        since = before.get("lastTransitionTime") if before.get("status") == status else None
        out.append(
            {
                "type": type_,
                "status": status,
                "reason": verdict.reason.value,
                "message": verdict.message,
                "observedGeneration": generation,
                "lastTransitionTime": since or timestamp(now),
            }
        )
    return out


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in status.get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


def truncate(text: str, limit: int) -> str:
    """Keep the head of a long text (where databases put the cause), marking the cut."""
    text = text.strip()
    return text if len(text) <= limit else text[: max(0, limit - 1)].rstrip() + "…"
