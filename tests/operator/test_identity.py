"""status.database: the versions in status are one database's, and a pin counts only that one's
(issue 18 items 1 and 9). Driven through the controller's decision and judged by the gate's."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from dbmigrate_operator import ancestry, identity
from dbmigrate_operator.actions import CreateJob, PatchStatus, Plan
from dbmigrate_operator.gating.requirement import Requirement, evaluate
from dbmigrate_operator.reconcile import decide
from dbmigrate_operator.settings import Settings
from dbmigrate_runner.report import AppState, Outcome, Report, encode
from tests.operator.builders import T0, admit, completed, make_cr, merge, terminated_pod

S = Settings()
V1, V2 = "0_20260101000000_init", "1_20260102000000_add_bio"
OLD_DB = {"fingerprint": "0123456789abcdef"}
NEW_DB = {"fingerprint": "fedcba9876543210"}


def report(versions: list[str], database: dict[str, str] | None, *, tool: str = "aerich") -> str:
    app = "alembic" if tool == "alembic" else "models"
    state = AppState(current=versions[-1], count=len(versions), versions=versions)
    if tool == "alembic":
        state.heads = [versions[-1]]
    return encode(
        Report(outcome=Outcome.SUCCEEDED, tool=tool, command="upgrade", apps={app: state}, database=database)
    )


def apply(cr: dict[str, Any], plan: Plan) -> dict[str, Any]:
    out = dict(cr)
    for action in plan.of(PatchStatus):
        out["status"] = merge(out.get("status") or {}, action.patch)
    return out


def run(cr: dict[str, Any], text: str, at: Any) -> tuple[dict[str, Any], list[Any]]:
    """Decide until the CR's Job exists, finish it with report `text`; the CR after, and the objects."""
    plan = decide(cr, [], [], at, S)
    cr = apply(cr, plan)
    (create,) = plan.of(CreateJob)
    job = completed(admit(create.manifest, at), at + timedelta(seconds=30))
    pod = terminated_pod(job, 0, text, at + timedelta(seconds=30))
    cr = apply(cr, decide(cr, [job], [pod], at + timedelta(seconds=31), S))
    return cr, [job, pod]


def pin(version: str) -> Requirement:
    return Requirement(migration="shop-db", app="models", version=version, rollout="web-1")


def checked(cr: dict[str, Any]) -> dict[str, Any]:
    """The CR as after a database check verified rollout web-1 against its recorded database
    (test_database_check.py decides that part)."""
    fingerprint = cr["status"]["database"]["fingerprint"]
    verified = [{"rollout": "web-1", "fingerprint": fingerprint}]
    status = {**cr["status"], "databaseCheck": {"verified": verified}}
    return {**cr, "status": status}


def moved(cr: dict[str, Any], **spec: Any) -> dict[str, Any]:
    out = make_cr(generation=cr["metadata"]["generation"] + 1, status=cr["status"], **spec)
    return out


def test_the_versions_are_recorded_with_their_database() -> None:
    cr, _ = run(make_cr(), report([V1, V2], OLD_DB), T0)
    assert cr["status"]["database"]["ref"] == identity.ref(cr["spec"])
    assert cr["status"]["database"]["fingerprint"] == OLD_DB["fingerprint"]
    assert "name" not in cr["status"]["database"]  # the database's name is the Secret's
    assert evaluate(pin(V2), checked(cr)).met


def test_a_pin_waits_for_the_run_against_a_new_database() -> None:
    """The issue's case: the new ReplicaSet (pinned to models:V2) was released against an empty database
    because status still listed the old database's versions."""
    cr, (job, pod) = run(make_cr(), report([V1, V2], OLD_DB), T0)
    cr = moved(cr, database={"urlSecretRef": {"name": "shop-db-new", "key": "url"}})
    plan = decide(cr, [job], [pod], T0 + timedelta(minutes=5), S)
    assert plan.of(CreateJob), "a changed spec.database starts a run"
    cr = apply(cr, plan)
    assert cr["status"]["appliedVersions"][-1]["version"] == V2  # still the old database's, recorded so
    verdict = evaluate(pin(V2), cr)
    assert not verdict.met
    assert verdict.reason == "DatabaseNotRecorded"
    assert not evaluate(pin(V1), cr).met

    # The run against the new database applied V1 only: V2 waits, V1 is met.
    (create,) = plan.of(CreateJob)
    job2 = completed(admit(create.manifest, T0 + timedelta(minutes=5)), T0 + timedelta(minutes=6))
    pod2 = terminated_pod(job2, 0, report([V1], NEW_DB), T0 + timedelta(minutes=6))
    cr = apply(cr, decide(cr, [job2, job], [pod2, pod], T0 + timedelta(minutes=7), S))
    assert cr["status"]["database"]["fingerprint"] == NEW_DB["fingerprint"]
    assert evaluate(pin(V1), checked(cr)).met
    assert not evaluate(pin(V2), checked(cr)).met


def test_a_tool_change_is_a_database_change_too() -> None:
    cr, (job, pod) = run(make_cr(), report([V1], OLD_DB), T0)
    cr = apply(moved(cr, tool="tortoise"), decide(moved(cr, tool="tortoise"), [job], [pod], T0, S))
    assert not evaluate(pin(V1), cr).met


def test_another_spec_change_keeps_the_pins_met_while_its_run_is_under_way() -> None:
    """A new image is not a new database: pods pinned to what is applied keep starting."""
    cr, (job, pod) = run(make_cr(), report([V1, V2], OLD_DB), T0)
    cr = moved(cr, image="registry.example.com/shop-migrations:1.5.0")
    plan = decide(cr, [job], [pod], T0 + timedelta(minutes=5), S)
    assert plan.of(CreateJob)
    cr = apply(cr, plan)
    assert evaluate(pin(V2), checked(cr)).met


def test_versions_without_a_database_record_do_not_meet_a_pin() -> None:
    cr, _ = run(make_cr(), report([V1], OLD_DB), T0)
    del cr["status"]["database"]
    assert not evaluate(pin(V1), cr).met


def test_an_older_operators_status_gets_its_record_from_the_last_successful_run() -> None:
    """Upgrading the operator: the Jobs are gone, status has versions but no record. They are the
    current spec's when its run is the last one and succeeded."""
    cr, _ = run(make_cr(), report([V1], None), T0)
    del cr["status"]["database"]
    cr = apply(cr, decide(cr, [], [], T0 + timedelta(hours=1), S))
    assert cr["status"]["database"]["ref"] == identity.ref(cr["spec"])
    assert evaluate(pin(V1), cr).met


def test_a_report_from_another_database_replaces_the_ancestry_never_merges() -> None:
    """Same spec, rerun, but the Secret now points at another server: its revisions only."""
    revs = ["aaaaaaaaaaaa", "bbbbbbbbbbbb"]
    cr, _ = run(make_cr(tool="alembic"), report(revs, OLD_DB, tool="alembic"), T0)
    assert ancestry.known(cr["status"]) is not None
    rerun = make_cr(tool="alembic", annotations={"dbmigrate.dev/rerun": "1"}, status=cr["status"])
    cr, _ = run(
        rerun, report(["bbbbbbbbbbbb", "cccccccccccc"], NEW_DB, tool="alembic"), T0 + timedelta(hours=1)
    )
    known = ancestry.known(cr["status"])
    assert known is not None
    assert known.revisions == {"bbbbbbbbbbbb", "cccccccccccc"}  # aaaa was the other database's
    assert cr["status"]["database"]["fingerprint"] == NEW_DB["fingerprint"]


def test_the_same_database_keeps_merging_its_ancestry() -> None:
    revs = ["aaaaaaaaaaaa", "bbbbbbbbbbbb"]
    cr, _ = run(make_cr(tool="alembic"), report(revs, OLD_DB, tool="alembic"), T0)
    rerun = make_cr(tool="alembic", annotations={"dbmigrate.dev/rerun": "1"}, status=cr["status"])
    cr, _ = run(
        rerun, report(["bbbbbbbbbbbb", "cccccccccccc"], OLD_DB, tool="alembic"), T0 + timedelta(hours=1)
    )
    known = ancestry.known(cr["status"])
    assert known is not None
    assert "aaaaaaaaaaaa" in known.revisions


def test_a_ref_names_secret_keys_and_the_tool_never_values() -> None:
    spec = {"database": {"secretRef": {"name": "db"}}}
    assert identity.ref(spec) == identity.ref({"database": {"secretRef": {"name": "db", "portKey": "port"}}})
    assert identity.ref(spec) != identity.ref({**spec, "tool": "alembic"})
    assert identity.ref(spec) != identity.ref({"database": {"secretRef": {"name": "db2"}}})
    assert len(identity.ref(spec)) == identity.REF_CHARS


def test_a_report_without_a_fingerprint_clears_the_recorded_one() -> None:
    """Status is written as a merge patch: a key left out would keep the previous database's value."""
    cr, _ = run(make_cr(), report([V1], OLD_DB), T0)
    rerun = make_cr(annotations={"dbmigrate.dev/rerun": "1"}, status=cr["status"])
    cr, _ = run(rerun, report([V1], None), T0 + timedelta(hours=1))  # an older runner image
    assert cr["status"]["database"]["fingerprint"] == ""
