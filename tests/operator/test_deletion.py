"""Deleting a DatabaseMigration never kills a running migration (issue 18, item 7), as pure decisions.

The run-in-progress finalizer is on the resource exactly while one of its migration Jobs may run:
asked for before the Job is created, removed once no Job runs. While the resource is being deleted
the decision starts no run and deletes no Job, and lets it go the moment nothing runs any more. The
same promise on the real control plane: tests/e2e/test_deletion_e2e.py.
"""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

from dbmigrate_operator import constants as c
from dbmigrate_operator.actions import CreateJob, DeleteJob, EmitEvent, HoldDeletion, PatchStatus
from dbmigrate_operator.reconcile import decide
from dbmigrate_operator.settings import Settings
from dbmigrate_runner.report import Outcome
from tests.operator.builders import (
    T0,
    admit,
    completed,
    failed,
    failure_report,
    make_cr,
    running_pod,
    started,
    success_report,
    terminated_pod,
    ts,
    waiting_pod,
)
from tests.operator.test_reconcile import apply

S = Settings()
V1 = "0_20260101000000_init"


def held(cr: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(cr)
    out["metadata"]["finalizers"] = [c.RUN_FINALIZER]
    return out


def deleting(cr: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(cr)
    out["metadata"]["deletionTimestamp"] = ts(T0 + timedelta(hours=2))
    return out


def running_run() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A CR whose Job runs, its status written and its finalizer on: (cr, job, pod)."""
    cr = make_cr()
    plan = decide(cr, [], [], T0, S)
    cr = apply(cr, plan)
    (create,) = plan.of(CreateJob)
    job = started(admit(create.manifest, T0), T0)
    pod = running_pod(job, T0 + timedelta(seconds=5))
    cr = apply(cr, decide(cr, [job], [pod], T0 + timedelta(seconds=10), S))
    assert cr["metadata"]["finalizers"] == [c.RUN_FINALIZER]
    return cr, job, pod


def test_the_finalizer_goes_on_before_the_job_is_created() -> None:
    plan = decide(make_cr(), [], [], T0, S)
    kinds = [type(a) for a in plan.actions]
    assert HoldDeletion(True) in plan.actions
    assert kinds.index(HoldDeletion) < kinds.index(CreateJob)


def test_a_plan_job_holds_nothing_it_only_reads() -> None:
    plan = decide(make_cr(approval="Manual"), [], [], T0, S)
    (create,) = plan.of(CreateJob)
    assert create.manifest["metadata"]["name"].endswith("-plan")
    assert plan.of(HoldDeletion) == []


def test_a_job_already_running_without_the_finalizer_gets_it() -> None:
    """An operator upgraded while a Job runs (or a finalizer removed by hand): adopted and held."""
    cr, job, pod = running_run()
    cr["metadata"].pop("finalizers")
    plan = decide(cr, [job], [pod], T0 + timedelta(seconds=20), S)
    assert plan.actions == [HoldDeletion(True)]


def test_the_finalizer_goes_once_the_run_ended_after_the_status() -> None:
    cr, job, _ = running_run()
    end = T0 + timedelta(minutes=1)
    done = completed(job, end)
    plan = decide(cr, [done], [terminated_pod(done, 0, success_report([V1]), end)], end, S)
    assert plan.actions[-1] == HoldDeletion(False)
    assert isinstance(plan.actions[0], PatchStatus)
    assert plan.status["phase"] == "Succeeded"
    assert apply(cr, plan)["metadata"]["finalizers"] == []


def test_a_deletion_waits_while_the_run_goes_on_and_starts_nothing() -> None:
    cr, job, pod = running_run()
    # The spec changed too (a new image): not deleting, that would queue a new run after this one.
    cr["spec"]["image"] = "registry.example.com/shop-migrations:9.9.9"
    cr["metadata"]["generation"] = 2
    plan = decide(deleting(cr), [job], [pod], T0 + timedelta(seconds=30), S)
    assert plan.of(HoldDeletion) == []
    assert plan.of(CreateJob) == plan.of(DeleteJob) == []
    reconciling = next(x for x in plan.status["conditions"] if x["type"] == c.RECONCILING)
    assert reconciling["status"] == "True"
    assert "being deleted" in reconciling["message"]
    again = decide(apply(deleting(cr), plan), [job], [pod], T0 + timedelta(seconds=60), S)
    assert again.actions == []  # level-triggered: nothing more to say while it runs


def test_a_deletion_lets_go_once_the_run_ended_and_starts_no_other() -> None:
    cr, job, _ = running_run()
    cr["spec"]["image"] = "registry.example.com/shop-migrations:9.9.9"  # a new run would be due
    end = T0 + timedelta(minutes=1)
    done = completed(job, end)
    plan = decide(deleting(cr), [done], [terminated_pod(done, 0, success_report([V1]), end)], end, S)
    assert [type(a) for a in plan.actions] == [PatchStatus, EmitEvent, HoldDeletion]
    assert plan.status["lastRun"]["outcome"] == "Succeeded"  # recorded (and counted) before it goes
    assert plan.status["phase"] == "Succeeded"
    assert plan.status["currentVersion"] == f"models:{V1}"
    assert plan.actions[1].reason == "Applied"  # type: ignore[union-attr]
    assert plan.actions[-1] == HoldDeletion(False)
    # the result already recorded (the write went out, the finalizer's removal did not): only that
    recorded = held(apply(deleting(cr), plan))
    again = decide(recorded, [done], [terminated_pod(done, 0, success_report([V1]), end)], end, S)
    assert again.actions == [HoldDeletion(False)]


def test_a_failed_run_lets_the_deletion_go_too() -> None:
    cr, job, _ = running_run()
    end = T0 + timedelta(minutes=1)
    report = failure_report(Outcome.MIGRATION_FAILED, "boom")
    gone = failed(job, end, reason="PodFailurePolicy", failures=1)
    plan = decide(deleting(cr), [gone], [terminated_pod(gone, 2, report, end)], end, S)
    assert plan.actions[-1] == HoldDeletion(False)
    assert plan.of(CreateJob) == []
    assert plan.status["lastRun"]["outcome"] == Outcome.MIGRATION_FAILED.value
    stalled = next(x for x in plan.status["conditions"] if x["type"] == c.STALLED)
    assert stalled["status"] == "True"


def test_a_job_that_never_started_and_cannot_start_does_not_hold_a_deletion() -> None:
    """A missing Secret: the container never ran, so nothing touched the database; waiting for it
    would keep the resource until the Job's deadline."""
    cr, job, _ = running_run()
    stuck = waiting_pod(job, "CreateContainerConfigError", 'secret "shop-db" not found')
    assert decide(cr, [job], [stuck], T0 + timedelta(seconds=30), S).of(HoldDeletion) == []  # not deleted
    plan = decide(deleting(cr), [job], [stuck], T0 + timedelta(seconds=30), S)
    name = job["metadata"]["name"]
    # The operator deletes that Job itself: the chart's running-migrations policy keeps the garbage
    # collector off every unfinished migration Job, so it would otherwise stay until its deadline.
    assert plan.actions == [
        DeleteJob(name, "its DatabaseMigration is being deleted and it never started"),
        HoldDeletion(False),
    ]
    assert decide(deleting(make_cr()), [job], [stuck], T0 + timedelta(seconds=30), S).of(DeleteJob) == [
        DeleteJob(name, "its DatabaseMigration is being deleted and it never started")
    ]  # also when the finalizer never went on


def test_a_pod_about_to_start_still_holds_the_deletion() -> None:
    """Pending without a known obstacle (pulling the image, creating the container): it may start
    any moment, so the deletion waits."""
    cr, job, _ = running_run()
    creating = waiting_pod(job, "ContainerCreating", "")
    plan = decide(deleting(cr), [job], [creating], T0 + timedelta(seconds=30), S)
    assert plan.of(HoldDeletion) == []
    assert plan.of(CreateJob) == plan.of(DeleteJob) == []


def test_a_deleted_resource_never_gets_the_finalizer_added() -> None:
    """The API refuses a new finalizer once deletion began; the controller drops such a CR anyway."""
    cr, job, pod = running_run()
    cr["metadata"].pop("finalizers")
    plan = decide(deleting(cr), [job], [pod], T0 + timedelta(seconds=30), S)
    assert plan.of(HoldDeletion) == []
    assert plan.of(CreateJob) == []


def test_held_is_idempotent_and_the_first_pass_has_no_removal() -> None:
    """A CR with the finalizer and its Job running: deciding again asks for nothing."""
    cr, job, pod = running_run()
    assert held(cr) == cr
    plan = decide(cr, [job], [pod], T0 + timedelta(seconds=40), S)
    assert plan.of(HoldDeletion) == []
