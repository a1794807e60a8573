"""Reviewing changes end to end: spec.approval with the real runner against PostgreSQL, the operator
as its own process with the chart's RBAC, and ``kubectl dbm`` (our kubectl finding the plugin on PATH).

A destructive migration under OnDestructive waits with its findings in status; a stale approval
does nothing; the annotation written by ``kubectl dbm approve`` and a committed spec.approvedPlan
each run exactly the planned migrations.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from dbmigrate_operator import constants as c
from localcluster import stack
from tests.e2e.test_operator_e2e import E2E, NAME, e2e, operator

__all__ = ["e2e", "operator"]  # fixtures shared with the main e2e module

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.postgres,
    pytest.mark.timeout(400),
    pytest.mark.local_cluster(
        "map_image: migration Job pods run the real runner as local processes against PostgreSQL on loopback"
    ),
]
DROP = stack.aerich_migration('ALTER TABLE "product" DROP COLUMN "description";')
DROP_BIO = stack.aerich_migration('ALTER TABLE "customer" DROP COLUMN "bio";')
V4, V5 = "3_20261201000000_drop_description", "4_20261202000000_drop_bio"


def waiting(e2e: E2E) -> dict[str, Any] | None:
    status = e2e.status()
    if stack.true_condition_in(status) == (c.RECONCILING, "WaitingForApproval"):
        return status
    return None


def run_jobs(e2e: E2E) -> list[dict[str, Any]]:
    return [
        j for j in e2e.jobs() if (j["metadata"].get("labels") or {}).get("dbmigrate.dev/job-kind") != "plan"
    ]


def test_on_destructive_waits_and_approvals_run_exactly_the_plan(e2e: E2E) -> None:
    versions = stack.shop_versions()
    # Nothing destructive in the shop's own migrations: OnDestructive plans, then runs at once.
    e2e.apply_example(approval="OnDestructive")
    status = e2e.wait_ready()
    assert e2e.tracking() == [("models", v) for v in versions]
    assert status["plan"]["approvedBy"].startswith("approval OnDestructive")
    assert status["plan"]["pending"] == [f"models:{v}" for v in versions]
    (first_run,) = run_jobs(e2e)
    args = first_run["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-2:] == ["--expect-plan", status["plan"]["hash"]]

    # A new image that drops a column: the plan waits, with its finding, nothing runs.
    image = e2e.image(stack.shop_copy(e2e.tmp / "shop-drop", aerich={f"{V4}.py": DROP}))
    e2e.apply_example(image=image, approval="OnDestructive")
    status = e2e.wait(lambda: waiting(e2e), "WaitingForApproval")
    plan = status["plan"]
    assert plan["pending"] == [f"models:{V4}"]
    assert plan["findings"] == [
        {
            "migration": f"models:{V4}",
            "statement": 0,
            "kind": "DropColumn",
            "target": "product.description",
            "rule": "ban-drop-column",
            "severity": "destructive",
        }
    ]
    assert 'ALTER TABLE "product" DROP COLUMN "description";' in plan["sql"]
    assert status["phase"] == "Pending"
    assert stack.condition(e2e.cluster, e2e.ns, NAME, c.READY)["status"] == "False"
    assert plan["hash"] in stack.condition(e2e.cluster, e2e.ns, NAME, c.RECONCILING)["message"]

    # The plugin shows it.
    shown = stack.kubectl_dbm(e2e.cluster, "plan", NAME, "-n", e2e.ns)
    assert shown.returncode == 0, shown.stderr
    assert f"# plan {plan['hash']}" in shown.stdout
    assert "DropColumn product.description" in shown.stdout
    assert 'ALTER TABLE "product" DROP COLUMN "description";' in shown.stdout
    summary = stack.kubectl_dbm(e2e.cluster, "status", NAME, "-n", e2e.ns)
    assert "WaitingForApproval" in summary.stdout
    table = stack.kubectl_dbm(e2e.cluster, "status", "-n", e2e.ns).stdout.splitlines()
    assert table[0].split() == ["NAMESPACE", "NAME", "READY", "PHASE", "VERSION", "REASON"]
    assert table[1].split() == [
        e2e.ns,
        NAME,
        "False",
        "Pending",
        f"models:{versions[-1]}",
        "WaitingForApproval",
    ]
    assert plan["hash"] in summary.stdout

    # A stale approval (another plan's hash) approves nothing.
    stale = "0" * 64
    e2e.cluster.kubectl(
        "annotate", "dbm", NAME, "-n", e2e.ns, f"{c.APPROVE_ANNOTATION}={stale}", "--overwrite"
    )
    e2e.wait(
        lambda: stale in (stack.condition(e2e.cluster, e2e.ns, NAME, c.RECONCILING).get("message") or ""),
        "stale noted",
    )
    time.sleep(3)
    assert len(run_jobs(e2e)) == 1
    assert "description" in e2e.columns("product")

    # `kubectl dbm approve` without a terminal asks nothing and approves nothing unless --yes.
    refused = stack.kubectl_dbm(e2e.cluster, "approve", NAME, "-n", e2e.ns)
    assert refused.returncode == 1
    approved = stack.kubectl_dbm(e2e.cluster, "approve", NAME, "-n", e2e.ns, "--yes")
    assert approved.returncode == 0, approved.stderr
    status = e2e.wait_ready(generation=2)
    assert e2e.tracking() == [("models", v) for v in [*versions, V4]]
    assert "description" not in e2e.columns("product")
    assert status["plan"]["approvedBy"] == f"annotation {c.APPROVE_ANNOTATION}"
    assert status["lastRun"]["applied"] == [f"models:{V4}"]

    # From Git: Manual, a second destructive migration, spec.approvedPlan committed after review.
    image = e2e.image(
        stack.shop_copy(e2e.tmp / "shop-drop-bio", aerich={f"{V4}.py": DROP, f"{V5}.py": DROP_BIO})
    )
    e2e.apply_example(image=image, approval="Manual")
    status = e2e.wait(lambda: waiting(e2e), "WaitingForApproval again")
    h = status["plan"]["hash"]
    assert status["plan"]["pending"] == [f"models:{V5}"]
    e2e.apply_example(image=image, approval="Manual", approvedPlan=h)
    status = e2e.wait_ready(generation=4)
    assert e2e.tracking()[-1] == ("models", V5)
    assert status["plan"]["approvedBy"] == "spec.approvedPlan"
    assert "bio" not in e2e.columns("customer")

    # rerun through the plugin (`kubectl dbm logs` needs the kubelet's log endpoint, which the node
    # agent does not serve: the real-node suite runs it on a kubelet; tests/operator/test_kubectl_dbm.py
    # covers the plan-from-log path)
    rerun = stack.kubectl_dbm(e2e.cluster, "rerun", NAME, "-n", e2e.ns)
    assert rerun.returncode == 0, rerun.stderr
    annotations = json.loads(e2e.cluster.kubectl("get", "dbm", NAME, "-n", e2e.ns, "-o", "json").stdout)[
        "metadata"
    ]["annotations"]
    assert c.RERUN_ANNOTATION in annotations
    e2e.no_password_anywhere()


INDEX = stack.aerich_migration('CREATE INDEX "idx_product_name" ON "product" ("name");')
UNCLASSIFIED = stack.aerich_migration("CALL purge_old_products();")
V_INDEX, V_CALL = "3_20261201000000_index_name", "4_20261202000000_call_purge"


def test_lint_hazard_waits_and_spec_lint_ignore_silences_it_in_the_hash(e2e: E2E) -> None:
    """A lock hazard alone (an index built without CONCURRENTLY on an existing table) makes
    OnDestructive wait; spec.lint.ignore (through the CRD, the plan Job and the approved run's env)
    silences it, the plan records the silence, and the run goes ahead. An unclassified CALL waits."""
    e2e.apply_example(approval="OnDestructive")
    e2e.wait_ready()

    image = e2e.image(stack.shop_copy(e2e.tmp / "shop-index", aerich={f"{V_INDEX}.py": INDEX}))
    e2e.apply_example(image=image, approval="OnDestructive")
    status = e2e.wait(lambda: waiting(e2e), "WaitingForApproval on a hazard")
    plan = status["plan"]
    assert plan["reviewCount"] == 1
    (finding,) = plan["findings"]
    assert (finding["rule"], finding["severity"], finding["target"]) == (
        "require-concurrent-index-creation",
        "hazard",
        "product",
    )
    waiting_hash = plan["hash"]

    e2e.apply_example(
        image=image, approval="OnDestructive", lint={"ignore": ["require-concurrent-index-creation"]}
    )
    status = e2e.wait_ready(generation=3)
    assert status["plan"]["lintIgnore"] == ["require-concurrent-index-creation"]
    assert status["plan"]["hash"] != waiting_hash  # the silence is part of what was approved
    assert status["plan"]["approvedBy"].startswith("approval OnDestructive")
    assert status["plan"]["findingsCount"] == 0
    assert e2e.tracking()[-1] == ("models", V_INDEX)
    (run,) = [j for j in run_jobs(e2e) if j["metadata"]["name"] == status["lastRun"]["job"]]
    env = run["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "DBMIGRATE_LINT_IGNORE", "value": "require-concurrent-index-creation"} in env

    image = e2e.image(
        stack.shop_copy(e2e.tmp / "shop-call", aerich={f"{V_INDEX}.py": INDEX, f"{V_CALL}.py": UNCLASSIFIED})
    )
    e2e.apply_example(
        image=image, approval="OnDestructive", lint={"ignore": ["require-concurrent-index-creation"]}
    )
    status = e2e.wait(lambda: waiting(e2e), "WaitingForApproval on an unclassified statement")
    (finding,) = status["plan"]["findings"]
    assert (finding["rule"], finding["severity"], finding["target"]) == (
        "unclassified-statement",
        "unclassified",
        "Call",
    )
