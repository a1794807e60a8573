"""The plan document: its hash covers exactly what the run would do, and a tampered document is refused."""

from __future__ import annotations

import json

import pytest

from dbmigrate_runner.sqlplan import Finding, SqlPlan, Step, content_hash, from_dict, hashes_to, render_sql


def _plan(*steps: Step) -> SqlPlan:
    return SqlPlan(tool="aerich", target=steps[-1].migration if steps else None, steps=list(steps)).seal()


def test_hash_covers_versions_sql_and_opaque_marks() -> None:
    base = _plan(Step("m:1", ["CREATE TABLE a (id INT)"]), Step("m:2", ["DROP TABLE b"]))
    assert len(base.hash) == 64
    assert _plan(Step("m:1", ["CREATE TABLE a (id INT)"]), Step("m:2", ["DROP TABLE b"])).hash == base.hash
    variants = [
        _plan(Step("m:1", ["CREATE TABLE a (id INT)"])),  # fewer migrations
        _plan(Step("m:1", ["CREATE TABLE a (id BIGINT)"]), Step("m:2", ["DROP TABLE b"])),  # other SQL
        _plan(Step("m:1", ["CREATE TABLE a (id INT)"]), Step("m:3", ["DROP TABLE b"])),  # other name
        _plan(Step("m:1", ["CREATE TABLE a (id INT)"]), Step("m:2", ["DROP TABLE b"], opaque=["py"])),
        _plan(Step("m:2", ["DROP TABLE b"]), Step("m:1", ["CREATE TABLE a (id INT)"])),  # other order
    ]
    assert len({base.hash, *(v.hash for v in variants)}) == len(variants) + 1
    tortoise = SqlPlan(tool="tortoise", target="m:2", steps=base.steps).seal()
    assert tortoise.hash != base.hash


def test_findings_do_not_change_the_hash_and_round_trip() -> None:
    plan = _plan(Step("m:1", ["DROP TABLE b"]))
    before = plan.hash
    plan.findings = [Finding("m:1", 0, "DropTable", "b", "drops table b")]
    assert plan.seal().hash == before
    back = from_dict(json.loads(plan.to_json()))
    assert back == plan


def test_tampered_document_is_refused() -> None:
    data = json.loads(_plan(Step("m:1", ["CREATE TABLE a (id INT)"])).to_json())
    data["steps"][0]["statements"] = ["DROP TABLE users"]
    with pytest.raises(ValueError, match="hash"):
        from_dict(data)
    with pytest.raises(ValueError, match="not a plan"):
        from_dict({"outcome": "Succeeded"})


def test_render_sql_marks_findings_and_python() -> None:
    plan = _plan(
        Step("m:1", ["CREATE TABLE a (id INT)", "DROP TABLE b"]), Step("m:2", [], opaque=["runs Python"])
    )
    plan.findings = [Finding("m:1", 1, "DropTable", "b", "drops table b")]
    text = render_sql(plan)
    assert text.splitlines()[0] == f"-- dbmigrate plan {plan.hash}"
    assert "-- DESTRUCTIVE (DropTable): drops table b\nDROP TABLE b;" in text
    assert "-- migration m:2\n-- NOT SQL: runs Python" in text
    assert "-- nothing to apply" in render_sql(_plan())


def test_silenced_lint_rules_are_part_of_the_hash() -> None:
    """What a reviewer approves includes what was not shown to them; no silence keeps the old hash."""
    steps = [Step("models:1_a", ['DROP INDEX "ix"'])]
    plain = SqlPlan("aerich", "models:1_a", steps).seal()
    assert plain.hash == SqlPlan("aerich", "models:1_a", steps, lint_ignore=[]).seal().hash
    quiet = SqlPlan("aerich", "models:1_a", steps, lint_ignore=["ban-drop-index", "b-rule"]).seal()
    assert quiet.hash != plain.hash
    assert (
        quiet.hash
        == SqlPlan("aerich", "models:1_a", steps, lint_ignore=["b-rule", "ban-drop-index"]).seal().hash
    )
    back = from_dict(json.loads(quiet.to_json()))
    assert back.lint_ignore == ["ban-drop-index", "b-rule"]
    doc = json.loads(quiet.to_json())
    doc["lint_ignore"] = []  # dropping the silence from the document is tampering
    with pytest.raises(ValueError, match="hash"):
        from_dict(doc)
    assert "-- lint rules silenced (spec.lint.ignore): b-rule, ban-drop-index" in render_sql(quiet)


def test_hash_covers_each_migration_file() -> None:
    """Same SQL, same marks, another file (other Python code): another plan."""
    one = _plan(Step("m:1", ["CREATE TABLE a (id INT)"], opaque=["py"], source="sha256:" + "1" * 64))
    other = _plan(Step("m:1", ["CREATE TABLE a (id INT)"], opaque=["py"], source="sha256:" + "2" * 64))
    assert one.hash != other.hash
    assert from_dict(json.loads(one.to_json())) == one
    assert one.v == 2
    assert f"-- migration m:1\n-- file sha256:{'1' * 64}\n-- NOT SQL: py" in render_sql(one)


def test_a_version_1_document_from_an_older_runner_is_still_checked() -> None:
    steps = [Step("m:1", ["CREATE TABLE a (id INT)"])]
    old = SqlPlan(tool="aerich", target="m:1", steps=steps, v=1).seal()
    data = json.loads(old.to_json())
    for step in data["steps"]:
        del step["source"]
    assert from_dict(data).hash == old.hash
    assert hashes_to("aerich", steps, old.hash)
    data["steps"][0]["statements"] = ["DROP TABLE users"]
    with pytest.raises(ValueError, match="hash"):
        from_dict(data)
    # A step that names its file is never checked as version 1 (which would ignore the file).
    sourced = [Step("m:1", ["CREATE TABLE a (id INT)"], source="sha256:" + "1" * 64)]
    assert not hashes_to("aerich", sourced, content_hash("aerich", sourced, v=1))
    with pytest.raises(ValueError, match="version"):
        from_dict({**json.loads(old.to_json()), "v": 3})
