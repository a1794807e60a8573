"""The decision logic as pure functions: (CR, Jobs, Pods, now) → actions and status."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from dbmigrate_operator import constants as c
from dbmigrate_operator.actions import CreateJob, DeleteJob, EmitEvent, HoldDeletion, PatchStatus, Plan
from dbmigrate_operator.diagnosis import jobs_awaiting_pods
from dbmigrate_operator.jobs import job_name, run_hash
from dbmigrate_operator.reconcile import decide
from dbmigrate_operator.settings import Settings
from dbmigrate_runner.report import INTERRUPTED, Outcome
from tests.operator.builders import (
    T0,
    admit,
    completed,
    failed,
    failure_report,
    make_cr,
    merge,
    pod_for,
    running_pod,
    started,
    success_report,
    terminated_pod,
    ts,
    unschedulable_pod,
    waiting_pod,
)

S = Settings()
ROOT_USER = (
    'container has runAsNonRoot and image will run as root (pod: "shop-db-x_shop", container: migrate)'
)
V1, V2, V3 = "0_20260101000000_init", "1_20260102000000_add_bio", "2_20260103000000_add_index"


def cond(plan_or_status: Plan | dict[str, Any], type_: str) -> dict[str, Any]:
    status = plan_or_status.status if isinstance(plan_or_status, Plan) else plan_or_status
    return next(x for x in status["conditions"] if x["type"] == type_)


def true_condition(plan: Plan) -> dict[str, Any]:
    trues = [x for x in plan.status["conditions"] if x["status"] == "True"]
    assert len(trues) == 1, plan.status["conditions"]
    return trues[0]


def apply(cr: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """The CR after its status patch (and finalizer change) was applied by the API server."""
    out: dict[str, Any] = dict(cr)
    for action in plan.of(PatchStatus):
        out["status"] = merge(out.get("status") or {}, action.patch)
    for action in plan.of(HoldDeletion):
        meta = out["metadata"] = dict(out["metadata"])
        others = [f for f in meta.get("finalizers") or [] if f != c.RUN_FINALIZER]
        meta["finalizers"] = [*others, c.RUN_FINALIZER] if action.hold else others
    return out


def settle(
    cr: dict[str, Any], jobs: list[dict[str, Any]], pods: list[dict[str, Any]], now: Any = T0
) -> tuple[dict[str, Any], Plan]:
    """Decide, apply the status, decide again: the second pass must change nothing (idempotence)."""
    plan = decide(cr, jobs, pods, now, S)
    cr = apply(cr, plan)
    again = decide(cr, jobs, pods, now + timedelta(seconds=30), S)
    assert again.actions == [a for a in again.actions if isinstance(a, DeleteJob)] == [], again.actions
    return cr, plan


def first_job(cr: dict[str, Any]) -> dict[str, Any]:
    plan = decide(cr, [], [], T0, S)
    (create,) = plan.of(CreateJob)
    return admit(create.manifest, T0)


# ------------------------------------------------------------------ the happy path


def test_new_cr_creates_one_job_and_says_so() -> None:
    cr = make_cr()
    plan = decide(cr, [], [], T0, S)
    (create,) = plan.of(CreateJob)
    assert create.manifest["metadata"]["name"] == job_name("shop-db", run_hash(cr))
    assert plan.status["phase"] == "Pending"
    assert true_condition(plan)["type"] == c.RECONCILING
    assert true_condition(plan)["reason"] == "JobCreated"
    assert all(x["observedGeneration"] == 1 for x in plan.status["conditions"])
    assert [e.reason for e in plan.of(EmitEvent)] == ["RunStarted"]
    # the created Job is visible next time: no second Job, whatever wakes us up
    cr = apply(cr, plan)
    job = admit(create.manifest, T0)
    again = decide(cr, [job], [], T0 + timedelta(seconds=1), S)
    assert again.of(CreateJob) == []


def test_a_new_resource_is_first_marked_reconciling_before_anything_else() -> None:
    """kstatus readers take a resource without a Ready condition for done: the first write says not yet."""
    plan = decide(make_cr(), [], [], T0, S)
    first = plan.actions[0]
    assert isinstance(first, PatchStatus), plan.actions
    conditions = {x["type"]: x["status"] for x in first.patch["conditions"]}
    assert conditions == {c.READY: "False", c.RECONCILING: "True", c.STALLED: "False"}
    assert first.patch["observedGeneration"] == 1
    assert len(plan.of(CreateJob)) == 1  # the Job comes right after


def test_running_job_is_reported_and_repeats_are_silent() -> None:
    cr = make_cr()
    job = started(first_job(cr), T0)
    cr, plan = settle(cr, [job], [running_pod(job, T0)])
    assert plan.status["phase"] == "Running"
    assert true_condition(plan)["reason"] == "JobRunning"
    assert plan.status["lastRun"]["outcome"] == "Running"
    assert plan.of(CreateJob) == []


PHASE_ORDER = {"Pending": 0, "Running": 1, "Succeeded": 2, "Failed": 2}


@pytest.mark.parametrize("exit_code", [0, 5])
def test_phase_never_goes_back_while_the_job_controller_catches_up(exit_code: int) -> None:
    """The container ended but the Job has no Complete/Failed condition yet: still Running, not Pending."""
    cr = make_cr()
    job = started(first_job(cr), T0)
    end = T0 + timedelta(minutes=1)
    if exit_code:
        message = failure_report(Outcome.MIGRATION_FAILED, "boom")
        done = failed(job, end, reason="PodFailurePolicy", failures=1)
    else:
        message = success_report([V1])
        done = completed(job, end)
    seen = []
    for jobs, pods in [
        ([job], []),
        ([job], [running_pod(job, T0)]),
        ([job], [terminated_pod(job, exit_code, message, end)]),  # the Job controller has not caught up
        ([done], [terminated_pod(done, exit_code, message, end)]),
    ]:
        cr, plan = settle(cr, jobs, pods, now=end)
        seen.append(plan.status["phase"])
    # a success report with exit code 0 is final at once; a failure waits for the Job's verdict (retries)
    expected = (
        ["Pending", "Running", "Running", "Failed"]
        if exit_code
        else ["Pending", "Running"] + 2 * ["Succeeded"]
    )
    assert seen == expected
    assert [PHASE_ORDER[p] for p in seen] == sorted(PHASE_ORDER[p] for p in seen)


def test_a_run_whose_container_ended_unseen_is_running() -> None:
    """A fast failing run: the first Pod state the operator sees is already terminated."""
    cr = make_cr()
    job = started(first_job(cr), T0)
    pod = terminated_pod(job, 3, failure_report(Outcome.DATABASE_UNREACHABLE, "refused"), T0)
    _, plan = settle(cr, [job], [pod])
    assert plan.status["phase"] == "Running"
    assert true_condition(plan)["reason"] == "JobRunning"
    assert plan.status["lastRun"]["outcome"] == "Running"


def test_success_is_final_once_the_pod_reports_it_without_waiting_for_the_job_controller() -> None:
    """restartPolicy Never, completions 1: exit code 0 with a Succeeded report decides the Job."""
    cr = make_cr()
    job = started(first_job(cr), T0)
    cr, _ = settle(cr, [job], [running_pod(job, T0)])
    end = T0 + timedelta(seconds=20)
    pod = terminated_pod(job, 0, success_report([V1, V2]), end)
    cr, plan = settle(cr, [job], [pod], now=end)  # the Job has no Complete condition yet
    assert plan.status["phase"] == "Succeeded"
    assert true_condition(plan)["reason"] == "Applied"
    assert plan.status["currentVersion"] == f"models:{V2}"
    run = plan.status["lastRun"]
    assert (run["outcome"], run["completedAt"]) == ("Succeeded", "2026-01-01T12:00:20Z")
    assert [(e.type, e.reason) for e in plan.of(EmitEvent)] == [("Normal", "Applied")]
    assert plan.of(CreateJob) == plan.of(DeleteJob) == []
    # the Job controller catches up: nothing to write, no second event
    done = completed(job, end + timedelta(seconds=1))
    done["status"]["startTime"] = job["status"]["startTime"]  # the same Job, now closed
    cr, later = settle(cr, [done], [terminated_pod(done, 0, success_report([V1, V2]), end)], now=end)
    assert later.actions == []
    assert later.status == plan.status


def test_a_run_that_waited_for_table_locks_names_the_last_blocker_in_ready_and_the_event() -> None:
    from dbmigrate_runner.report import LockWaits, decode, encode

    cr = make_cr()
    job = started(first_job(cr), T0)
    report = decode(success_report([V1, V2]))
    blocker = "a lock on public.review held by pid 4711 (app 'reporting', idle in transaction for 12 min)"
    report.locking = LockWaits(
        timeout_ms=3000, timeouts=3, attempts=3, retries=20, migration=f"models:{V2}", blocker=blocker
    )
    pod = terminated_pod(job, 0, encode(report), T0 + timedelta(seconds=20))
    _, plan = settle(cr, [job], [pod], now=T0 + timedelta(seconds=20))
    ready = cond(plan, c.READY)
    assert ready["status"] == "True"
    assert f"models:{V2} waited for a table lock 3 time(s), last for {blocker}" in ready["message"]
    (event,) = plan.of(EmitEvent)
    assert blocker in event.message


def test_an_early_success_sticks_when_the_pod_vanishes_before_the_job_controller_counts_it() -> None:
    cr = make_cr()
    job = started(first_job(cr), T0)
    cr, before = settle(cr, [job], [terminated_pod(job, 0, success_report([V1]), T0)])
    assert before.status["phase"] == "Succeeded"
    cr, plan = settle(cr, [job], [])
    assert plan.actions == []
    assert plan.status["phase"] == "Succeeded"


@pytest.mark.parametrize(
    "message",
    [None, "not json", failure_report(Outcome.MIGRATION_FAILED, "boom")],
    ids=["no-report", "garbage", "failure-report"],
)
def test_exit_code_zero_without_a_success_report_waits_for_the_job(message: str | None) -> None:
    cr = make_cr()
    job = started(first_job(cr), T0)
    _, plan = settle(cr, [job], [terminated_pod(job, 0, message, T0)])
    assert plan.status["phase"] == "Running"
    assert plan.status["lastRun"]["outcome"] == "Running"


def test_a_spec_change_during_an_early_success_waits_for_the_job_before_the_next_run() -> None:
    """Exactly one Job per CR at a time: the next Job only once the Job controller has closed this one."""
    cr = make_cr()
    job = started(first_job(cr), T0)
    pod = terminated_pod(job, 0, success_report([V1]), T0 + timedelta(seconds=20))
    changed = make_cr(
        generation=2, image="registry.example.com/shop-migrations:1.5.0", status=cr.get("status")
    )
    changed, plan = settle(changed, [job], [pod])
    assert plan.of(CreateJob) == plan.of(DeleteJob) == []
    assert true_condition(plan)["reason"] == "WaitingForPreviousRun"
    assert plan.status["phase"] == "Running"
    assert plan.status["lastRun"]["outcome"] == "Succeeded"
    assert plan.status["currentVersion"] == f"models:{V1}"
    done = completed(job, T0 + timedelta(seconds=21))
    plan = decide(changed, [done], [pod], T0 + timedelta(seconds=21), S)
    (create,) = plan.of(CreateJob)
    assert create.manifest["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":1.5.0")


def test_a_retry_waiting_for_its_pod_stays_running() -> None:
    """Attempt 1 failed (retryable), attempt 2's Pod is not running yet: the run is still in progress."""
    cr = make_cr()
    job = started(first_job(cr), T0)
    cr, plan = settle(cr, [job], [running_pod(job, T0)])
    assert plan.status["phase"] == "Running"
    job["status"]["failed"] = 1
    first = terminated_pod(job, 2, failure_report(Outcome.DATABASE_UNREACHABLE, "refused"), T0)
    second = pod_for(job, "z9y8x", phase="Pending")
    for pods in ([first, second], [second]):  # the failed Pod may already be gone
        _, plan = settle(cr, [job], pods)
        assert plan.status["phase"] == "Running"
        assert "attempt 2 of 3" in true_condition(plan)["message"]


def test_an_evicted_attempt_does_not_send_the_run_back_to_pending() -> None:
    """An evicted Pod counts as no failure (podFailurePolicy Ignore) and may be gone: status remembers."""
    cr = make_cr()
    job = started(first_job(cr), T0)
    cr, plan = settle(cr, [job], [running_pod(job, T0)])
    assert plan.status["phase"] == "Running"
    _, plan = settle(cr, [job], [pod_for(job, "z9y8x", phase="Pending")])
    assert plan.status["phase"] == "Running"
    # a restarted operator reads the same status
    assert decide(make_cr(status=cr["status"]), [job], [], T0, S).status["phase"] == "Running"


def test_success_writes_versions_last_run_and_ready() -> None:
    cr = make_cr()
    job = completed(first_job(cr), T0 + timedelta(minutes=1))
    pod = terminated_pod(job, 0, success_report([V1, V2]), T0 + timedelta(minutes=1))
    cr, plan = settle(cr, [job], [pod])
    status = plan.status
    assert status["phase"] == "Succeeded"
    ready = cond(plan, c.READY)
    assert ready["status"] == "True"
    assert ready["reason"] == "Applied"
    assert ready["observedGeneration"] == 1
    assert cond(plan, c.STALLED)["status"] == "False"
    assert cond(plan, c.RECONCILING)["status"] == "False"
    assert status["currentVersion"] == f"models:{V2}"
    assert status["appliedVersions"] == [{"app": "models", "version": V1}, {"app": "models", "version": V2}]
    assert status["appliedCount"] == 2
    run = status["lastRun"]
    assert run["job"] == job["metadata"]["name"]
    assert run["outcome"] == "Succeeded"
    assert run["image"] == cr["spec"]["image"]
    assert run["applied"] == [f"models:{V1}", f"models:{V2}"]
    assert run["completedAt"]
    assert run["startedAt"]
    assert "Applied 2 migration(s)" in ready["message"]
    (event,) = plan.of(EmitEvent)
    assert (event.type, event.reason) == ("Normal", "Applied")


def test_applied_versions_are_capped_but_counted() -> None:
    versions = [f"{i}_2026010100000{i % 10}_m{i}" for i in range(80)]
    cr = make_cr()
    job = completed(first_job(cr), T0)
    plan = decide(cr, [job], [terminated_pod(job, 0, success_report(versions, applied=[]), T0)], T0, S)
    assert plan.status["appliedCount"] == 80
    assert len(plan.status["appliedVersions"]) == S.applied_versions_cap
    assert plan.status["appliedVersions"][-1]["version"] == versions[-1]
    assert plan.status["currentVersion"] == f"models:{versions[-1]}"


def test_restarted_operator_finds_the_finished_job_and_creates_no_duplicate() -> None:
    """Status still says Running (written before the restart); the Job finished meanwhile."""
    cr = make_cr()
    job = started(first_job(cr), T0)
    cr, _ = settle(cr, [job], [running_pod(job, T0)])
    done = completed(job, T0 + timedelta(minutes=2))
    pod = terminated_pod(done, 0, success_report([V1]), T0 + timedelta(minutes=2))
    cr, plan = settle(cr, [done], [pod], now=T0 + timedelta(minutes=5))
    assert plan.of(CreateJob) == []
    assert plan.status["phase"] == "Succeeded"
    assert plan.status["currentVersion"] == f"models:{V1}"


# ------------------------------------------------------------------ spec changes and reruns


def test_spec_change_while_running_waits_then_starts_the_new_run() -> None:
    cr = make_cr()
    job = started(first_job(cr), T0)
    cr = make_cr(generation=2, image="registry.example.com/shop-migrations:1.5.0", status=cr.get("status"))
    plan = decide(cr, [job], [running_pod(job, T0)], T0, S)
    assert plan.of(CreateJob) == []
    assert plan.of(DeleteJob) == []
    assert true_condition(plan)["reason"] == "WaitingForPreviousRun"
    assert plan.status["observedGeneration"] == 2
    assert cond(plan, c.READY)["status"] == "False"
    cr = apply(cr, plan)
    # the old run ends: its result is recorded and the new run starts
    done = completed(job, T0 + timedelta(minutes=1))
    pod = terminated_pod(done, 0, success_report([V1]), T0 + timedelta(minutes=1))
    plan = decide(cr, [done], [pod], T0 + timedelta(minutes=1), S)
    (create,) = plan.of(CreateJob)
    assert create.manifest["metadata"]["name"] != job["metadata"]["name"]
    assert create.manifest["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":1.5.0")
    assert plan.status["currentVersion"] == f"models:{V1}"
    assert plan.status["lastRun"]["job"] == job["metadata"]["name"]


def test_superseded_job_that_never_started_is_replaced() -> None:
    cr = make_cr(image="registry.example.com/typo:1")
    job = started(first_job(cr), T0)
    pod = waiting_pod(job, "ImagePullBackOff", 'Back-off pulling image "registry.example.com/typo:1"')
    fixed = make_cr(generation=2, image="registry.example.com/shop-migrations:1.4.2")
    plan = decide(fixed, [job], [pod], T0, S)
    assert [a.name for a in plan.of(DeleteJob)] == [job["metadata"]["name"]]
    assert plan.of(CreateJob) == []  # the next pass, once the Job is gone
    assert true_condition(plan)["reason"] == "ReplacingJob"


def test_rerun_annotation_starts_a_new_job_after_a_failure() -> None:
    cr = make_cr()
    job = failed(first_job(cr), T0)
    pod = terminated_pod(job, 5, failure_report(Outcome.MIGRATION_FAILED, "boom", kind="X"), T0)
    cr, _ = settle(cr, [job], [pod])
    cr["metadata"]["annotations"] = {c.RERUN_ANNOTATION: "1767225600"}
    plan = decide(cr, [job], [pod], T0 + timedelta(minutes=1), S)
    (create,) = plan.of(CreateJob)
    assert create.manifest["metadata"]["name"] != job["metadata"]["name"]


def test_going_back_to_an_earlier_spec_reruns_instead_of_reusing_a_stale_result() -> None:
    cr_a = make_cr()
    job_a = completed(first_job(cr_a), T0)
    pod_a = terminated_pod(job_a, 0, success_report([V1]), T0)
    cr_b = make_cr(
        generation=2, image="registry.example.com/shop-migrations:2.0.0", status=cr_a.get("status")
    )
    plan = decide(cr_b, [job_a], [pod_a], T0, S)
    job_b = completed(
        admit(plan.of(CreateJob)[0].manifest, T0 + timedelta(minutes=1)), T0 + timedelta(minutes=2)
    )
    pod_b = terminated_pod(job_b, 0, success_report([V1, V2]), T0 + timedelta(minutes=2))
    cr_b, _ = settle(apply(cr_b, plan), [job_a, job_b], [pod_a, pod_b], now=T0 + timedelta(minutes=2))
    # back to A: A's old Job holds a result from before B; it is replaced, not reused
    cr_a2 = make_cr(generation=3, status=cr_b["status"])
    plan = decide(cr_a2, [job_a, job_b], [pod_a, pod_b], T0 + timedelta(minutes=3), S)
    assert [a.name for a in plan.of(DeleteJob)] == [job_a["metadata"]["name"]]
    assert plan.status["currentVersion"] == f"models:{V2}"  # what the newest run saw
    assert plan.status["phase"] != "Succeeded"


# ------------------------------------------------------------------ failures


def test_failed_migration_is_stalled_with_the_database_error_and_no_retry() -> None:
    cr = make_cr()
    job = failed(first_job(cr), T0, reason="PodFailurePolicy", failures=1)
    text = 'column "bio" of relation "user" already exists'
    pod = terminated_pod(
        job,
        5,
        failure_report(
            Outcome.MIGRATION_FAILED,
            text,
            versions=[V1],
            kind="DuplicateColumnError",
            migration=f"models:{V2}",
        ),
        T0,
    )
    cr, plan = settle(cr, [job], [pod])
    assert plan.status["phase"] == "Failed"
    stalled = cond(plan, c.STALLED)
    assert stalled["status"] == "True"
    assert stalled["reason"] == "MigrationFailed"
    assert text in stalled["message"]
    assert f"models:{V2}" in stalled["message"]
    assert (
        f'kubectl annotate dbm shop-db -n shop {c.RERUN_ANNOTATION}="$(date +%s)" --overwrite'
        in stalled["message"]
    )
    assert cond(plan, c.READY)["status"] == "False"
    assert cond(plan, c.RECONCILING)["status"] == "False"
    (event,) = plan.of(EmitEvent)
    assert (event.type, event.reason) == ("Warning", "MigrationFailed")
    assert text in event.message
    assert plan.status["currentVersion"] == f"models:{V1}"  # what the failed run left applied
    # settle() proved the second pass creates nothing: no hot retry loop


@pytest.mark.parametrize(
    ("outcome", "code", "reason"),
    [
        (Outcome.DATABASE_UNREACHABLE, 3, "DatabaseUnreachable"),
        (Outcome.LOCK_TIMEOUT, 4, "LockTimeout"),
        (Outcome.CONFIG_ERROR, 2, "ConfigError"),
        (Outcome.DOWNGRADE_REFUSED, 6, "DowngradeNotAllowed"),
        (Outcome.INTERNAL_ERROR, 1, "RunnerError"),
        (Outcome.LOCK_NOT_AVAILABLE, 7, "LockNotAvailable"),
    ],
)
def test_each_runner_outcome_has_its_reason(outcome: Outcome, code: int, reason: str) -> None:
    cr = make_cr()
    job = failed(first_job(cr), T0)
    pod = terminated_pod(job, code, failure_report(outcome, f"the {reason} text"), T0)
    _, plan = settle(cr, [job], [pod])
    stalled = cond(plan, c.STALLED)
    assert (stalled["status"], stalled["reason"]) == ("True", reason)
    assert f"the {reason} text" in stalled["message"]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("ConfigError", "ConfigError: DB_PORT (from the Secret) must be a port number"),
        ("InvalidPasswordError", "ConfigError: InvalidPasswordError: DB_PORT (from the Secret) must be"),
    ],
)
def test_a_kind_that_repeats_the_outcome_is_said_once(kind: str, expected: str) -> None:
    """Issue 18: status.lastRun.message and the Event read "ConfigError: ConfigError: ..."."""
    cr = make_cr()
    job = failed(first_job(cr), T0)
    text = "DB_PORT (from the Secret) must be a port number, 1 to 65535 (its value is not shown)"
    pod = terminated_pod(job, 2, failure_report(Outcome.CONFIG_ERROR, text, kind=kind), T0)
    plan = decide(cr, [job], [pod], T0, S)
    (event,) = plan.of(EmitEvent)
    for message in (cond(plan, c.STALLED)["message"], plan.status["lastRun"]["message"], event.message):
        assert expected in message
        assert "ConfigError: ConfigError" not in message


def test_long_database_errors_are_truncated() -> None:
    cr = make_cr()
    job = failed(first_job(cr), T0)
    pod = terminated_pod(job, 5, failure_report(Outcome.MIGRATION_FAILED, "x" * 1400), T0)
    plan = decide(cr, [job], [pod], T0, S)
    msg = cond(plan, c.STALLED)["message"]
    assert "x" * 1000 in msg
    assert "x" * 1100 not in msg
    assert "…" in msg


def test_deadline_exceeded() -> None:
    cr = make_cr()
    job = failed(first_job(cr), T0, reason="DeadlineExceeded")
    _, plan = settle(cr, [job], [])
    stalled = cond(plan, c.STALLED)
    assert stalled["reason"] == "DeadlineExceeded"
    assert "1800s" in stalled["message"]


def _interrupted_by_the_deadline(cr: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Job controller fails the Job (DeadlineExceeded), then stops its Pod: the runner reports SIGTERM."""
    job = failed(first_job(cr), T0, reason="DeadlineExceeded", failures=1)
    report = failure_report(
        Outcome.INTERNAL_ERROR, "interrupted by SIGTERM/SIGINT", versions=[V1], kind=INTERRUPTED
    )
    return job, terminated_pod(job, 1, report, T0 + timedelta(seconds=2))


def test_the_jobs_deadline_wins_over_the_interrupted_runners_report() -> None:
    cr = make_cr()
    job, pod = _interrupted_by_the_deadline(cr)
    cr, plan = settle(cr, [job], [pod])
    stalled = cond(plan, c.STALLED)
    assert (stalled["status"], stalled["reason"]) == ("True", "DeadlineExceeded")
    assert "activeDeadlineSeconds (1800s)" in stalled["message"]
    assert "SIGTERM" not in stalled["message"]
    assert plan.status["lastRun"]["outcome"] == "DeadlineExceeded"
    assert [e.reason for e in plan.of(EmitEvent)] == ["DeadlineExceeded"]
    # the verdict sticks once the Pod is gone
    cr, later = settle(cr, [job], [], now=T0 + timedelta(hours=1))
    assert later.actions == []
    assert cond(later, c.STALLED)["reason"] == "DeadlineExceeded"


def test_a_recorded_interruption_gives_way_to_the_jobs_deadline() -> None:
    """A lastRun that recorded the runner's SIGTERM (older operator) is corrected from the Job's verdict."""
    cr = make_cr()
    job, pod = _interrupted_by_the_deadline(cr)
    record = make_cr(status={"lastRun": {**decide(cr, [job], [pod], T0, S).status["lastRun"]}})
    record["status"]["lastRun"].update(
        outcome="InternalError", message="InternalError: interrupted by SIGTERM"
    )
    plan = decide(record, [job], [], T0 + timedelta(hours=1), S)
    assert cond(plan, c.STALLED)["reason"] == "DeadlineExceeded"
    assert plan.status["lastRun"]["outcome"] == "DeadlineExceeded"


def test_crash_without_report_names_the_container_state() -> None:
    cr = make_cr()
    job = failed(first_job(cr), T0)
    pod = terminated_pod(job, 139, None, T0, reason="Error")
    _, plan = settle(cr, [job], [pod])
    stalled = cond(plan, c.STALLED)
    assert stalled["reason"] == "RunnerError"
    assert "ended with Error (exit code 139)" in stalled["message"]


@pytest.mark.parametrize(("resources", "limit"), [(None, "512Mi"), ({"limits": {"memory": "2Gi"}}, "2Gi")])
def test_a_run_killed_for_its_memory_limit_says_so(resources: dict[str, Any] | None, limit: str) -> None:
    cr = make_cr(job={"resources": resources} if resources else {})
    job = failed(first_job(cr), T0)
    pod = terminated_pod(job, 137, None, T0, reason="OOMKilled")
    _, plan = settle(cr, [job], [pod])
    stalled = cond(plan, c.STALLED)
    assert stalled["reason"] == "OOMKilled"
    assert f"killed for exceeding its memory limit ({limit})" in stalled["message"]
    assert "raise spec.job.resources.limits.memory" in stalled["message"]
    assert plan.status["lastRun"]["outcome"] == "OOMKilled"


def test_garbage_termination_message_is_not_trusted() -> None:
    cr = make_cr()
    job = failed(first_job(cr), T0)
    pod = terminated_pod(job, 5, "Traceback (most recent call last): ...", T0)
    plan = decide(cr, [job], [pod], T0, S)
    stalled = cond(plan, c.STALLED)
    assert stalled["reason"] == "MigrationFailed"
    assert "not JSON" in stalled["message"]


# ------------------------------------------------------------------ results outlive their Pods


def _failed_migration(cr: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], str]:
    job = failed(first_job(cr), T0, reason="PodFailurePolicy", failures=1)
    text = 'relation "no_such_table" does not exist'
    report = failure_report(Outcome.MIGRATION_FAILED, text, versions=[V1], migration=f"models:{V2}")
    return job, terminated_pod(job, 5, report, T0), text


def test_failed_result_survives_its_pod() -> None:
    """Pod GC, a node drain: the Job alone would say JobFailed and lose the database's words."""
    cr = make_cr()
    job, pod, text = _failed_migration(cr)
    cr, before = settle(cr, [job], [pod])
    assert cond(before, c.STALLED)["reason"] == "MigrationFailed"
    later = T0 + timedelta(hours=1)
    cr, plan = settle(cr, [job], [], now=later)  # the Pod is gone
    assert plan.actions == []  # nothing re-learned: no status write, no new Warning, no Job
    assert plan.status == before.status
    stalled = cond(plan, c.STALLED)
    assert (stalled["status"], stalled["reason"]) == ("True", "MigrationFailed")
    assert text in stalled["message"]
    assert plan.status["lastRun"]["outcome"] == "MigrationFailed"
    assert plan.status["currentVersion"] == f"models:{V1}"
    # A restarted operator has nothing but the API's objects; status is the record, so it agrees.
    restarted = decide(make_cr(status=cr["status"]), [job], [], later + timedelta(minutes=5), S)
    assert restarted.actions == []
    assert cond(restarted, c.STALLED)["reason"] == "MigrationFailed"


def test_succeeded_result_and_versions_survive_the_pod() -> None:
    cr = make_cr()
    old = completed(
        admit(
            decide(make_cr(annotations={c.RERUN_ANNOTATION: "0"}), [], [], T0, S).of(CreateJob)[0].manifest,
            T0,
        ),
        T0 + timedelta(minutes=1),
    )
    old_pod = terminated_pod(old, 0, success_report([V1]), T0 + timedelta(minutes=1))  # still around
    job = completed(admit(first_job(cr), T0 + timedelta(hours=1)), T0 + timedelta(hours=1, minutes=1))
    pod = terminated_pod(job, 0, success_report([V1, V2, V3]), T0 + timedelta(hours=1, minutes=1), "x9y8z")
    cr, before = settle(cr, [old, job], [old_pod, pod])
    assert before.status["currentVersion"] == f"models:{V3}"
    cr, plan = settle(cr, [old, job], [old_pod], now=T0 + timedelta(days=1))  # the newest run's Pod is gone
    assert plan.actions == []
    assert plan.status == before.status  # not the older run's V1, not "left no report"
    assert true_condition(plan)["type"] == c.READY
    assert plan.status["appliedVersions"][-1] == {"app": "models", "version": V3}
    assert plan.status["lastRun"]["applied"] == [f"models:{v}" for v in (V1, V2, V3)]
    restarted = decide(make_cr(status=cr["status"]), [old, job], [old_pod], T0 + timedelta(days=2), S)
    assert restarted.actions == []
    assert restarted.status == before.status


def test_a_record_of_another_job_instance_is_not_borrowed() -> None:
    """Same name, but the Job was re-created (it started at another time): the record is not its own."""
    cr = make_cr()
    job, pod, _ = _failed_migration(cr)
    cr, _ = settle(cr, [job], [pod])
    again = failed(job, T0 + timedelta(hours=2))
    plan = decide(cr, [again], [], T0 + timedelta(hours=3), S)
    assert cond(plan, c.STALLED)["reason"] == "JobFailed"


def test_a_pod_seen_later_still_improves_a_result_read_from_the_job_alone() -> None:
    cr = make_cr()
    job = failed(first_job(cr), T0)
    cr, plan = settle(cr, [job], [])  # the Job failed before its Pod's state was seen
    assert cond(plan, c.STALLED)["reason"] == "JobFailed"
    pod = terminated_pod(job, 137, None, T0, reason="OOMKilled")
    cr, plan = settle(cr, [job], [pod])
    assert cond(plan, c.STALLED)["reason"] == "OOMKilled"
    assert "memory limit" in cond(plan, c.STALLED)["message"]


# ------------------------------------------------------------------ stuck pods, surfaced at once


@pytest.mark.parametrize(
    ("pod_fn", "reason", "fragment"),
    [
        (
            lambda job: waiting_pod(job, "CreateContainerConfigError", 'secret "shop-db" not found'),
            "SecretNotFound",
            'secret "shop-db" not found',
        ),
        (
            lambda job: waiting_pod(
                job, "CreateContainerConfigError", "couldn't find key url in Secret shop/shop-db"
            ),
            "SecretNotFound",
            "couldn't find key url in Secret shop/shop-db",
        ),
        (
            lambda job: waiting_pod(
                job,
                "CreateContainerConfigError",
                ROOT_USER,
            ),
            "ContainerConfigError",
            f"the kubelet refused the migration container's configuration: {ROOT_USER}",
        ),
        (
            lambda job: waiting_pod(job, "CreateContainerConfigError", 'configmap "tuning" not found'),
            "ContainerConfigError",
            'configmap "tuning" not found',
        ),
        (
            lambda job: waiting_pod(
                job, "ErrImagePull", 'failed to pull image "registry.example.com/x:1": not found'
            ),
            "ImagePullFailed",
            "registry.example.com/x:1",
        ),
        (
            lambda job: waiting_pod(
                job, "ImagePullBackOff", 'Back-off pulling image "registry.example.com/x:1"'
            ),
            "ImagePullFailed",
            "Back-off pulling image",
        ),
        (
            lambda job: unschedulable_pod(
                job,
                "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity",
                since=T0 - timedelta(minutes=10),  # longer than the grace for a cluster autoscaler
            ),
            "Unschedulable",
            "didn't match Pod's node affinity",
        ),
    ],
)
def test_stuck_pods_are_stalled_immediately(pod_fn: Any, reason: str, fragment: str) -> None:
    cr = make_cr()
    job = started(first_job(cr), T0)
    cr, plan = settle(cr, [job], [pod_fn(job)])
    assert plan.status["phase"] == "Pending"
    stalled = cond(plan, c.STALLED)
    assert (stalled["status"], stalled["reason"]) == ("True", reason)
    assert fragment in stalled["message"]
    assert cond(plan, c.RECONCILING)["status"] == "False"
    (event,) = plan.of(EmitEvent)
    assert (event.type, event.reason) == ("Warning", reason)
    assert plan.of(CreateJob) == []
    assert plan.of(DeleteJob) == []
    # the Secret appears, the Pod runs: the condition clears by itself
    plan = decide(cr, [job], [running_pod(job, T0)], T0 + timedelta(minutes=1), S)
    assert true_condition(plan)["reason"] == "JobRunning"


NO_NODE = "0/3 nodes are available: 3 Insufficient memory. preemption: 0/3 nodes are available"


def test_an_unschedulable_pod_waits_for_a_node_before_it_is_stalled() -> None:
    """Under a cluster autoscaler, Unschedulable is the normal first step of a scale-up."""
    cr = make_cr()
    job = started(first_job(cr), T0)
    pod = unschedulable_pod(job, NO_NODE, since=T0)
    grace = S.unschedulable_grace_seconds
    assert grace == 300
    cr, plan = settle(cr, [job], [pod], now=T0 + timedelta(seconds=60))
    assert (plan.status["phase"], true_condition(plan)["type"]) == ("Pending", c.RECONCILING)
    assert true_condition(plan)["reason"] == "WaitingForNode"
    assert NO_NODE in true_condition(plan)["message"]
    assert plan.of(EmitEvent) == []
    assert plan.recheck_after == pytest.approx(grace - 60 + 1)  # wake up when the grace ends
    # the grace is over: now it is Stalled, with a Warning
    plan = decide(cr, [job], [pod], T0 + timedelta(seconds=grace + 1), S)
    stalled = cond(plan, c.STALLED)
    assert (stalled["status"], stalled["reason"]) == ("True", "Unschedulable")
    assert NO_NODE in stalled["message"]
    assert [(e.type, e.reason) for e in plan.of(EmitEvent)] == [("Warning", "Unschedulable")]
    assert plan.recheck_after is None
    # a node arrived in time instead: the run goes on
    plan = decide(cr, [job], [running_pod(job, T0)], T0 + timedelta(seconds=90), S)
    assert true_condition(plan)["reason"] == "JobRunning"


def test_no_grace_for_unschedulable_pods_when_set_to_zero() -> None:
    cr = make_cr()
    job = started(first_job(cr), T0)
    plan = decide(
        cr, [job], [unschedulable_pod(job, NO_NODE, since=T0)], T0, Settings(unschedulable_grace_seconds=0)
    )
    assert cond(plan, c.STALLED)["reason"] == "Unschedulable"


def test_the_unschedulable_grace_is_a_setting() -> None:
    env = {"DBMIGRATE_UNSCHEDULABLE_GRACE_SECONDS": "45"}
    assert Settings.from_env(env).unschedulable_grace_seconds == 45
    assert Settings.from_env({}).unschedulable_grace_seconds == 300


FORBIDDEN = (
    'Error creating: pods "shop-db-138ec43bab-" is forbidden: error looking up service account '
    'shop/migrator: serviceaccount "migrator" not found'
)


def failed_create(job: dict[str, Any], message: str, at: Any) -> dict[str, Any]:
    """The Job controller's Event when the API refuses its Pod (quota, ServiceAccount, admission)."""
    return {
        "type": "Warning",
        "reason": "FailedCreate",
        "message": message,
        "involvedObject": {"kind": "Job", "name": job["metadata"]["name"], "uid": job["metadata"]["uid"]},
        "lastTimestamp": ts(at),
        "count": 3,
    }


def test_a_job_that_cannot_create_its_pod_is_stalled_with_the_apis_words() -> None:
    cr = make_cr()
    job = started(first_job(cr), T0)
    # right after its creation a Job without a Pod is normal: no Event lookup yet, but a look again later
    assert jobs_awaiting_pods([job], [], T0 + timedelta(seconds=2), S) == []
    plan = decide(cr, [job], [], T0 + timedelta(seconds=2), S)
    assert true_condition(plan)["type"] == c.RECONCILING
    assert plan.recheck_after == pytest.approx(S.pod_create_grace_seconds - 2 + 1)
    # still no Pod after the grace: the controller reads the Job's Events, and they say why
    later = T0 + timedelta(seconds=30)
    assert jobs_awaiting_pods([job], [], later, S) == [job["metadata"]["uid"]]
    events = {job["metadata"]["uid"]: [failed_create(job, FORBIDDEN, later)]}
    cr, plan = settle_with(cr, [job], [], later, events)
    assert plan.status["phase"] == "Pending"
    stalled = cond(plan, c.STALLED)
    assert (stalled["status"], stalled["reason"]) == ("True", "PodCreateFailed")
    assert FORBIDDEN in stalled["message"]
    assert [(e.type, e.reason) for e in plan.of(EmitEvent)] == [("Warning", "PodCreateFailed")]
    # the ServiceAccount appears, the Job controller's retry creates the Pod: the run goes on
    assert jobs_awaiting_pods([job], [running_pod(job, T0)], later, S) == []
    plan = decide(cr, [job], [running_pod(job, T0)], later + timedelta(seconds=10), S, job_events=events)
    assert true_condition(plan)["reason"] == "JobRunning"


def test_finished_jobs_and_jobs_with_pods_need_no_event_lookup() -> None:
    cr = make_cr()
    job = started(first_job(cr), T0)
    later = T0 + timedelta(minutes=5)
    assert jobs_awaiting_pods([failed(job, T0)], [], later, S) == []
    assert jobs_awaiting_pods([job], [running_pod(job, T0)], later, S) == []
    # the Events of an older attempt whose Pod exists now do not count
    events = {job["metadata"]["uid"]: [failed_create(job, FORBIDDEN, T0)]}
    plan = decide(cr, [job], [running_pod(job, T0)], later, S, job_events=events)
    assert true_condition(plan)["reason"] == "JobRunning"


def settle_with(
    cr: dict[str, Any], jobs: list[dict[str, Any]], pods: list[dict[str, Any]], now: Any, events: Any
) -> tuple[dict[str, Any], Plan]:
    plan = decide(cr, jobs, pods, now, S, job_events=events)
    cr = apply(cr, plan)
    again = decide(cr, jobs, pods, now + timedelta(seconds=30), S, job_events=events)
    assert again.actions == [], again.actions
    return cr, plan


# ------------------------------------------------------------------ downgrades


def at_v3(**spec: Any) -> dict[str, Any]:
    status = {
        "currentVersion": f"models:{V3}",
        "appliedCount": 3,
        "appliedVersions": [{"app": "models", "version": v} for v in (V1, V2, V3)],
    }
    return make_cr(generation=2, status=status, **spec)


def test_downgrade_without_permission_is_refused_without_a_job() -> None:
    _cr, plan = settle(at_v3(target=V2), [], [])
    assert plan.of(CreateJob) == []
    stalled = cond(plan, c.STALLED)
    assert (stalled["status"], stalled["reason"]) == ("True", "DowngradeNotAllowed")
    assert "allowDowngrade" in stalled["message"]
    assert [(e.type, e.reason) for e in plan.of(EmitEvent)] == [("Warning", "DowngradeNotAllowed")]


def test_downgrade_with_permission_runs_the_runner_downgrade() -> None:
    plan = decide(at_v3(target=f"models:{V1}", allowDowngrade=True), [], [], T0, S)
    (create,) = plan.of(CreateJob)
    args = create.manifest["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "downgrade"
    assert args[args.index("--target") + 1] == f"models:{V1}"


def test_target_at_or_above_the_applied_version_is_an_upgrade() -> None:
    for target in (V3, "3_20260104000000_next", "5"):
        (create,) = decide(at_v3(target=target), [], [], T0, S).of(CreateJob)
        assert create.manifest["spec"]["template"]["spec"]["containers"][0]["args"][0] == "upgrade"


ALEMBIC_REVS = ("1975ea83b712", "ae1027a6acf6", "3f9c2d1b7e40")  # ids are not ordered


def at_alembic_head(**spec: Any) -> dict[str, Any]:
    status = {
        "currentVersion": f"alembic:{ALEMBIC_REVS[-1]}",
        "appliedCount": 3,
        "appliedVersions": [{"app": "alembic", "version": v} for v in ALEMBIC_REVS],
    }
    return make_cr(generation=2, status=status, tool="alembic", **spec)


def test_alembic_target_among_the_ancestors_is_a_downgrade_whatever_its_digits() -> None:
    # "ae10..." starts with no digit and "1975..." with a small number: numbers must not decide
    for target in (ALEMBIC_REVS[1], ALEMBIC_REVS[0][:6], "base"):
        _cr, plan = settle(at_alembic_head(target=target), [], [])
        assert plan.of(CreateJob) == [], target
        assert cond(plan, c.STALLED)["reason"] == "DowngradeNotAllowed"
    plan = decide(at_alembic_head(target=ALEMBIC_REVS[0], allowDowngrade=True), [], [], T0, S)
    (create,) = plan.of(CreateJob)
    assert create.manifest["spec"]["template"]["spec"]["containers"][0]["args"][0] == "downgrade"


def test_alembic_unknown_or_head_target_is_an_upgrade() -> None:
    for target in ("head", "heads", ALEMBIC_REVS[-1], "9abcdef01234"):
        (create,) = decide(at_alembic_head(target=target), [], [], T0, S).of(CreateJob)
        assert create.manifest["spec"]["template"]["spec"]["containers"][0]["args"][0] == "upgrade", target


# ------------------------------------------------------------------ the rest


def test_invalid_spec_is_stalled_without_a_job() -> None:
    cr = make_cr(database={"urlSecretRef": {"name": "a", "key": "url"}, "secretRef": {"name": "b"}})
    _, plan = settle(cr, [], [])
    assert plan.of(CreateJob) == []
    assert cond(plan, c.STALLED)["reason"] == "InvalidSpec"


ALLOWLISTED = Settings(
    allowed_service_accounts=("migrator", "default"), allowed_images=("registry.example.com/",)
)


def test_service_account_outside_the_allowlist_is_stalled_without_a_job() -> None:
    cr = make_cr(job={"serviceAccountName": "cluster-admin-sa"})
    plan = decide(cr, [], [], T0, ALLOWLISTED)
    assert plan.of(CreateJob) == []
    stalled_ = cond(plan, c.STALLED)
    assert stalled_["status"] == "True"
    assert stalled_["reason"] == "ServiceAccountNotAllowed"
    assert stalled_["message"].startswith(
        'spec.job.serviceAccountName "cluster-admin-sa" is not in the operator\'s allowlist '
        "(migrator, default); ask your platform team"
    )
    assert plan.status["phase"] == "Failed"
    (warning,) = [e for e in plan.of(EmitEvent) if e.type == "Warning"]
    assert warning.reason == "ServiceAccountNotAllowed"
    # idempotent: the second pass asks for nothing
    again = decide(apply(cr, plan), [], [], T0 + timedelta(seconds=30), ALLOWLISTED)
    assert again.actions == []


def test_unset_service_account_counts_as_default() -> None:
    only = Settings(allowed_service_accounts=("migrator",))
    plan = decide(make_cr(), [], [], T0, only)
    assert plan.of(CreateJob) == []
    assert 'unset (the namespace\'s "default")' in cond(plan, c.STALLED)["message"]
    assert len(decide(make_cr(), [], [], T0, ALLOWLISTED).of(CreateJob)) == 1


def test_allowed_service_account_and_image_run() -> None:
    cr = make_cr(job={"serviceAccountName": "migrator"})
    (create,) = decide(cr, [], [], T0, ALLOWLISTED).of(CreateJob)
    assert create.manifest["spec"]["template"]["spec"]["serviceAccountName"] == "migrator"
    assert len(decide(cr, [], [], T0, S).of(CreateJob)) == 1, "empty allowlists allow anything"


def test_image_outside_the_allowed_prefixes_is_stalled_without_a_job() -> None:
    cr = make_cr(image="evil.example.com/miner:1")
    plan = decide(cr, [], [], T0, ALLOWLISTED)
    assert plan.of(CreateJob) == []
    assert cond(plan, c.STALLED)["reason"] == "ImageNotAllowed"
    assert "registry.example.com/" in cond(plan, c.STALLED)["message"]


def test_allowlist_never_unsettles_a_finished_run() -> None:
    """A run made before the allowlist changed keeps its verdict; only new runs are refused."""
    cr = make_cr(job={"serviceAccountName": "old-sa"})
    end = T0 + timedelta(seconds=20)
    done = completed(first_job(cr), end)
    pods = [terminated_pod(done, 0, success_report([V1]), end)]
    cr, _ = settle(cr, [done], pods, now=end)
    plan = decide(cr, [done], pods, end + timedelta(minutes=5), ALLOWLISTED)
    assert cond(plan, c.READY)["status"] == "True"
    assert plan.of(CreateJob) == []


def test_allowlists_come_from_the_environment() -> None:
    env = {"DBMIGRATE_ALLOWED_SERVICE_ACCOUNTS": " migrator, ,default ", "DBMIGRATE_ALLOWED_IMAGES": "a/,b:"}
    settings = Settings.from_env(env)
    assert settings.allowed_service_accounts == ("migrator", "default")
    assert settings.allowed_images == ("a/", "b:")


def test_history_keeps_the_newest_finished_jobs() -> None:
    cr = make_cr(historyLimit=2)
    jobs, pods = [], []
    for i in range(5):  # five earlier runs (reruns), the newest is the desired one
        annotated = make_cr(historyLimit=2, annotations={c.RERUN_ANNOTATION: str(i)})
        job = completed(
            admit(decide(annotated, [], [], T0, S).of(CreateJob)[0].manifest, T0 + timedelta(i)),
            T0 + timedelta(i, 60),
        )
        jobs.append(job)
        pods.append(terminated_pod(job, 0, success_report([V1]), T0 + timedelta(i, 60)))
    cr = make_cr(historyLimit=2, annotations={c.RERUN_ANNOTATION: "4"})
    plan = decide(cr, jobs, pods, T0 + timedelta(days=6), S)
    assert sorted(a.name for a in plan.of(DeleteJob)) == sorted(j["metadata"]["name"] for j in jobs[:3])
    assert plan.of(CreateJob) == []
    assert plan.status["phase"] == "Succeeded"


def test_other_crs_jobs_and_foreign_owners_are_ignored() -> None:
    cr = make_cr()
    other = first_job(make_cr(name="other-db", uid="other-uid"))
    impostor = first_job(cr)
    impostor["metadata"]["ownerReferences"][0]["uid"] = "a-previous-incarnation"
    plan = decide(cr, [completed(other, T0), completed(impostor, T0)], [], T0, S)
    assert len(plan.of(CreateJob)) == 1
    assert plan.of(DeleteJob) == []


def test_status_patch_is_a_merge_patch_of_changed_keys_only() -> None:
    cr = make_cr()
    job = started(first_job(cr), T0)
    cr, _ = settle(cr, [job], [running_pod(job, T0)])
    done = completed(job, T0 + timedelta(minutes=1))
    plan = decide(cr, [done], [terminated_pod(done, 0, success_report([V1]), T0)], T0, S)
    (patch,) = plan.of(PatchStatus)
    assert "observedGeneration" not in patch.patch  # unchanged
    assert {"phase", "conditions", "lastRun", "currentVersion"} <= set(patch.patch)


def test_jobs_created_in_the_same_second_are_ordered_exactly() -> None:
    """creationTimestamp has whole seconds; a fast rerun must not make the old Job look newest."""
    cr = make_cr()
    old = completed(first_job(cr), T0)
    rerun_cr = make_cr(annotations={c.RERUN_ANNOTATION: "5"})  # its Job name sorts before the old one
    manifest = decide(rerun_cr, [old], [], T0 + timedelta(milliseconds=300), S).of(CreateJob)[0].manifest
    new = completed(admit(manifest, T0), T0)  # same creationTimestamp as the old one
    assert new["metadata"]["name"] < old["metadata"]["name"]
    pods = [
        terminated_pod(old, 0, success_report([V1]), T0),
        terminated_pod(new, 0, success_report([V1, V2]), T0),
    ]
    _, plan = settle(rerun_cr, [old, new], pods)
    assert plan.of(DeleteJob) == []
    assert plan.of(CreateJob) == []
    assert plan.status["lastRun"]["job"] == new["metadata"]["name"]
    assert plan.status["currentVersion"] == f"models:{V2}"
