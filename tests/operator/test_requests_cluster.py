"""What one DatabaseMigration costs in API requests, counted by the real API server's audit log.

The operator runs as the chart runs it (its console script, leader election on, its own
ServiceAccount); the audit policy of localcluster records every write and every get, list and watch
of Pods, Jobs, DatabaseMigrations and Events. Requests about the test's namespace are the CR's own:
the operator's watches are cluster-wide (not in it) and its Lease lives in its own namespace.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from localcluster import Cluster, stack
from localcluster.stack import OperatorProcess
from tests.e2e.test_watch_scope import apply_migration, operator_as_itself
from tests.operator.builders import make_cr, success_report
from tests.operator.scenarios import V1, V2

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(300),
    pytest.mark.local_cluster("the API server's audit log counts the operator's requests"),
]
IMAGE = "registry.example.com/request-budget-migrations:1.0.0"
LIFECYCLE_BUDGET = 8  # issue #12: create → Job → Succeeded → Ready, all of it
RESYNC_SECONDS = 5.0
LOCK_WATCH = 4.0  # seconds between reads of a running migration's log (lockwatch.py)


class Running:
    def __init__(self, op: OperatorProcess, user: str) -> None:
        self.op, self.user = op, user

    def passes(self) -> float:
        """Reconcile passes so far (the operator's own counter): proof the resync ran."""
        for line in self.op.metrics().splitlines():
            if line.startswith("dbmigrate_reconcile_total "):
                return float(line.split()[1])
        return 0.0


@pytest.fixture(scope="module")
def running(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    env = {
        "DBMIGRATE_RESYNC_SECONDS": f"{RESYNC_SECONDS:g}",
        "DBMIGRATE_LOCK_WATCH_SECONDS": f"{LOCK_WATCH:g}",
    }
    tmp = tmp_path_factory.mktemp("request-budget")
    started = operator_as_itself(cluster, tmp, "dbmigrate-budget", IMAGE, env, lease="dbmigrate-budget")
    with started as (op, user):
        yield Running(op, user)


def requests_in(cluster: Cluster, user: str, namespace: str) -> list[str]:
    """``verb resource[/subresource][/name]`` of every audited request of ``user`` in ``namespace``."""
    out = []
    for event in cluster.audited_requests(user):
        ref = event.get("objectRef") or {}
        if ref.get("namespace") != namespace:
            continue
        resource = ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        out.append(f"{event.get('verb')} {resource}" + (f"/{ref['name']}" if ref.get("name") else ""))
    return out


def quiet(
    cluster: Cluster, user: str, namespace: str, *, still: float = 4.0, timeout: float = 60
) -> list[str]:
    """Wait until ``user`` has sent nothing about ``namespace`` for ``still`` seconds; its requests."""
    deadline = time.monotonic() + timeout
    seen = requests_in(cluster, user, namespace)
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = requests_in(cluster, user, namespace)
        if now != seen:
            seen, since = now, time.monotonic()
        elif time.monotonic() - since >= still:
            return seen
    raise TimeoutError(f"the operator kept sending requests about {namespace}: {seen}")


def job_closed(cluster: Cluster, namespace: str, name: str) -> bool:
    jobs: list[dict[str, Any]] = stack.jobs_of(cluster, namespace, name)
    return bool(jobs) and all(
        any(
            x["type"] == "Complete" and x["status"] == "True"
            for x in (j.get("status") or {}).get("conditions") or []
        )
        for j in jobs
    )


def test_a_whole_lifecycle_costs_at_most_8_requests_and_a_resync_of_it_none(
    cluster: Cluster, namespace: str, running: Running
) -> None:
    apply_migration(cluster, namespace, "shop-db", IMAGE, (V1, V2))
    stack.wait_for(
        lambda: stack.true_condition(cluster, namespace, "shop-db") == ("Ready", "Applied"), 120, "Applied"
    )
    stack.wait_for(lambda: job_closed(cluster, namespace, "shop-db"), 60, "the Job controller's Complete")
    lifecycle = quiet(cluster, running.user, namespace)
    summary = Counter(r.rsplit("/", 1)[0] if r.count("/") > 1 else r for r in lifecycle)
    assert len(lifecycle) <= LIFECYCLE_BUDGET, f"{len(lifecycle)} requests: {dict(summary)}\n{lifecycle}"
    assert any(r.startswith("create jobs/") for r in lifecycle), lifecycle  # it did run: not 0 for nothing

    # Resync passes over the unchanged CR: the controller's timer runs them (its counter moves), from
    # the view, without a single request.
    passes = running.passes()
    time.sleep(2 * RESYNC_SECONDS + 1)
    assert running.passes() >= passes + 2, "the resync loop ran no pass"
    assert requests_in(cluster, running.user, namespace) == lifecycle, "a resync pass sent requests"

    # Deleting it: Kubernetes' garbage collector removes the Job; the operator reads nothing back.
    cluster.kubectl("delete", "dbm", "shop-db", "-n", namespace, "--wait=true")
    stack.wait_for(lambda: not stack.jobs_of(cluster, namespace, "shop-db"), 60, "the Job collected")
    after = quiet(cluster, running.user, namespace)
    assert len(after) <= LIFECYCLE_BUDGET, f"{len(after)} requests over the whole life: {after}"
    assert not [r for r in after[len(lifecycle) :] if r.startswith(("get ", "list "))], after


def test_a_long_run_costs_one_log_read_per_period_and_rbac_allows_it(
    cluster: Cluster, namespace: str, running: Running
) -> None:
    """Issue #22: while a migration container runs past its first lock timeout, the operator reads
    its log's tail, once per DBMIGRATE_LOCK_WATCH_SECONDS, through the real API server with exactly
    the chart's RBAC (the node agent serves no logs: the read fails past RBAC, and the run still ends
    Ready). The stand-in runner takes 14 s with a 1 s lock timeout: reads at 2, 6, 10 (and maybe 14) s."""
    cluster.kubectl(
        "create", "secret", "generic", "shop-db", "-n", namespace, "--from-literal=url=postgres://u:p@db.invalid/x"
    )  # fmt: skip
    cr = make_cr("slow-db", namespace, image=IMAGE, locking={"timeout": "1s"})
    del cr["metadata"]["uid"], cr["metadata"]["generation"]
    env = [{"name": "FAKE_REPORT", "value": success_report([V1])}, {"name": "FAKE_SLEEP", "value": "14"}]
    cr["spec"]["job"] = {"env": env}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(cr))
    stack.wait_for(
        lambda: stack.true_condition(cluster, namespace, "slow-db") == ("Ready", "Applied"), 120, "Applied"
    )
    quiet(cluster, running.user, namespace)
    reads = [
        e
        for e in cluster.audited_requests(running.user)
        if (e.get("objectRef") or {}).get("namespace") == namespace
        and (e.get("objectRef") or {}).get("subresource") == "log"
        and e.get("stage") == "ResponseComplete"  # a log read is long-running: ResponseStarted too
    ]
    assert 2 <= len(reads) <= 4, [e.get("requestURI") for e in reads]
    for event in reads:
        assert event["verb"] == "get"
        assert "tailLines=40" in event["requestURI"]
        assert "limitBytes=16384" in event["requestURI"]
        assert "container=migrate" in event["requestURI"]
        assert event.get("responseStatus", {}).get("code") != 403, event  # the chart's RBAC allows it
