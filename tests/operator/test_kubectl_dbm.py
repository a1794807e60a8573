"""``kubectl dbm`` paths the control plane of the tests cannot serve (the node agent has no kubelet log
endpoint): the plan read from the plan Job's log, checked against status, and ``logs``. kubectl is a
stand-in script here that answers from files; the rest is tested on the control plane
(tests/e2e/test_approval_e2e.py)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from dbmigrate_operator import kubectl_dbm
from dbmigrate_runner.sqlplan import Finding, SqlPlan, Step

STUB = """#!{python}
import json, sys
from pathlib import Path
here = Path({here!r})
args = [a for a in sys.argv[1:]]
(here / "calls.jsonl").open("a").write(json.dumps(args) + "\\n")
if "get" in args:
    print((here / "cr.json").read_text())
elif "logs" in args:
    print((here / "log.txt").read_text())
elif "annotate" in args:
    print("annotated")
"""


def plan_document() -> SqlPlan:
    plan = SqlPlan(
        tool="aerich", target="models:3_x", steps=[Step("models:3_x", ['ALTER TABLE "p" DROP COLUMN "d"'])]
    )
    plan.findings = [Finding("models:3_x", 0, "DropColumn", "p.d", "drops column d of p")]
    return plan.seal()


@pytest.fixture
def stub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "kubectl"
    script.write_text(STUB.format(python=sys.executable, here=str(tmp_path)))
    script.chmod(0o755)
    monkeypatch.setenv("KUBECTL", str(script))
    return tmp_path


def write_cr(where: Path, plan: dict[str, Any]) -> None:
    cr = {
        "metadata": {"name": "shop-db", "namespace": "shop"},
        "spec": {"image": "x:1"},
        "status": {"plan": plan, "lastRun": {"job": "shop-db-abc"}},
    }
    (where / "cr.json").write_text(json.dumps(cr))


def run(*argv: str) -> str:
    out = io.StringIO()
    assert kubectl_dbm.run(kubectl_dbm.make_parser().parse_args(list(argv)), out) == 0
    return out.getvalue()


def test_plan_from_the_log_when_status_has_no_sql(stub: Path) -> None:
    doc = plan_document()
    write_cr(stub, {"hash": doc.hash, "job": "shop-db-abc-plan", "pendingCount": 1, "sqlOmitted": "too big"})
    (stub / "log.txt").write_text(
        json.dumps({"event": "run.start"})
        + "\n"
        + json.dumps({"event": "plan.document", "plan": doc.to_dict()})
    )
    text = run("plan", "shop-db", "-n", "shop")
    assert f"# plan {doc.hash}" in text
    assert "-- DESTRUCTIVE (DropColumn): drops column d of p" in text
    calls = [json.loads(line) for line in (stub / "calls.jsonl").read_text().splitlines()]
    assert ["-n", "shop", "logs", "job/shop-db-abc-plan", "-c", "migrate"] in calls


def test_a_log_plan_with_another_hash_is_refused(stub: Path) -> None:
    doc = plan_document()
    write_cr(stub, {"hash": "1" * 64, "job": "shop-db-abc-plan", "pendingCount": 1})
    (stub / "log.txt").write_text(json.dumps({"event": "plan.document", "plan": doc.to_dict()}))
    with pytest.raises(kubectl_dbm.Failure, match="status says 1111"):
        run("plan", "shop-db", "-n", "shop")
    tampered = doc.to_dict()
    tampered["steps"][0]["statements"] = ["SELECT 1"]
    write_cr(stub, {"hash": doc.hash, "job": "shop-db-abc-plan", "pendingCount": 1})
    (stub / "log.txt").write_text(json.dumps({"event": "plan.document", "plan": tampered}))
    with pytest.raises(kubectl_dbm.Failure, match="not usable"):
        run("plan", "shop-db", "-n", "shop")


def test_plan_names_the_image_and_each_file_and_a_changed_file_is_refused(stub: Path) -> None:
    """What the reviewer approves: the SQL, each migration file's digest, the image the run uses."""
    doc = SqlPlan(
        tool="tortoise",
        target="models:0004_fill",
        steps=[Step("models:0004_fill", [], opaque=["runs Python"], source="sha256:" + "a" * 64)],
    ).seal()
    image = "registry.example.com/m@sha256:" + "d" * 64
    record = {"hash": doc.hash, "job": "shop-db-abc-plan", "pendingCount": 1, "image": image}
    write_cr(stub, record)
    (stub / "log.txt").write_text(json.dumps({"event": "plan.document", "plan": doc.to_dict()}))
    text = run("plan", "shop-db", "-n", "shop")
    assert f"# planned from image {image}: the approved run uses it" in text
    assert f"-- migration models:0004_fill\n-- file sha256:{'a' * 64}\n-- NOT SQL: runs Python" in text
    other_code = doc.to_dict()
    other_code["steps"][0]["source"] = "sha256:" + "b" * 64
    (stub / "log.txt").write_text(json.dumps({"event": "plan.document", "plan": other_code}))
    with pytest.raises(kubectl_dbm.Failure, match="not usable"):
        run("plan", "shop-db", "-n", "shop")


def test_logs_reads_the_last_runs_job(stub: Path) -> None:
    write_cr(stub, {})
    (stub / "log.txt").write_text('{"event": "run.end"}')
    assert '"run.end"' in run("logs", "shop-db", "-n", "shop")
    calls = [json.loads(line) for line in (stub / "calls.jsonl").read_text().splitlines()]
    assert calls[-1] == ["-n", "shop", "logs", "job/shop-db-abc", "-c", "migrate"]
