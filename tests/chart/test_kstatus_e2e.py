"""Our DatabaseMigration status judged by the kstatus library itself (issue #20): Flux, Helm 4's
`--wait` and kpt decide readiness with sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute, not with
our reading of it. hack/kstatus is that function behind `kubectl get -o json` (built and cached
by hack/build-binaries.sh kstatus).

The operator runs as its own process under the chart's identity against the control plane; the
migration Pods run a stand-in runner (node agent) that holds until the test lets it finish, so
each state is looked at while it lasts: InProgress while the run waits, runs or waits for
approval, and while a changed spec is not yet observed; Current once Ready; Failed when Stalled.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dbmigrate_operator import constants as c
from dbmigrate_runner.report import Outcome
from localcluster import Cluster, stack
from tests.operator.builders import failure_report, success_report
from tests.operator.scenarios import V1, V2
from tests.operator.test_approval import V1 as PLANNED_V1
from tests.operator.test_approval import V2 as PLANNED_V2
from tests.operator.test_approval import plan_report

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(400),
    pytest.mark.local_cluster("map_image: migration Job pods run a stand-in runner as local processes"),
]
IMAGE = "registry.example.com/kstatus-migrations:1.0.0"
# Holds until the file FAKE_HOLD names exists, then reports FAKE_REPORT and exits FAKE_EXIT.
HELD_RUNNER = """#!{python}
import os, pathlib, sys, time
hold = os.environ.get("FAKE_HOLD", "")
while hold and not pathlib.Path(hold).exists():
    time.sleep(0.2)
with open(os.environ["DBMIGRATE_REPORT_PATH"], "w") as f:
    f.write(os.environ.get("FAKE_REPORT", ""))
sys.exit(int(os.environ.get("FAKE_EXIT", "0")))
"""


@dataclass
class Judge:
    """Our condition and the library's verdict on one DatabaseMigration, every time it is looked at."""

    cluster: Cluster
    namespace: str
    kstatus: Path
    operator: stack.OperatorProcess
    seen: dict[str, set[tuple[str, str]]] = field(default_factory=dict)  # kstatus status -> ours

    def __call__(self, name: str) -> tuple[tuple[str, str], str, str]:
        obj = self.cluster.kubectl("get", "dbm", name, "-n", self.namespace, "-o", "json").stdout
        done = subprocess.run(
            [str(self.kstatus)], input=obj, capture_output=True, text=True, timeout=30, check=True
        )
        verdict = json.loads(done.stdout)
        assert verdict["name"] == name
        ours = stack.true_condition_in(json.loads(obj).get("status") or {})
        self.seen.setdefault(verdict["status"], set()).add(ours)
        return ours, verdict["status"], verdict["message"]

    def until(self, name: str, ours: tuple[str, str], what: str, timeout: float = 90) -> tuple[str, str]:
        """Wait for our condition `ours`; the library's verdict (status, message) then."""
        found: list[tuple[str, str]] = []

        def reached() -> bool:
            now, status, message = self(name)
            found[:] = [(status, message)]
            return now == ours

        stack.wait_for(reached, timeout, what)
        return found[0]


@pytest.fixture
def judged(cluster: Cluster, kstatus_bin: Path, tmp_path: Path) -> Iterator[tuple[Judge, Path]]:
    """The operator as its own process (the chart's identity, standalone) and a Judge for its namespace;
    yields the Judge and a directory for hold files."""
    stack.install_crd(cluster)
    name = f"kstatus-{uuid.uuid4().hex[:6]}"
    ns = cluster.create_namespace(name)
    kubeconfig = stack.install_operator_identity(cluster, ns, f"operator-{name}")
    runner = tmp_path / "bin" / "dbmigrate-runner"
    runner.parent.mkdir()
    runner.write_text(HELD_RUNNER.format(python=sys.executable))
    runner.chmod(runner.stat().st_mode | stat.S_IEXEC)
    cluster.map_image(IMAGE, ["dbmigrate-runner"], env={"PATH": f"{runner.parent}:/usr/bin:/bin"})
    cluster.kubectl(
        "create", "secret", "generic", "shop-db", "-n", ns,
        "--from-literal=url=postgres://shop:not-a-real-password@db.invalid:5432/shop",
    )  # fmt: skip
    env = {"DBMIGRATE_OPERATOR_NAMESPACE": ns, "DBMIGRATE_RESYNC_SECONDS": "10"}
    op = stack.OperatorProcess(kubeconfig, tmp_path / "operator.log", env=env)
    judge = Judge(cluster, ns, kstatus_bin, op)
    try:
        yield judge, tmp_path
    finally:
        op.stop()
        cluster.delete_namespace(ns)


def cr(namespace: str, name: str, env: dict[str, str], **spec: Any) -> str:
    return json.dumps(
        {
            "apiVersion": c.API_VERSION,
            "kind": c.KIND,
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "image": IMAGE,
                "database": {"urlSecretRef": {"name": "shop-db", "key": "url"}},
                "job": {"env": [{"name": k, "value": v} for k, v in env.items()]},
                **spec,
            },
        }
    )


def test_kstatus_follows_the_lifecycle(judged: tuple[Judge, Path]) -> None:
    judge, tmp = judged
    cluster, ns = judge.cluster, judge.namespace
    op = judge.operator
    hold = tmp / "release-shop"
    env = {"FAKE_HOLD": str(hold), "FAKE_REPORT": success_report([V1, V2])}
    cluster.kubectl("apply", "-f", "-", input=cr(ns, "shop-db", env))

    # Before the operator's first status write the library has nothing to go on: no observedGeneration,
    # no condition = Current. A kstatus fact (docs/argocd.md), not our state: it lasts until the
    # operator's first pass (here: until it starts).
    ours, status, _ = judge("shop-db")
    assert (ours, status) == (("", ""), "Current")

    op.start()
    # the Job exists, its Pod runs the held runner: Reconciling (JobCreated, then JobRunning)
    status, message = judge.until("shop-db", (c.RECONCILING, "JobRunning"), "the run to be running")
    assert status == "InProgress", message
    # held: still running, still InProgress (looked at again, not a passing moment)
    ours, status, _ = judge("shop-db")
    assert (ours, status) == ((c.RECONCILING, "JobRunning"), "InProgress")
    hold.touch()
    status, message = judge.until("shop-db", (c.READY, "Applied"), "Applied")
    assert status == "Current", message

    # a changed spec the operator has not looked at yet: generation 2, observedGeneration 1
    op.stop()
    hold2 = tmp / "release-shop-2"
    env2 = {"FAKE_HOLD": str(hold2), "FAKE_REPORT": success_report([V1, V2], command="upgrade")}
    cluster.kubectl("apply", "-f", "-", input=cr(ns, "shop-db", env2, target=V2))
    ours, status, message = judge("shop-db")
    assert ours == (c.READY, "Applied"), "the old verdict, of generation 1"
    assert status == "InProgress", message
    assert "generation is 2, but latest observed generation is 1" in message

    # a failed run: Stalled = Failed
    op.start()
    hold2.touch()
    judge.until("shop-db", (c.READY, "Applied"), "generation 2 Applied")
    report = failure_report(
        Outcome.MIGRATION_FAILED, 'column "bio" already exists', versions=[V1], migration=f"models:{V2}"
    )
    cluster.kubectl("apply", "-f", "-", input=cr(ns, "broken", {"FAKE_REPORT": report, "FAKE_EXIT": "5"}))
    status, message = judge.until("broken", (c.STALLED, "MigrationFailed"), "MigrationFailed")
    assert status == "Failed"
    assert 'column "bio" already exists' in message

    # waiting for a person: Reconciling (WaitingForApproval) = InProgress, for as long as it waits
    plan, plan_hash = plan_report([PLANNED_V1, PLANNED_V2], destructive=True)
    cluster.kubectl("apply", "-f", "-", input=cr(ns, "reviewed", {"FAKE_REPORT": plan}, approval="Manual"))
    status, message = judge.until(
        "reviewed", (c.RECONCILING, "WaitingForApproval"), "the plan waiting for approval"
    )
    assert status == "InProgress", message
    assert plan_hash in message

    # everything the library saw, by verdict: never Current while we were not Ready, never
    # InProgress on Ready or Stalled, Failed only on Stalled
    assert {kind for kind, _ in judge.seen["InProgress"]} <= {c.RECONCILING, c.READY}
    assert (c.READY, "Applied") in judge.seen["InProgress"]  # only the unobserved generation above
    assert judge.seen["Current"] <= {("", ""), (c.READY, "Applied")}
    assert {kind for kind, _ in judge.seen["Failed"]} == {c.STALLED}
