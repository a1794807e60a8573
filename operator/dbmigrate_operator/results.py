"""A finished run's result, read from its Job, its Pod's termination state and the runner's report
(or, once the Pod is gone, from what status.lastRun recorded for that very Job).

Why a module of its own: the Job -> operator report contract (dbmigrate_runner.report) is read here
only; change how a run's outcome, reason and message are told here. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dbmigrate_operator import constants as c
from dbmigrate_operator.jobstate import RUNNING, container_status, job_condition, job_verdict
from dbmigrate_operator.settings import Settings
from dbmigrate_operator.status import OUTCOME_REASONS, Reason, truncate
from dbmigrate_runner.report import INTERRUPTED, Outcome, Report, ReportError, decode


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
    done = finished_as(job, pods)
    last = _last_terminated(pods, done)
    report: Report | None = None
    decode_error = ""
    if last.get("message"):
        try:
            report = decode(str(last["message"]))
        except ReportError as exc:
            decode_error = str(exc)
    cond = job_condition(job, done or "")
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


def finished_as(
    job: dict[str, Any], pods: list[dict[str, Any]], old_run: dict[str, Any] | None = None
) -> str | None:
    """'Complete' or 'Failed' as the Job controller says, or 'Complete' as soon as the result is final.

    A success is final once its Pod reports it (or status.lastRun already recorded it for this very Job,
    should the Pod vanish before the Job controller counts it). Failures wait for the Job's verdict:
    backoffLimit and podFailurePolicy decide whether another attempt follows.
    """
    verdict = job_verdict(job)
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


def _succeeded_state(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The terminated state of a container that exited 0 with a readable Succeeded report, if any.

    Our Jobs run one Pod (completions 1, restartPolicy Never), so such a Pod decides the Job: the Job
    controller's Complete follows up to a second later (it batches Pod updates), and nothing can undo it.
    """
    for pod in pods:
        state = (container_status(pod).get("state") or {}).get("terminated") or {}
        if state.get("exitCode") == 0 and state.get("message"):
            try:
                if decode(str(state["message"])).ok:
                    return dict(state)
            except ReportError:
                continue
    return None


def _last_terminated(pods: list[dict[str, Any]], done: str | None) -> dict[str, Any]:
    """The terminated state that tells the run's result: the newest (a success first, once Complete)."""
    terminated = []
    for pod in pods:
        state = (container_status(pod).get("state") or {}).get("terminated")
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


def keeps_record(old_run: dict[str, Any], job: dict[str, Any], fresh: Result) -> bool:
    """Does the outcome status.lastRun recorded for this Job stand against what can be read now?

    A Pod's result always wins (it says more). Without the Pod, the record stands, unless the Job's own
    verdict, its deadline, contradicts it (an older operator recorded the runner's SIGTERM instead).
    """
    if fresh.from_pod or not recorded_run(old_run, job):
        return False
    return fresh.reason is not Reason.DEADLINE_EXCEEDED or old_run.get("outcome") == fresh.outcome


def result_of_record(run: dict[str, Any]) -> Result:
    outcome = str(run.get("outcome"))
    return Result(outcome, reason_of(outcome), None, str(run.get("message") or ""), run.get("completedAt"))


def reason_of(outcome: str) -> Reason:
    try:
        return OUTCOME_REASONS[Outcome(outcome)]
    except ValueError:
        try:
            return Reason(outcome)
        except ValueError:
            return Reason.JOB_FAILED
