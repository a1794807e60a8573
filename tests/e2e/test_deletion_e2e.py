"""Deleting a DatabaseMigration never kills a running migration (issue 18, item 7), on the real
control plane: the real garbage collector, the Job controller, the node agent running the real
runner against the real PostgreSQL, and the operator as its own process with the chart's RBAC.

The run is kept under way deterministically: a test session holds the runners' advisory lock, so the
runner waits inside its container until the test lets go (no sleeps to race against).

Foreground deletion (`--cascade=foreground`, Argo CD's default prune) makes the garbage collector
delete the Job first, whatever the owner's finalizers: the chart's running-migrations admission policy
(templates/running-migrations-policy.yaml, installed by the `operator` fixture) refuses it while the
Job runs. The audit log shows the collector's refused attempts, so the tests prove it tried.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from dbmigrate_operator import constants as c
from localcluster import stack
from localcluster.postgres import lock_held_elsewhere
from tests.e2e.test_operator_e2e import E2E, NAME, e2e, operator

__all__ = ["e2e", "operator"]  # the fixtures of test_operator_e2e, one operator process per module

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.postgres,
    pytest.mark.timeout(300),
    pytest.mark.local_cluster(
        "map_image: migration Job pods run the real runner as local processes against PostgreSQL on loopback"
    ),
]
GC_WINDOW = 3.0  # seconds given to the garbage collector to act on a deleted owner (it takes ms)
GC_USER = "system:serviceaccount:kube-system:generic-garbage-collector"  # --use-service-account-credentials


def migration(e2e: E2E) -> dict[str, Any] | None:
    found = e2e.cluster.kubectl("get", "dbm", NAME, "-n", e2e.ns, "-o", "json", check=False)
    return dict(json.loads(found.stdout)) if found.returncode == 0 else None


def pods(e2e: E2E) -> list[dict[str, Any]]:
    selector = f"{c.MIGRATION_LABEL}={NAME}"
    return list(stack.get_json(e2e.cluster, e2e.ns, "pods", "-l", selector)["items"])


def running_container(e2e: E2E) -> dict[str, Any] | None:
    for pod in pods(e2e):
        for cs in pod.get("status", {}).get("containerStatuses") or []:
            if "running" in (cs.get("state") or {}):
                return pod
    return None


def nothing_applied(e2e: E2E) -> bool:
    """No tracking table yet: the runner creates it under the lock, so it never got that far."""
    return e2e.pg.psql(e2e.db, "SELECT to_regclass('aerich') IS NULL").strip() == "t"


def gc_deletes_of(e2e: E2E, job: str) -> list[int]:
    """Response codes of the garbage collector's DELETEs of `job`, from the API server's audit log."""
    return [
        int((e.get("responseStatus") or {}).get("code", 0))
        for e in e2e.cluster.audited_writes()
        if (e.get("user") or {}).get("username") == GC_USER
        and e.get("verb") == "delete"
        and (e.get("objectRef") or {}).get("resource") == "jobs"
        and (e.get("objectRef") or {}).get("namespace") == e2e.ns
        and (e.get("objectRef") or {}).get("name") == job
    ]


def assert_run_untouched(e2e: E2E, job: dict[str, Any], pod: dict[str, Any]) -> None:
    """The same Job and Pod, neither being deleted, the runner still waiting: nothing applied."""
    (alive,) = e2e.jobs()
    assert alive["metadata"]["uid"] == job["metadata"]["uid"]
    assert not alive["metadata"].get("deletionTimestamp")
    now = running_container(e2e)
    assert now is not None, pods(e2e)
    assert now["metadata"]["uid"] == pod["metadata"]["uid"]
    assert not now["metadata"].get("deletionTimestamp")
    assert nothing_applied(e2e), "nothing applied while the lock is held"


def start_held_run(e2e: E2E) -> tuple[dict[str, Any], dict[str, Any]]:
    """Apply the example while the lock is held elsewhere: (its Job, its Pod) with the runner waiting."""
    e2e.apply_example()
    pod = e2e.wait(lambda: running_container(e2e), "the runner running (waiting for the lock)")
    (job,) = e2e.jobs()
    held = e2e.wait(
        lambda: (cr := migration(e2e)) and c.RUN_FINALIZER in cr["metadata"].get("finalizers", []) and cr,
        "the run-in-progress finalizer",
    )
    assert held["metadata"]["finalizers"] == [c.RUN_FINALIZER]
    return job, pod


def test_deleting_during_a_run_waits_for_it_to_end(e2e: E2E) -> None:
    """Background propagation, kubectl's (and Helm's) default: the run-in-progress finalizer holds."""
    with lock_held_elsewhere(e2e.pg, e2e.db):
        job, pod = start_held_run(e2e)
        e2e.cluster.kubectl("delete", "dbm", NAME, "-n", e2e.ns, "--wait=false", "--cascade=background")
        terminating = e2e.wait(
            lambda: (cr := migration(e2e)) and "being deleted" in json.dumps(cr.get("status") or {}) and cr,
            "the operator saying the deletion waits for the run (on the old code the CR was gone)",
        )
        assert terminating["metadata"]["deletionTimestamp"]
        time.sleep(GC_WINDOW)  # the garbage collector's chance to take the Job (it does on the old code)
        assert migration(e2e) is not None, "the resource went while its run was under way"
        assert_run_untouched(e2e, job, pod)
    # The lock is free: the runner applies everything, then the resource (and its Job) goes.
    e2e.wait(lambda: migration(e2e) is None, "the resource gone once its run ended")
    assert e2e.tracking() == [("models", v) for v in stack.shop_versions()]  # each applied once
    reasons = [e["reason"] for e in stack.events_of(e2e.cluster, e2e.ns, NAME)]
    assert "Applied" in reasons, reasons
    e2e.wait(lambda: e2e.jobs() == [], "the Job garbage-collected after the resource")
    assert len([r for r in reasons if r == "RunStarted"]) == 1, "a deletion started no other run"


def test_a_foreground_deletion_during_a_run_waits_for_it_to_end(e2e: E2E) -> None:
    """`kubectl delete --cascade=foreground` (and Argo CD's prune): the garbage collector tries to
    delete the running Job first and is refused (on the old chart it deleted it and the run died);
    once the run has applied everything, the resource and its Job go."""
    with lock_held_elsewhere(e2e.pg, e2e.db):
        job, pod = start_held_run(e2e)
        name = job["metadata"]["name"]
        e2e.cluster.kubectl("delete", "dbm", NAME, "-n", e2e.ns, "--wait=false", "--cascade=foreground")
        e2e.wait(
            lambda: (cr := migration(e2e)) and "being deleted" in json.dumps(cr.get("status") or {}),
            "the operator saying the deletion waits for the run",
        )
        refused = e2e.wait(lambda: gc_deletes_of(e2e, name), "the garbage collector's attempt on the Job")
        assert set(refused) == {403}, refused  # refused by the policy, every time
        time.sleep(GC_WINDOW)  # its retries (backoff) meanwhile: all refused
        assert set(gc_deletes_of(e2e, name)) == {403}
        assert migration(e2e) is not None, "the resource went while its run was under way"
        assert_run_untouched(e2e, job, pod)
    e2e.wait(lambda: migration(e2e) is None, "the resource gone once its run ended")
    assert e2e.tracking() == [("models", v) for v in stack.shop_versions()]  # applied fully, once
    reasons = [e["reason"] for e in stack.events_of(e2e.cluster, e2e.ns, NAME)]
    assert "Applied" in reasons, reasons
    e2e.wait(lambda: e2e.jobs() == [] and pods(e2e) == [], "the Job and Pod collected after the run")
    assert len([r for r in reasons if r == "RunStarted"]) == 1, "a deletion started no other run"


def test_deleting_the_job_forces_a_foreground_deletion_and_kills_the_run(e2e: E2E) -> None:
    """The documented way to stop a run (docs/operator.md#deleting): a person's own delete of the
    Job is not refused; the operator then lets the resource go, and the killed runner applied
    nothing (it was waiting for the lock)."""
    with lock_held_elsewhere(e2e.pg, e2e.db):
        job, pod = start_held_run(e2e)
        name = job["metadata"]["name"]
        e2e.cluster.kubectl("delete", "dbm", NAME, "-n", e2e.ns, "--wait=false", "--cascade=foreground")
        e2e.wait(lambda: (cr := migration(e2e)) and cr["metadata"].get("deletionTimestamp"), "Terminating")
        e2e.wait(lambda: gc_deletes_of(e2e, name), "the garbage collector's attempt on the Job")
        time.sleep(GC_WINDOW)
        assert_run_untouched(e2e, job, pod)  # on the old chart the Job was already gone
        e2e.cluster.kubectl("delete", "job", name, "-n", e2e.ns, "--wait=false")
        e2e.wait(lambda: migration(e2e) is None, "the resource gone once its Job was deleted")
        e2e.wait(lambda: e2e.jobs() == [] and pods(e2e) == [], "its Job and Pod gone")
    assert nothing_applied(e2e), "the killed runner applied nothing (it was waiting for the lock)"


def test_removing_the_finalizer_lets_the_resource_go_and_the_run_finish(e2e: E2E) -> None:
    """With the operator gone, its finalizer is removed by hand: the resource goes at once, but the
    garbage collector still may not delete the running Job (dangling owner); the run ends, then the
    Job is collected. On the old chart the Job and Pod were collected at once, killing the run."""
    with lock_held_elsewhere(e2e.pg, e2e.db):
        job, pod = start_held_run(e2e)
        e2e.cluster.kubectl("delete", "dbm", NAME, "-n", e2e.ns, "--wait=false")
        e2e.wait(lambda: (cr := migration(e2e)) and cr["metadata"].get("deletionTimestamp"), "Terminating")
        force = json.dumps([{"op": "remove", "path": "/metadata/finalizers"}])
        e2e.cluster.kubectl("patch", "dbm", NAME, "-n", e2e.ns, "--type=json", "-p", force)
        e2e.wait(lambda: migration(e2e) is None, "the resource gone at once")
        e2e.wait(lambda: gc_deletes_of(e2e, job["metadata"]["name"]), "the garbage collector's attempt")
        time.sleep(GC_WINDOW)
        assert_run_untouched(e2e, job, pod)
    e2e.wait(lambda: e2e.jobs() == [] and pods(e2e) == [], "the Job collected once the run ended")
    assert e2e.tracking() == [("models", v) for v in stack.shop_versions()]
