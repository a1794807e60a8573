"""spec.approval in the pure decision: plan Job, status.plan, waiting, approval by spec or annotation."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from dbmigrate_operator import constants as c
from dbmigrate_operator.actions import CreateJob, DeleteJob, EmitEvent, Plan
from dbmigrate_operator.gating.requirement import Requirement, evaluate
from dbmigrate_operator.jobs import JOB_KIND_LABEL, job_name, plan_job_name, run_hash
from dbmigrate_operator.reconcile import decide
from dbmigrate_operator.settings import Settings
from dbmigrate_runner.report import Outcome, PlanFinding, PlanSummary, Report, encode, pack_versions
from dbmigrate_runner.sqlplan import Step, content_hash
from tests.operator.builders import T0, admit, completed, failed, make_cr, terminated_pod
from tests.operator.crd_support import schema
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
    cr: dict[str, Any], report: str, image_id: str | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """First pass creates the plan Job; it ran and reported ``report``: (cr, jobs, pods) after that.
    ``image_id``: what the kubelet says the plan's container ran."""
    plan = decide(cr, [], [], T0, S)
    (create,) = plan.of(CreateJob)
    cr = apply(cr, plan)
    job = completed(admit(create.manifest, T0), T0 + timedelta(seconds=20))
    pod = terminated_pod(job, 0, report, T0 + timedelta(seconds=19))
    if image_id is not None:
        pod["status"]["containerStatuses"][0]["imageID"] = image_id
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


# ------------------------------------------------------------------ an approval covers exactly what runs

DIGEST = "sha256:" + "d" * 64
REPO = "registry.example.com/shop-migrations"


def container(manifest: dict[str, Any]) -> dict[str, Any]:
    return dict(manifest["spec"]["template"]["spec"]["containers"][0])


def test_the_approved_run_uses_the_digest_the_plan_ran_even_if_the_tag_moved() -> None:
    """The plan Pod ran tag 1.4.2 as digest d…; whatever the tag names by the time of the run, the
    run's Job names the digest, so the approved plan runs in exactly the image it was made from."""
    report, h = plan_report([V1, V2], destructive=True)
    cr, jobs, pods = planned(make_cr(approval="Manual"), report, image_id=f"{REPO}@{DIGEST}")
    waiting = decide(cr, jobs, pods, at(30), S)
    # Every key is in the CRD's status schema: the API server would prune an unknown one, and the
    # run would then not know the planned image.
    assert set(waiting.status["plan"]) <= set(
        schema()["properties"]["status"]["properties"]["plan"]["properties"]
    )
    assert waiting.status["plan"]["image"] == f"{REPO}@{DIGEST}"
    assert waiting.status["plan"]["imageID"] == f"{REPO}@{DIGEST}"
    assert f"image {REPO}@{DIGEST}" in true_condition(waiting)["message"]
    cr = apply(cr, waiting)
    cr["metadata"]["annotations"] = {c.APPROVE_ANNOTATION: h}
    go = decide(cr, jobs, [], at(600), S)  # the plan Pod is gone by now: status is the record
    (create,) = go.of(CreateJob)
    run = container(create.manifest)
    assert run["image"] == f"{REPO}@{DIGEST}"  # not spec.image's tag, which may name other code now
    assert run["args"][-2:] == ["--expect-plan", h]
    (started,) = [e for e in go.of(EmitEvent) if e.reason == "RunStarted"]
    assert f"image {REPO}@{DIGEST}" in started.message


def test_the_digest_is_taken_with_the_repository_of_spec_image() -> None:
    """The kubelet names the repository its own way (docker.io/library/…, an older runtime's
    docker-pullable://); the run pulls spec.image's repository (its registry, its pull Secrets) by digest."""
    image = "localhost:5000/shop-migrations:1.4.2"
    report, h = plan_report([V1], destructive=True)
    kubelet_says = f"docker-pullable://localhost:5000/shop-migrations@{DIGEST}"
    cr, jobs, pods = planned(
        make_cr(approval="Manual", approvedPlan=h, image=image), report, image_id=kubelet_says
    )
    (create,) = decide(cr, jobs, pods, at(30), S).of(CreateJob)
    assert container(create.manifest)["image"] == f"localhost:5000/shop-migrations@{DIGEST}"


def test_on_destructive_runs_what_was_planned_too() -> None:
    report, _ = plan_report([V1], destructive=False)
    cr, jobs, pods = planned(make_cr(approval="OnDestructive"), report, image_id=f"docker.io/x/y@{DIGEST}")
    (create,) = decide(cr, jobs, pods, at(30), S).of(CreateJob)
    assert container(create.manifest)["image"] == f"{REPO}@{DIGEST}"


def test_no_registry_digest_leaves_spec_image_and_says_what_the_node_reported() -> None:
    """An image loaded onto the node (never pulled) has no registry digest, only its image id: there
    is nothing to pin. The run uses spec.image; the runner's re-made plan, which covers every pending
    migration file, is then the check (PlanChanged when the code differs)."""
    report, h = plan_report([V1], destructive=True)
    local = "sha256:" + "e" * 64
    cr, jobs, pods = planned(make_cr(approval="Manual", approvedPlan=h), report, image_id=local)
    go = decide(cr, jobs, pods, at(30), S)
    assert go.status["plan"]["image"] == "registry.example.com/shop-migrations:1.4.2"
    assert go.status["plan"]["imageID"] == local
    (create,) = go.of(CreateJob)
    assert container(create.manifest)["image"] == "registry.example.com/shop-migrations:1.4.2"
    assert container(create.manifest)["args"][-2:] == ["--expect-plan", h]


def test_a_plan_recorded_without_an_image_runs_spec_image() -> None:
    """A status.plan written by an operator that recorded no image: the run uses spec.image."""
    report, h = plan_report([V1], destructive=True)
    cr, jobs, pods = planned(make_cr(approval="Manual"), report, image_id=f"{REPO}@{DIGEST}")
    cr = apply(cr, decide(cr, jobs, pods, at(30), S))
    for key in ("image", "imageID"):
        del cr["status"]["plan"][key]
    cr["spec"]["approvedPlan"] = h
    (create,) = decide(cr, jobs, [], at(60), S).of(CreateJob)
    assert container(create.manifest)["image"] == "registry.example.com/shop-migrations:1.4.2"


def test_same_sql_other_code_is_another_plan_and_the_old_approval_runs_nothing() -> None:
    """The next image has the same SQL but another RunPython: its plan hashes differently (the
    runner hashes each migration file), so the approval of the old plan approves nothing, and the
    new plan's SQL is still shown (it hashes to the reported hash, file digests included)."""
    code = {"a": "sha256:" + "a" * 64, "b": "sha256:" + "b" * 64}

    def report_for(variant: str) -> tuple[str, str]:
        steps = [Step(V1, SQL[V1], opaque=["runs Python"], source=code[variant])]
        h = content_hash("aerich", steps)
        summary = PlanSummary(
            hash=h,
            target=V1,
            pending=[V1],
            pending_count=1,
            statements=1,
            opaque=[V1],
            steps=[s.wire() for s in steps],
        )
        return encode(Report(Outcome.SUCCEEDED, tool="aerich", command="plan", plan=summary)), h

    _, old_hash = report_for("a")
    new_report, new_hash = report_for("b")
    assert new_hash != old_hash
    cr, jobs, pods = planned(
        make_cr(approval="OnDestructive", approvedPlan=old_hash, image=f"{REPO}:1.5.0"), new_report
    )
    plan = decide(cr, jobs, pods, at(30), S)
    assert plan.of(CreateJob) == []
    message = true_condition(plan)["message"]
    assert f"waiting for approval of plan {new_hash}" in message
    assert f"spec.approvedPlan names {old_hash}, which is not the current plan" in message
    assert f"-- file {code['b']}" in plan.status["plan"]["sql"]


def test_alembic_approval_uses_the_recorded_ancestry_like_the_run_step() -> None:
    """A target among the applied ancestors that only status.ancestry lists (appliedVersions keeps
    the newest few): a downgrade for the approval step as for the run step, so no plan Job runs
    for nothing; the run step says a downgrade needs allowDowngrade, or runs it."""
    revisions = [f"{n:012x}" for n in range(1, 6)]
    status = {
        "currentVersion": f"alembic:{revisions[-1]}",
        "appliedCount": 5,
        "appliedVersions": [{"app": "alembic", "version": revisions[-1]}],  # capped to the newest
        "ancestry": {
            "heads": [revisions[-1]],
            "packed": pack_versions(revisions),
            "known": 5,
            "omitted": 0,
        },
    }
    cr = make_cr(approval="Manual", tool="alembic", target=revisions[1], generation=2, status=status)
    refused = decide(cr, [], [], T0, S)
    assert refused.of(CreateJob) == []
    assert true_condition(refused)["reason"] == "DowngradeNotAllowed"
    cr["spec"]["allowDowngrade"] = True
    (create,) = decide(cr, [], [], T0, S).of(CreateJob)
    assert container(create.manifest)["args"][0] == "downgrade"
    assert JOB_KIND_LABEL not in create.manifest["metadata"]["labels"]
