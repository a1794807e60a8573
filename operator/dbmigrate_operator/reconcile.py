"""The controller's brain: (CR, its Jobs, their Pods, now) → a Plan of actions. No I/O here.

Level-triggered: the plan depends only on what is observed, never on which event woke us up,
so running it twice in a row changes nothing the second time (the status patch it asks for is
what the second call sees, and it then asks for none).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from dbmigrate_operator import ancestry, identity, images, versions
from dbmigrate_operator import approval as ap
from dbmigrate_operator import constants as c
from dbmigrate_operator import jobs as j
from dbmigrate_operator.settings import Settings
from dbmigrate_operator.status import (
    OUTCOME_REASONS,
    Phase,
    Reason,
    Verdict,
    conditions,
    progressing,
    ready,
    stalled,
    timestamp,
    truncate,
)
from dbmigrate_runner.report import INTERRUPTED, Outcome, Report, ReportError, decode

RERUN_HINT = "kubectl annotate dbm {name} -n {namespace} " + c.RERUN_ANNOTATION + '="$(date +%s)" --overwrite'
# The kubelet's words for a missing Secret or Secret key (pkg/kubelet/kubelet_pods.go), as opposed to the
# other CreateContainerConfigErrors: runAsNonRoot with a root image user, a missing ConfigMap in job.env...
SECRET_MISSING = re.compile(r'\bsecret "[^"]*" not found|couldn\'t find key \S+ in Secret ', re.IGNORECASE)
IMAGE_STATES = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
CREATE_STATES = {"CreateContainerError", "RunContainerError"}
RUNNING = "Running"


# ---------------------------------------------------------------- actions


@dataclass(frozen=True)
class CreateJob:
    manifest: dict[str, Any]


@dataclass(frozen=True)
class DeleteJob:
    name: str
    why: str


@dataclass(frozen=True)
class PatchStatus:
    patch: dict[str, Any]  # a JSON merge patch of .status (None deletes a key)


@dataclass(frozen=True)
class EmitEvent:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class HoldDeletion:
    """Add (``hold``) or remove the run-in-progress finalizer (:data:`constants.RUN_FINALIZER`)."""

    hold: bool


Action = CreateJob | DeleteJob | PatchStatus | EmitEvent | HoldDeletion


@dataclass
class Plan:
    actions: list[Action] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)  # the full status after the plan
    # Look again after this many seconds even without an event (a grace period ends then).
    recheck_after: float | None = None

    def of(self, kind: type) -> list[Any]:
        return [a for a in self.actions if isinstance(a, kind)]


# ---------------------------------------------------------------- observation helpers


def _job_verdict(job: dict[str, Any]) -> str | None:
    """'Complete' or 'Failed' once the Job controller says so; None while it runs."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return str(cond["type"])
    return None


def _succeeded_state(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The terminated state of a container that exited 0 with a readable Succeeded report, if any.

    Our Jobs run one Pod (completions 1, restartPolicy Never), so such a Pod decides the Job: the Job
    controller's Complete follows up to a second later (it batches Pod updates), and nothing can undo it.
    """
    for pod in pods:
        state = (_container_status(pod).get("state") or {}).get("terminated") or {}
        if state.get("exitCode") == 0 and state.get("message"):
            try:
                if decode(str(state["message"])).ok:
                    return dict(state)
            except ReportError:
                continue
    return None


def _finished(
    job: dict[str, Any], pods: list[dict[str, Any]], old_run: dict[str, Any] | None = None
) -> str | None:
    """'Complete' or 'Failed' as the Job controller says, or 'Complete' as soon as the result is final.

    A success is final once its Pod reports it (or status.lastRun already recorded it for this very Job,
    should the Pod vanish before the Job controller counts it). Failures wait for the Job's verdict:
    backoffLimit and podFailurePolicy decide whether another attempt follows.
    """
    verdict = _job_verdict(job)
    if verdict is not None:
        return verdict
    if _succeeded_state(pods) is not None:
        return "Complete"
    started = (job.get("status") or {}).get("startTime")
    if (
        old_run
        and old_run.get("outcome") == Outcome.SUCCEEDED.value
        and started
        and old_run.get("startedAt") == started
        and recorded_run(old_run, job)
    ):
        return "Complete"
    return None


def _job_condition(job: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


def _owned(obj: dict[str, Any], uid: str, kind: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == uid and r.get("kind") == kind for r in refs) if uid else True


def _order_key(job: dict[str, Any]) -> tuple[str, str, str]:
    meta = job.get("metadata") or {}
    created = str((meta.get("annotations") or {}).get(j.CREATED_ANNOTATION) or "")
    return (str(meta.get("creationTimestamp") or ""), created, str(meta.get("name") or ""))


def _pods_of(job: dict[str, Any], pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
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


def _container_status(pod: dict[str, Any]) -> dict[str, Any]:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == c.CONTAINER_NAME:
            return dict(cs)
    return {}


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


def _unschedulable(pod: dict[str, Any], cond: dict[str, Any], now: datetime, settings: Settings) -> Stuck:
    """No node fits. Under a cluster autoscaler that is the first step of a scale-up: give it a grace period
    (from the PodScheduled condition's transition) before calling it Stalled."""
    said = cond.get("message") or "no node fits"
    since = _parse_time(
        cond.get("lastTransitionTime") or (pod.get("metadata") or {}).get("creationTimestamp")
    )
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


def _parse_time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


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
        created = _parse_time(meta.get("creationTimestamp"))
        if (
            _job_verdict(job) is None
            and not meta.get("deletionTimestamp")
            and created is not None
            and now >= created + grace
            and not _pods_of(job, pods)
        ):
            out.append(str(meta.get("uid")))
    return out


def _pod_create_problem(job_events: list[dict[str, Any]]) -> Stuck | None:
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


def _never_started(pods: list[dict[str, Any]]) -> bool:
    """True when no container of these Pods ever ran, so no migration code can have touched the DB."""
    for pod in pods:
        if (pod.get("status") or {}).get("phase") not in (None, "Pending"):
            return False
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            state = cs.get("state") or {}
            if "running" in state or "terminated" in state or (cs.get("lastState") or {}).get("terminated"):
                return False
    return True


def _has_run(job: dict[str, Any], pods: list[dict[str, Any]], old: dict[str, Any]) -> bool:
    """Has this Job's migration started? Then its phase is Running until the Job ends, never Pending again.

    Any sign counts: a container that ran (even if it already ended and the Job controller has not
    caught up), an attempt the Job counted, or status already saying Running for this very Job (an
    evicted attempt's Pod may be gone and is not counted as a failure).
    """
    jstatus = job.get("status") or {}
    if any(int(jstatus.get(key) or 0) for key in ("failed", "succeeded", "ready")):
        return True
    if pods and not _never_started(pods):
        return True
    run = old.get("lastRun") or {}
    return (
        old.get("phase") == Phase.RUNNING.value
        and run.get("job") == (job.get("metadata") or {}).get("name")
        and run.get("startedAt") == jstatus.get("startTime")
    )


@dataclass(frozen=True)
class Result:
    """What a finished Job tells: its outcome, the runner's report if any, a human sentence."""

    outcome: str  # an Outcome value, or a Reason value when there is no report
    reason: Reason
    report: Report | None
    message: str
    completed_at: str | None
    from_pod: bool = False  # read from a terminated container (report or exit code), not the Job alone


def read_result(job: dict[str, Any], pods: list[dict[str, Any]], settings: Settings) -> Result:
    """Decode the runner's report from the newest terminated Pod (its termination message)."""
    done = _finished(job, pods)
    last = _last_terminated(pods, done)
    report: Report | None = None
    decode_error = ""
    if last.get("message"):
        try:
            report = decode(str(last["message"]))
        except ReportError as exc:
            decode_error = str(exc)
    cond = _job_condition(job, done or "")
    completed = (job.get("status") or {}).get("completionTime") or cond.get("lastTransitionTime")
    if done == "Complete":
        return _success_result(report, last, completed)
    # The Job's deadline stops the Pod with SIGTERM: the runner's "interrupted" is the effect, not the cause.
    if cond.get("reason") == "DeadlineExceeded" and (report is None or _interrupted(report)):
        return _deadline_result(job, report, completed, bool(last))
    if report is not None and not report.ok:
        return _report_result(report, completed, settings)
    if last.get("reason") == "OOMKilled":
        return _oom_result(job, completed)
    if last:
        return _crash_result(last, decode_error, completed)
    return Result(
        Reason.JOB_FAILED.value,
        Reason.JOB_FAILED,
        None,
        truncate(
            f"the Job failed: {cond.get('reason') or ''} {cond.get('message') or ''}", settings.message_chars
        ),
        completed,
    )


def _last_terminated(pods: list[dict[str, Any]], done: str | None) -> dict[str, Any]:
    """The terminated state that tells the run's result: the newest (a success first, once Complete)."""
    terminated = []
    for pod in pods:
        state = (_container_status(pod).get("state") or {}).get("terminated")
        if state:
            terminated.append(dict(state))
    terminated.sort(
        key=lambda t: (t.get("exitCode") == 0 if done == "Complete" else True, str(t.get("finishedAt") or ""))
    )
    return terminated[-1] if terminated else {}


def _interrupted(report: Report) -> bool:
    return report.error is not None and report.error.kind == INTERRUPTED


def _success_result(report: Report | None, last: dict[str, Any], completed: str | None) -> Result:
    if report is not None and report.ok:
        # When the container ended, not when the Job controller noticed: the same answer before
        # and after the Job's Complete, so catching up rewrites nothing.
        ended = last.get("finishedAt") or completed
        return Result(Outcome.SUCCEEDED.value, Reason.APPLIED, report, "", ended, True)
    return Result(
        Outcome.SUCCEEDED.value,
        Reason.APPLIED,
        None,
        "the Job succeeded but left no report",
        completed,
        bool(last),
    )


def _deadline_result(
    job: dict[str, Any], report: Report | None, completed: str | None, from_pod: bool
) -> Result:
    deadline = (job.get("spec") or {}).get("activeDeadlineSeconds")
    return Result(
        Reason.DEADLINE_EXCEEDED.value,
        Reason.DEADLINE_EXCEEDED,
        report,  # an interrupted runner still read back what was applied
        f"the run exceeded spec.job.activeDeadlineSeconds ({deadline}s) and was stopped",
        completed,
        from_pod,
    )


def _report_result(report: Report, completed: str | None, settings: Settings) -> Result:
    reason = OUTCOME_REASONS.get(report.outcome, Reason.RUNNER_ERROR)
    msg = report.outcome.value
    if report.error is not None:
        where = f" in {report.error.migration}" if report.error.migration else ""
        kind = report.error.kind
        # A kind that only repeats the outcome ("ConfigError: ConfigError: ...") is left out.
        text = report.error.message
        if kind and kind != report.outcome.value:
            text = f"{kind}: {text}"
        msg = f"{report.outcome.value}{where}: {truncate(text, settings.message_chars)}"
    return Result(report.outcome.value, reason, report, msg, completed, True)


def _oom_result(job: dict[str, Any], completed: str | None) -> Result:
    """The kernel killed the runner at its cgroup's memory limit: no report, and a clear fix."""
    template = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
    container: dict[str, Any] = next(
        (x for x in template.get("containers") or [] if x.get("name") == c.CONTAINER_NAME), {}
    )
    limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    what = f"its memory limit ({limit})" if limit else "the memory available to it (no memory limit is set)"
    return Result(
        Reason.OOM_KILLED.value,
        Reason.OOM_KILLED,
        None,
        f"the migration container was killed for exceeding {what}; raise spec.job.resources.limits.memory",
        completed,
        True,
    )


def _crash_result(last: dict[str, Any], decode_error: str, completed: str | None) -> Result:
    """The container ended without a readable report: say how it ended."""
    code = int(last.get("exitCode") or 0)
    outcome = Outcome.from_exit_code(code)
    what = last.get("reason") or "Error"
    detail = f"; {decode_error}" if decode_error else ""
    return Result(
        outcome.value,
        OUTCOME_REASONS.get(outcome, Reason.RUNNER_ERROR),
        None,
        f"the migration container ended with {what} (exit code {code}) and no readable report{detail}",
        completed,
        True,
    )


def recorded_run(old_run: dict[str, Any], job: dict[str, Any]) -> bool:
    """Does status.lastRun already hold this very Job's finished outcome?

    Same name, run hash and start time (a Job re-created under the same name starts anew), and an
    outcome other than Running: the result was learned while the Pod could still be read.
    """
    meta = job.get("metadata") or {}
    started = (job.get("status") or {}).get("startTime")
    return (
        old_run.get("outcome") not in (None, "", RUNNING)
        and old_run.get("job") == meta.get("name")
        and old_run.get("runHash") == (meta.get("labels") or {}).get(c.RUN_HASH_LABEL, "")
        and (not started or not old_run.get("startedAt") or old_run.get("startedAt") == started)
    )


def _keeps_record(old_run: dict[str, Any], job: dict[str, Any], fresh: Result) -> bool:
    """Does the outcome status.lastRun recorded for this Job stand against what can be read now?

    A Pod's result always wins (it says more). Without the Pod, the record stands, unless the Job's own
    verdict, its deadline, contradicts it (an older operator recorded the runner's SIGTERM instead).
    """
    if fresh.from_pod or not recorded_run(old_run, job):
        return False
    return fresh.reason is not Reason.DEADLINE_EXCEEDED or old_run.get("outcome") == fresh.outcome


def _result_of_record(run: dict[str, Any]) -> Result:
    outcome = str(run.get("outcome"))
    return Result(outcome, _reason_of(outcome), None, str(run.get("message") or ""), run.get("completedAt"))


# ---------------------------------------------------------------- versions


# Parsing and comparing versions: versions.py (shared with the gate and the webhook).


def versions_status(report: Report, cap: int) -> dict[str, Any]:
    flat = [{"app": app, "version": v} for app, state in sorted(report.apps.items()) for v in state.versions]
    return {
        "currentVersion": report.current_version() or "",
        "appliedVersions": flat[-cap:] if cap else [],
        "appliedCount": sum(state.count for state in report.apps.values()),
    }


# ---------------------------------------------------------------- the decision


def validate(spec: dict[str, Any]) -> str | None:
    """Last line of defence behind the CRD schema (an old CRD, a cluster without CEL)."""
    if not str(spec.get("image") or "").strip():
        return "spec.image is required"
    if (unpinned := images.unpinned(str(spec["image"]))) is not None:
        return unpinned
    if (spec.get("tool") or "aerich") not in ("aerich", "tortoise", "alembic"):
        return f"spec.tool must be aerich, tortoise or alembic, got {spec.get('tool')!r}"
    db = spec.get("database") or {}
    if bool(db.get("urlSecretRef")) == bool(db.get("secretRef")):
        return "set exactly one of spec.database.urlSecretRef or spec.database.secretRef"
    ref = db.get("urlSecretRef") or db.get("secretRef") or {}
    if not ref.get("name") or ("urlSecretRef" in db and not ref.get("key")):
        return "spec.database names no Secret (name and key are required)"
    if spec.get("allowDowngrade") and not spec.get("target"):
        return "allowDowngrade: true needs spec.target"
    return None


def not_allowed(spec: dict[str, Any], settings: Settings) -> Verdict | None:
    """The operator's allowlists (chart values job.allowedServiceAccounts / job.allowedImages): whoever
    may create a DatabaseMigration could otherwise run any image as any ServiceAccount of its namespace."""
    job = spec.get("job") or {}
    account = str(job.get("serviceAccountName") or "")
    allowed = settings.allowed_service_accounts
    if allowed and (account or "default") not in allowed:
        named = f'"{account}"' if account else 'unset (the namespace\'s "default")'
        return stalled(
            Reason.SERVICE_ACCOUNT_NOT_ALLOWED,
            f"spec.job.serviceAccountName {named} is not in the operator's allowlist "
            f"({', '.join(allowed)}); ask your platform team. No Job is created.",
        )
    image = str(spec.get("image") or "")
    prefixes = settings.allowed_images
    if prefixes and not image.startswith(prefixes):
        return stalled(
            Reason.IMAGE_NOT_ALLOWED,
            f'spec.image "{image}" does not start with one of the operator\'s allowed prefixes '
            f"({', '.join(prefixes)}); ask your platform team. No Job is created.",
        )
    return None


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


def _merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    patch: dict[str, Any] = {k: None for k in old if k not in new}
    for key, value in new.items():
        if old.get(key) != value:
            patch[key] = value
    return patch


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


def decide(
    cr: dict[str, Any],
    jobs: list[dict[str, Any]],
    pods: list[dict[str, Any]],
    now: datetime,
    settings: Settings,
    job_events: Mapping[str, list[dict[str, Any]]] | None = None,
) -> Plan:
    """What to do now for one DatabaseMigration, given everything observed about it:
    observe → results → record → next step (approval before a new run) → history → plan.

    ``job_events``: the Events of the Jobs :func:`jobs_awaiting_pods` named, by Job uid.
    """
    meta = cr.get("metadata") or {}
    spec = cr.get("spec") or {}
    old = dict(cr.get("status") or {})
    old_run = dict(old.get("lastRun") or {})
    plan_jobs = [job for job in jobs if j.is_plan_job(job)]  # they compute a plan, they migrate nothing
    jobs = [job for job in jobs if not j.is_plan_job(job)]
    seen = _observe(cr, jobs, pods, old_run)
    results, kept = _results(seen, pods, old_run, settings)
    hash_ = j.run_hash(cr)
    new, events = _record(old, seen, results, kept, settings, (hash_, identity.ref(spec)))
    step = _next_step(cr, seen, plan_jobs, pods, results, new, hash_, job_events or {}, now, settings)
    deleting = bool(meta.get("deletionTimestamp"))
    held = c.RUN_FINALIZER in (meta.get("finalizers") or [])
    hold = holds_deletion(seen, pods, job_events or {}, now, settings, deleting=deleting) or (
        not deleting and any(isinstance(a, CreateJob) and not j.is_plan_job(a.manifest) for a in step.actions)
    )
    if deleting and not hold:
        return _let_go(cr, new, results, events, held, now)
    if deleting:
        step = _deleting_step(step)
    events.extend(step.events)
    _warn_on_stall(old, step.verdict, events)
    actions = [
        *step.actions,
        *_history(spec, seen, step.actions, j.job_name(str(meta.get("name", "")), hash_), settings),
        *_plan_history(cr, plan_jobs, hash_),
    ]
    if deleting:  # a resource being deleted starts no run and deletes nothing: its Jobs go with it
        actions = [a for a in actions if not isinstance(a, CreateJob | DeleteJob)]

    generation = int(meta.get("generation") or 0)
    new["observedGeneration"] = generation
    new["phase"] = step.phase.value
    new["conditions"] = conditions(step.verdict, old.get("conditions"), generation, now)
    patch = _merge_patch(old, new)
    # Order: act first, then record; events last (they describe what happened). Except the very first
    # status: kstatus readers (kubectl wait, Argo CD, Flux) take a resource without conditions for done,
    # so Ready=False / Reconciling=True go out before anything else (creating a Job may be slow, or fail).
    if patch and not old.get("conditions"):
        actions.insert(0, PatchStatus(patch))
    elif patch:
        actions.append(PatchStatus(patch))
    if hold and not held and not deleting:
        # Before the Job exists (the API refuses a new finalizer once deletion has begun).
        first_job = next((i for i, a in enumerate(actions) if isinstance(a, CreateJob)), 0)
        actions.insert(first_job, HoldDeletion(True))
    actions.extend(events)
    if held and not hold:
        actions.append(HoldDeletion(False))
    recheck = (step.recheck_at - now).total_seconds() + 1 if step.recheck_at is not None else None
    return Plan(actions=actions, status=new, recheck_after=recheck)


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
        jpods = _pods_of(job, pods)
        if not _never_started(jpods):
            return True
        stuck = next((p for p in (pod_problem(pod, now, settings) for pod in jpods) if p), None)
        if not jpods:
            stuck = _pod_create_problem(job_events.get(str(job["metadata"].get("uid")), []))
        if stuck is None or stuck.until is not None:
            return True  # its container may start any moment
    return False


def _let_go(
    cr: dict[str, Any],
    new: dict[str, Any],
    results: dict[str, Result],
    events: list[EmitEvent],
    held: bool,
    now: datetime,
) -> Plan:
    """Deleted, and nothing runs any more (or nothing that ever started and could): garbage
    collection may go on. A run that ended meanwhile is recorded first (its status, counted in the
    metrics, and its Event); nothing else is written for a resource about to vanish."""
    meta, old = cr.get("metadata") or {}, dict(cr.get("status") or {})
    run = dict(new.get("lastRun") or {})
    actions: list[Action] = []
    if held and run.get("outcome") not in (None, "", RUNNING) and run != old.get("lastRun"):
        hint = RERUN_HINT.format(name=meta.get("name", ""), namespace=meta.get("namespace", ""))
        done = _done_step(run, results, hint)
        generation = int(meta.get("generation") or 0)
        new["phase"] = done.phase.value
        new["conditions"] = conditions(done.verdict, old.get("conditions"), generation, now)
        actions.append(PatchStatus(_merge_patch(old, new)))
    else:
        new = old
    return Plan(actions=[*actions, *events, *([HoldDeletion(False)] if held else [])], status=new)


def _deleting_step(step: Step) -> Step:
    """The resource is being deleted while its run goes on: say why it is still there."""
    why = (
        " The DatabaseMigration is being deleted: it goes once this run ends (a running migration is "
        "never interrupted)."
    )
    message = step.verdict.message.rstrip(".") + "." + why
    return Step(step.phase, replace(step.verdict, message=message), recheck_at=step.recheck_at)


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
        and _owned(job, uid, c.KIND)
        and not (job.get("metadata") or {}).get("deletionTimestamp")
    ]
    ours.sort(key=_order_key, reverse=True)
    done = {job["metadata"]["name"]: _finished(job, _pods_of(job, pods), old_run) for job in ours}
    active = [job for job in ours if done[job["metadata"]["name"]] is None]
    finished = [job for job in ours if done[job["metadata"]["name"]] is not None]
    closing = [job for job in finished if _job_verdict(job) is None]
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
        fresh = read_result(job, _pods_of(job, pods), settings)
        if _keeps_record(old_run, job, fresh):
            results[jname] = _result_of_record(old_run)
            kept.add(jname)
        else:
            results[jname] = fresh
    return results, kept


def _record(
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


def _next_step(
    cr: dict[str, Any],
    seen: Observed,
    plan_jobs: list[dict[str, Any]],
    pods: list[dict[str, Any]],
    results: dict[str, Result],
    new: dict[str, Any],
    hash_: str,
    job_events: Mapping[str, list[dict[str, Any]]],
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
        events_of_job = job_events.get(str(job["metadata"].get("uid")), [])
        return _active_step(job, _pods_of(job, pods), events_of_job, desired_name, old, now, settings)
    if problem:
        return Step(Phase.FAILED, stalled(Reason.INVALID_SPEC, problem))
    if run.get("runHash") == hash_ and run.get("outcome") not in (None, "", RUNNING):
        return _done_step(
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
    gate = _approval_step(cr, plan_jobs, pods, new, hash_, now, settings)
    if isinstance(gate, Step):
        return gate
    return _new_run_step(cr, new, hash_, desired_name, now, settings, approved=gate)


def _done_step(run: dict[str, Any], results: dict[str, Result], hint: str) -> Step:
    """The desired run is done: its verdict stands until the spec changes or a rerun is asked for."""
    if run.get("outcome") == Outcome.SUCCEEDED.value:
        return Step(Phase.SUCCEEDED, ready(run.get("message") or "Applied"))
    found = results.get(str(run.get("job")))
    reason = found.reason if found else _reason_of(str(run.get("outcome")))
    return Step(
        Phase.FAILED,
        stalled(
            reason,
            f"Job {run.get('job')} failed: {run.get('message') or reason.value}. Fix the cause, then "
            f"change the spec or ask for a rerun: {hint}",
        ),
    )


def _approval_step(
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
        jpods = _pods_of(job, pods)
        if _finished(job, jpods) is None:
            stuck = next((p for p in (pod_problem(pod, now, settings) for pod in jpods) if p), None)
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
        status = _container_status(pod)
        if ((status.get("state") or {}).get("terminated") or {}).get("exitCode") == 0:
            return str(status.get("imageID") or "")
    return ""


def _plan_history(cr: dict[str, Any], plan_jobs: list[dict[str, Any]], hash_: str) -> list[Action]:
    """Plan Jobs of runs no longer desired go (a plan is read-only: deleting one loses nothing);
    the current run's plan Job stays, its log holds the whole SQL."""
    keep = j.plan_job_name(str((cr.get("metadata") or {}).get("name", "")), hash_)
    return [
        DeleteJob(job["metadata"]["name"], "plan of a run that is no longer desired")
        for job in plan_jobs
        if job["metadata"]["name"] != keep and not job["metadata"].get("deletionTimestamp")
    ]


def _new_run_step(
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


def _warn_on_stall(old: dict[str, Any], verdict: Verdict, events: list[EmitEvent]) -> None:
    """Stalled transitions are worth a Warning even when no Job ended (stuck Pod, refused downgrade)."""
    old_stalled = [cond for cond in old.get("conditions") or [] if cond.get("type") == c.STALLED]
    was = old_stalled[0] if old_stalled else {}
    repeated = was.get("status") == "True" and was.get("reason") == verdict.reason.value
    if verdict.kind == "stalled" and not repeated and not any(e.type == "Warning" for e in events):
        events.append(EmitEvent("Warning", verdict.reason.value, verdict.message))


def _history(
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


@dataclass
class Step:
    """What one branch of :func:`decide` concluded."""

    phase: Phase
    verdict: Verdict
    actions: list[Action] = field(default_factory=list)
    events: list[EmitEvent] = field(default_factory=list)
    recheck_at: datetime | None = None


def _active_step(
    job: dict[str, Any],
    jpods: list[dict[str, Any]],
    job_events: list[dict[str, Any]],
    desired_name: str,
    old: dict[str, Any],
    now: datetime,
    settings: Settings,
) -> Step:
    """A Job is under way: replace it if it never started and is outdated, else report how it fares."""
    jname = job["metadata"]["name"]
    stuck = next((p for p in (pod_problem(pod, now, settings) for pod in jpods) if p), None)
    if not jpods:
        stuck = _pod_create_problem(job_events)
    superseded = jname != desired_name
    under_way = Phase.RUNNING if _has_run(job, jpods, old) else Phase.PENDING
    if superseded and stuck and _never_started(jpods):
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
    created = _parse_time((job.get("metadata") or {}).get("creationTimestamp"))
    grace_ends = created + timedelta(seconds=settings.pod_create_grace_seconds) if created else None
    return Step(
        under_way,
        progressing(
            Reason.JOB_RUNNING,
            f"Job {jname} is running the migrations (attempt {attempts} "
            f"of {int((job.get('spec') or {}).get('backoffLimit', 0)) + 1})",
        ),
        # Still no Pod when the grace ends? Then its Events are read (no watch event says so).
        recheck_at=grace_ends if not jpods and grace_ends and grace_ends > now else None,
    )


def _reason_of(outcome: str) -> Reason:
    try:
        return OUTCOME_REASONS[Outcome(outcome)]
    except ValueError:
        try:
            return Reason(outcome)
        except ValueError:
            return Reason.JOB_FAILED


__all__ = [
    "Action",
    "CreateJob",
    "DeleteJob",
    "EmitEvent",
    "HoldDeletion",
    "PatchStatus",
    "Plan",
    "decide",
    "timestamp",
]
