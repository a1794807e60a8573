"""A Secret changed in place is a changed database (issue 18 item 9): the read-only check Job before a
pinned rollout's pods start, decided by the controller (database_check.py) and judged by the gate.

Pure: the controller's decision driven step by step with the Jobs and Pods it would observe, the gate's
judgement on the status it writes. The same flow on the control plane: tests/e2e/test_database_check_e2e.py.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from dbmigrate_operator import database_check, identity
from dbmigrate_operator import jobs as j
from dbmigrate_operator.actions import CreateJob, DeleteJob, EmitEvent, HoldDeletion, PatchStatus, Plan
from dbmigrate_operator.gating.release import Decision, rollouts_to_check
from dbmigrate_operator.gating.requirement import CHECK_REASON, Requirement, evaluate, requirement_of
from dbmigrate_operator.reconcile import decide
from dbmigrate_operator.settings import Settings
from dbmigrate_runner.report import AppState, Outcome, Report, encode
from tests.operator.builders import (
    T0,
    admit,
    completed,
    failed,
    failure_report,
    make_cr,
    merge,
    terminated_pod,
)

S = Settings()
V1, V2 = "0_20260101000000_init", "1_20260102000000_add_bio"
OLD_DB, NEW_DB = "0123456789abcdef", "fedcba9876543210"


def report(versions: list[str], fingerprint: str | None, command: str = "upgrade") -> str:
    apps = (
        {"models": AppState(current=versions[-1], count=len(versions), versions=versions)} if versions else {}
    )
    database = {"fingerprint": fingerprint} if fingerprint else None
    return encode(
        Report(outcome=Outcome.SUCCEEDED, tool="aerich", command=command, apps=apps, database=database)
    )


def apply(cr: dict[str, Any], plan: Plan) -> dict[str, Any]:
    out = dict(cr)
    for action in plan.of(PatchStatus):
        out["status"] = merge(out.get("status") or {}, action.patch)
    return out


def finish(manifest: dict[str, Any], text: str, at: Any, exit_code: int = 0) -> list[dict[str, Any]]:
    """The Job of ``manifest`` ended with the report ``text``: the Job and its Pod as observed."""
    job = admit(manifest, at)
    job = (
        completed(job, at + timedelta(seconds=5))
        if exit_code == 0
        else failed(job, at + timedelta(seconds=5))
    )
    return [job, terminated_pod(job, exit_code, text, at + timedelta(seconds=5))]


def migrated(spec: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A resource whose run applied V1 and V2 to the old database, and that run's Job and Pod."""
    cr = make_cr(**(spec or {}))
    plan = decide(cr, [], [], T0, S)
    cr = apply(cr, plan)
    (create,) = plan.of(CreateJob)
    job, pod = finish(create.manifest, report([V1, V2], OLD_DB), T0)
    cr = apply(cr, decide(cr, [job], [pod], T0 + timedelta(seconds=10), S))
    assert cr["status"]["database"]["fingerprint"] == OLD_DB
    return cr, [job, pod]


def pin(version: str, rollout: str = "web-2") -> Requirement:
    return Requirement(migration="shop-db", app="models", version=version, rollout=rollout)


def check_job(plan: Plan) -> dict[str, Any]:
    (create,) = [a for a in plan.of(CreateJob) if j.is_check_job(a.manifest)]
    manifest: dict[str, Any] = create.manifest
    return manifest


def test_a_new_pinned_rollout_waits_for_the_check_though_its_version_is_applied() -> None:
    """The hole: the versions were recorded for the database the Secret named then; a new ReplicaSet's
    pods were released on them whatever the Secret names now."""
    cr, _ = migrated()
    verdict = evaluate(pin(V2), cr)
    assert not verdict.met
    assert verdict.reason == CHECK_REASON
    assert "read-only check" in verdict.message


def test_the_check_job_is_the_runs_wiring_running_status() -> None:
    cr, (job, pod) = migrated()
    plan = decide(cr, [job], [pod], T0 + timedelta(minutes=1), S, wanted=frozenset({"web-2"}))
    manifest = check_job(plan)
    run = job["spec"]["template"]["spec"]["containers"][0]
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "status"  # read-only: no lock, nothing applied
    assert container["image"] == run["image"]
    assert [e for e in container["env"] if "valueFrom" in e] == [e for e in run["env"] if "valueFrom" in e]
    assert manifest["spec"]["backoffLimit"] == 0
    assert j.check_rollouts(manifest) == ["web-2"]
    assert not plan.of(HoldDeletion), "a check never holds a deletion: it only reads"
    # Asked again while it runs: the same one Job, no second.
    running = admit(manifest, T0 + timedelta(minutes=1))
    again = decide(cr, [running, job], [pod], T0 + timedelta(minutes=2), S, wanted=frozenset({"web-2"}))
    assert not again.of(CreateJob)


def test_the_same_database_verifies_the_rollout_and_releases_its_pods() -> None:
    cr, (job, pod) = migrated()
    at = T0 + timedelta(minutes=1)
    manifest = check_job(decide(cr, [job], [pod], at, S, wanted=frozenset({"web-2"})))
    objects = finish(manifest, report([V1, V2], OLD_DB, command="status"), at)
    plan = decide(
        cr, [objects[0], job], [*objects[1:], pod], at + timedelta(seconds=10), S, frozenset({"web-2"})
    )
    cr = apply(cr, plan)
    assert evaluate(pin(V2), cr).met
    assert not evaluate(pin(V2, "web-3"), cr).met, "another rollout is checked on its own"
    names = [type(a).__name__ for a in plan.actions]
    assert names.index("PatchStatus") < names.index("DeleteJob"), "recorded before its Job goes"
    assert any(isinstance(e, EmitEvent) and e.reason == database_check.REASON_VERIFIED for e in plan.actions)
    assert not plan.of(CreateJob), "verified: no second check, no run"


def test_another_database_behind_the_same_secret_holds_the_pods_and_starts_a_run() -> None:
    """The issue's story: the Secret was changed in Git to point at a new, empty database."""
    cr, (job, pod) = migrated()
    at = T0 + timedelta(minutes=1)
    manifest = check_job(decide(cr, [job], [pod], at, S, wanted=frozenset({"web-2"})))
    objects = finish(manifest, report([], NEW_DB, command="status"), at)
    plan = decide(
        cr, [objects[0], job], [*objects[1:], pod], at + timedelta(seconds=10), S, frozenset({"web-2"})
    )
    cr = apply(cr, plan)
    warning = [a for a in plan.of(EmitEvent) if a.reason == database_check.REASON_MOVED]
    assert warning
    assert warning[0].type == "Warning"
    assert identity.short(NEW_DB) in warning[0].message
    for verdict in (evaluate(pin(V2), cr), evaluate(pin(V1, "web-1"), cr)):
        assert not verdict.met
        assert "the Secret now points at another database" in verdict.message
    assert not evaluate(Requirement(migration="shop-db"), cr).met, "the label alone waits too"

    # The next pass starts a run against the new database (a new run hash, so a new Job).
    at += timedelta(minutes=1)
    plan = decide(cr, [job], [pod], at, S, wanted=frozenset({"web-2"}))
    runs = [a for a in plan.of(CreateJob) if not j.is_check_job(a.manifest)]
    assert len(runs) == 1
    assert runs[0].manifest["metadata"]["name"] != job["metadata"]["name"]
    assert not [a for a in plan.of(CreateJob) if j.is_check_job(a.manifest)], "no check while it runs"
    cr = apply(cr, plan)
    assert not evaluate(pin(V2), cr).met

    # The run applied V1 only there: V2 waits for its migration, V1 for a check against the new record.
    run2, pod2 = finish(runs[0].manifest, report([V1], NEW_DB), at)
    cr = apply(cr, decide(cr, [run2, job], [pod2, pod], at + timedelta(seconds=10), S))
    assert cr["status"]["database"]["fingerprint"] == NEW_DB
    assert evaluate(pin(V1), cr).reason == CHECK_REASON
    assert evaluate(pin(V2), cr).reason == "VersionNotApplied"
    # Settled: the run hash keeps what the check found, so no run flips back and forth.
    again = decide(cr, [run2, job], [pod2, pod], at + timedelta(minutes=1), S)
    assert not [a for a in again.of(CreateJob) if not j.is_check_job(a.manifest)]


def test_an_unreachable_database_keeps_the_pods_gated_and_is_retried() -> None:
    cr, (job, pod) = migrated()
    at = T0 + timedelta(minutes=1)
    first = check_job(decide(cr, [job], [pod], at, S, wanted=frozenset({"web-2"})))
    text = failure_report(Outcome.DATABASE_UNREACHABLE, "could not connect within 10s", kind="Unreachable")
    objects = finish(first, text, at, exit_code=3)
    observed = ([objects[0], job], [*objects[1:], pod])
    plan = decide(cr, *observed, at + timedelta(seconds=10), S, wanted=frozenset({"web-2"}))
    cr = apply(cr, plan)
    verdict = evaluate(pin(V2), cr)
    assert not verdict.met
    assert "the last check failed" in verdict.message
    assert "could not connect" in verdict.message
    assert any(a.reason == database_check.REASON_FAILED and a.type == "Warning" for a in plan.of(EmitEvent))
    assert not plan.of(CreateJob), "not before the retry is due"
    assert not plan.of(DeleteJob), "the failed Job stays until then"
    assert plan.recheck_after is not None

    later = at + timedelta(seconds=10 + database_check.RETRY_SECONDS)
    plan = decide(cr, *observed, later, S, wanted=frozenset({"web-2"}))
    assert [a.name for a in plan.of(DeleteJob)] == [first["metadata"]["name"]]
    retry = check_job(plan)
    assert retry["metadata"]["name"] != first["metadata"]["name"]


def test_disabled_means_no_check_and_pins_count_as_before() -> None:
    cr, (job, pod) = migrated({"databaseCheck": "Disabled"})
    assert evaluate(pin(V2), cr).met
    assert not decide(cr, [job], [pod], T0 + timedelta(minutes=1), S, wanted=frozenset({"web-2"})).of(
        CreateJob
    )


def test_versions_without_a_fingerprint_are_not_checked() -> None:
    """An older runner image reports no fingerprint: there is nothing to compare a check with."""
    cr = make_cr()
    plan = decide(cr, [], [], T0, S)
    cr = apply(cr, plan)
    (create,) = plan.of(CreateJob)
    job, pod = finish(create.manifest, report([V1, V2], None), T0)
    cr = apply(cr, decide(cr, [job], [pod], T0 + timedelta(seconds=10), S))
    assert evaluate(pin(V2), cr).met
    assert not decide(cr, [job], [pod], T0 + timedelta(minutes=1), S, wanted=frozenset({"web-2"})).of(
        CreateJob
    )


def test_the_rollout_of_a_pod_is_its_template_hash() -> None:
    labels = {"dbmigrate.dev/wait-for": "shop-db", "pod-template-hash": "5d8c7b9f4"}
    annotations = {"dbmigrate.dev/wait-for-version": f"models:{V2}"}
    requirement = requirement_of(labels, annotations, "web-5d8c7b9f4-x2k8q")
    assert requirement is not None
    assert requirement.rollout == "5d8c7b9f4"
    bare = requirement_of({"dbmigrate.dev/wait-for": "shop-db"}, annotations, "one-off")
    assert bare is not None
    assert bare.rollout == "pod/one-off"
    cr, _ = migrated()
    pods = [
        {"metadata": {"name": f"web-{h}-a", "labels": {**labels, "pod-template-hash": h}}}
        for h in ("a1", "b2")
    ]
    decisions = [
        Decision(pod, evaluate(pin(V2, rollout=h), cr)) for pod, h in zip(pods, ("a1", "b2"), strict=True)
    ]
    assert rollouts_to_check(decisions) == frozenset({"a1", "b2"})
