"""spec.approval in the pure decision: plan Job, status.plan, waiting, approval by spec or annotation."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from dbmigrate_operator import constants as c
from dbmigrate_operator.gating.requirement import Requirement, evaluate
from dbmigrate_operator.jobs import JOB_KIND_LABEL, job_name, plan_job_name, run_hash
from dbmigrate_operator.reconcile import CreateJob, DeleteJob, EmitEvent, Plan, decide
from dbmigrate_operator.settings import Settings
from dbmigrate_runner.report import Outcome, PlanFinding, PlanSummary, Report, encode
from dbmigrate_runner.sqlplan import Step, content_hash
from tests.operator.builders import T0, admit, completed, failed, make_cr, terminated_pod
from tests.operator.test_reconcile import apply, true_condition

S = Settings()
V1, V2 = "models:1_20260101000000_init", "models:2_20260102000000_drop_bio"
SQL = {V1: ['CREATE TABLE "c" ("id" INT)'], V2: ['ALTER TABLE "c" DROP COLUMN "bio"']}


def plan_report(pending: list[str], destructive: bool, with_sql: bool = True) -> tuple[str, str]:
    """A plan Job's termination message, and the plan's hash."""
    steps = [Step(m, SQL[m]) for m in pending]
    h = content_hash("aerich", steps)
    findings = [PlanFinding(V2, 0, "DropColumn", "c.bio")] if destructive and V2 in pending else []
    summary = PlanSummary(
        hash=h,
        target=pending[-1] if pending else None,
        pending=pending,
        pending_count=len(pending),
        statements=sum(len(SQL[m]) for m in pending),
        findings=findings,
        findings_count=len(findings),
        steps=[{"migration": s.migration, "statements": s.statements, "opaque": []} for s in steps]
        if with_sql
        else None,
        steps_omitted=not with_sql,
    )
    return encode(Report(Outcome.SUCCEEDED, tool="aerich", command="plan", plan=summary)), h


def planned(
    cr: dict[str, Any], report: str
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """First pass creates the plan Job; it ran and reported ``report``: (cr, jobs, pods) after that."""
    plan = decide(cr, [], [], T0, S)
    (create,) = plan.of(CreateJob)
    cr = apply(cr, plan)
    job = completed(admit(create.manifest, T0), T0 + timedelta(seconds=20))
    pod = terminated_pod(job, 0, report, T0 + timedelta(seconds=19))
    return cr, [job], [pod]


def at(seconds: int) -> Any:
    return T0 + timedelta(seconds=seconds)


def test_auto_is_todays_behaviour() -> None:
    plan = decide(make_cr(), [], [], T0, S)
    (create,) = plan.of(CreateJob)
    assert create.manifest["metadata"]["name"] == job_name("shop-db", run_hash(make_cr()))
    assert "--expect-plan" not in create.manifest["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "plan" not in plan.status


def test_manual_first_creates_a_plan_job() -> None:
    cr = make_cr(approval="Manual")
    plan = decide(cr, [], [], T0, S)
    (create,) = plan.of(CreateJob)
    manifest = create.manifest
    assert manifest["metadata"]["name"] == plan_job_name("shop-db", run_hash(cr))
    assert manifest["metadata"]["labels"][JOB_KIND_LABEL] == "plan"
    assert manifest["metadata"]["labels"][c.MIGRATION_LABEL] == "shop-db"  # listed and watched like runs
    assert manifest["spec"]["template"]["spec"]["containers"][0]["args"][0] == "plan"
    assert true_condition(plan)["reason"] == "Planning"
    assert [e.reason for e in plan.of(EmitEvent)] == ["PlanStarted"]
    # While it runs: no other Job, still planning, not Ready.
    cr = apply(cr, plan)
    job = admit(manifest, T0)
    again = decide(cr, [job], [], at(1), S)
    assert again.of(CreateJob) == []
    assert true_condition(again)["reason"] == "Planning"


def test_manual_waits_with_the_plan_in_status_then_runs_on_annotation() -> None:
    report, h = plan_report([V1, V2], destructive=True)
    cr, jobs, pods = planned(make_cr(approval="Manual"), report)
    waiting = decide(cr, jobs, pods, at(30), S)
    assert waiting.of(CreateJob) == []
    assert waiting.status["phase"] == "Pending"  # DESIGN.md's four phases; the condition says why
    condition = true_condition(waiting)
    assert condition["type"] == c.RECONCILING
    assert condition["reason"] == "WaitingForApproval"
    assert condition["message"].startswith(f"waiting for approval of plan {h}")
    assert next(x for x in waiting.status["conditions"] if x["type"] == c.READY)["status"] == "False"
    record = waiting.status["plan"]
    assert record["hash"] == h
    assert record["pending"] == [V1, V2]
    assert record["pendingCount"] == 2
    assert record["statements"] == 2
    assert record["findings"] == [{"migration": V2, "statement": 0, "kind": "DropColumn", "target": "c.bio"}]
    assert record["findingsCount"] == 1
    assert 'ALTER TABLE "c" DROP COLUMN "bio";' in record["sql"]
    assert "approvedBy" not in record
    cr = apply(cr, waiting)
    assert decide(cr, jobs, pods, at(60), S).of(CreateJob) == []  # stays waiting, idempotent

    cr["metadata"]["annotations"] = {c.APPROVE_ANNOTATION: h}
    go = decide(cr, jobs, pods, at(90), S)
    (create,) = go.of(CreateJob)
    assert create.manifest["metadata"]["name"] == job_name("shop-db", run_hash(cr))
    args = create.manifest["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "upgrade"
    assert args[-2:] == ["--expect-plan", h]  # exactly the approved plan, or nothing
    assert go.status["plan"]["approvedBy"] == f"annotation {c.APPROVE_ANNOTATION}"
    assert go.of(DeleteJob) == []  # the current plan Job stays: its log holds the SQL


def test_approved_plan_from_git() -> None:
    report, h = plan_report([V1, V2], destructive=True)
    cr, jobs, pods = planned(make_cr(approval="Manual"), report)
    cr["spec"]["approvedPlan"] = h
    cr["metadata"]["generation"] = 2
    go = decide(cr, jobs, pods, at(30), S)
    (create,) = go.of(CreateJob)
    assert create.manifest["spec"]["template"]["spec"]["containers"][0]["args"][-1] == h
    assert go.status["plan"]["approvedBy"] == "spec.approvedPlan"


def test_a_stale_approval_approves_nothing_and_says_so() -> None:
    report, h = plan_report([V2], destructive=True)
    old = "f" * 64
    cr, jobs, pods = planned(make_cr(approval="Manual", approvedPlan=old), report)
    plan = decide(cr, jobs, pods, at(30), S)
    assert plan.of(CreateJob) == []
    message = true_condition(plan)["message"]
    assert f"waiting for approval of plan {h}" in message
    assert f"spec.approvedPlan names {old}, which is not the current plan" in message


def test_on_destructive_runs_at_once_when_nothing_destructive() -> None:
    report, h = plan_report([V1], destructive=False)
    cr, jobs, pods = planned(make_cr(approval="OnDestructive"), report)
    go = decide(cr, jobs, pods, at(30), S)
    (create,) = go.of(CreateJob)
    assert create.manifest["spec"]["template"]["spec"]["containers"][0]["args"][-2:] == ["--expect-plan", h]
    assert go.status["plan"]["approvedBy"].startswith("approval OnDestructive")


def test_on_destructive_waits_on_findings() -> None:
    report, _ = plan_report([V1, V2], destructive=True)
    cr, jobs, pods = planned(make_cr(approval="OnDestructive"), report)
    plan = decide(cr, jobs, pods, at(30), S)
    assert plan.of(CreateJob) == []
    assert true_condition(plan)["reason"] == "WaitingForApproval"


def _summary_report(findings: list[PlanFinding], review: int | None) -> str:
    steps = [Step(V2, SQL[V2])]
    summary = PlanSummary(
        hash=content_hash("aerich", steps),
        target=V2,
        pending=[V2],
        pending_count=1,
        statements=1,
        findings=findings,
        findings_count=len(findings),
        review_count=review,
    )
    return encode(Report(Outcome.SUCCEEDED, tool="aerich", command="plan", plan=summary))


def test_on_destructive_goes_ahead_when_every_finding_is_on_objects_made_in_the_plan() -> None:
    fresh = [PlanFinding(V2, 0, "DropColumn", "c.bio", "ban-drop-column", "in-plan")]
    cr, jobs, pods = planned(make_cr(approval="OnDestructive"), _summary_report(fresh, 0))
    go = decide(cr, jobs, pods, at(30), S)
    assert len(go.of(CreateJob)) == 1
    assert go.status["plan"]["reviewCount"] == 0
    assert go.status["plan"]["findings"][0]["severity"] == "in-plan"


def test_on_destructive_waits_on_a_lock_hazard_alone() -> None:
    hazard = [
        PlanFinding(
            V2, 0, "RequireConcurrentIndexCreation", "c", "require-concurrent-index-creation", "hazard"
        )
    ]
    cr, jobs, pods = planned(make_cr(approval="OnDestructive"), _summary_report(hazard, 1))
    plan = decide(cr, jobs, pods, at(30), S)
    assert plan.of(CreateJob) == []
    assert true_condition(plan)["reason"] == "WaitingForApproval"
    assert "1 finding(s) to review" in true_condition(plan)["message"]


def test_on_destructive_counts_every_finding_of_a_report_without_severities() -> None:
    """A plan from an older runner image: no review count, so every finding needs a person."""
    old = [PlanFinding(V2, 0, "DropColumn", "c.bio")]
    cr, jobs, pods = planned(make_cr(approval="OnDestructive"), _summary_report(old, None))
    plan = decide(cr, jobs, pods, at(30), S)
    assert plan.of(CreateJob) == []
    assert plan.status["plan"]["reviewCount"] == 1


def test_manual_with_nothing_pending_goes_ahead() -> None:
    report, _ = plan_report([], destructive=False)
    cr, jobs, pods = planned(make_cr(approval="Manual"), report)
    go = decide(cr, jobs, pods, at(30), S)
    assert len(go.of(CreateJob)) == 1
    assert go.status["plan"]["approvedBy"] == "nothing to apply"


def test_large_plan_says_where_the_sql_is() -> None:
    report, h = plan_report([V1, V2], destructive=True, with_sql=False)
    cr, jobs, pods = planned(make_cr(approval="Manual"), report)
    record = decide(cr, jobs, pods, at(30), S).status["plan"]
    assert "sql" not in record
    assert plan_job_name("shop-db", run_hash(cr)) in record["sqlOmitted"]
    assert h in record["sqlOmitted"]


def test_the_plan_record_outlives_the_plan_pod() -> None:
    """Status is the record: once read, the plan stands even if the plan Job's Pod is gone."""
    report, h = plan_report([V1, V2], destructive=True)
    cr, jobs, pods = planned(make_cr(approval="Manual"), report)
    cr = apply(cr, decide(cr, jobs, pods, at(30), S))
    cr["metadata"]["annotations"] = {c.APPROVE_ANNOTATION: h}
    go = decide(cr, jobs, [], at(60), S)  # Pod GC'd
    assert len(go.of(CreateJob)) == 1


def test_failed_plan_is_stalled() -> None:
    cr = make_cr(approval="Manual")
    plan = decide(cr, [], [], T0, S)
    (create,) = plan.of(CreateJob)
    cr = apply(cr, plan)
    job = failed(admit(create.manifest, T0), at(20))
    message = encode(Report(Outcome.DATABASE_UNREACHABLE, tool="aerich", command="plan"))
    pod = terminated_pod(job, 3, message, at(19))
    stuck = decide(cr, [job], [pod], at(30), S)
    assert stuck.of(CreateJob) == []
    assert true_condition(stuck)["type"] == c.STALLED
    assert true_condition(stuck)["reason"] == "PlanFailed"


def test_a_new_image_needs_a_new_plan_and_the_old_plan_job_goes() -> None:
    report, _ = plan_report([V1], destructive=False)
    cr, jobs, pods = planned(make_cr(approval="Manual", approvedPlan="a" * 64), report)
    cr = apply(cr, decide(cr, jobs, pods, at(30), S))
    cr["spec"]["image"] = "registry.example.com/shop-migrations:1.5.0"
    plan = decide(cr, jobs, pods, at(60), S)
    (create,) = plan.of(CreateJob)
    assert create.manifest["metadata"]["name"] == plan_job_name("shop-db", run_hash(cr))
    assert [d.name for d in plan.of(DeleteJob)] == [jobs[0]["metadata"]["name"]]
    assert "plan" not in plan.status  # the old plan says nothing about the new run


def test_downgrade_is_not_gated() -> None:
    status = {"currentVersion": "models:2_x", "appliedVersions": [{"app": "models", "version": "2_x"}]}
    cr = make_cr(approval="Manual", target="models:1", allowDowngrade=True, status=status)
    plan: Plan = decide(cr, [], [], T0, S)
    (create,) = plan.of(CreateJob)
    assert create.manifest["spec"]["template"]["spec"]["containers"][0]["args"][0] == "downgrade"


def test_gated_pods_stay_held_while_waiting_and_say_why() -> None:
    """The status a waiting plan writes keeps the gate shut, for the label alone and for a pinned
    version; the pod's reason names the plan."""
    report, h = plan_report([V1, V2], destructive=True)
    cr, jobs, pods = planned(make_cr(approval="Manual"), report)
    cr = apply(cr, decide(cr, jobs, pods, at(30), S))
    held = evaluate(Requirement("shop-db"), cr)
    assert not held.met
    assert f"WaitingForApproval: waiting for approval of plan {h}" in held.message
    assert not evaluate(Requirement("shop-db", V2.split(":")[1], "models"), cr).met
