"""Deleting a DatabaseMigration never kills a running migration (issue 18, item 7), on the real
control plane: the real garbage collector, the Job controller, the node agent running the real
runner against the real PostgreSQL, and the operator as its own process with the chart's RBAC.

The run is kept under way deterministically: a test session holds the runners' advisory lock, so the
runner waits inside its container until the test lets go (no sleeps to race against).
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
    """Background propagation, kubectl's (and Helm's) default. Foreground propagation deletes the
    dependents first whatever the owner's finalizers: docs/operator.md#deleting says so."""
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
        (alive,) = e2e.jobs()
        assert alive["metadata"]["uid"] == job["metadata"]["uid"]
        assert not alive["metadata"].get("deletionTimestamp")
        now = running_container(e2e)
        assert now is not None, pods(e2e)
        assert now["metadata"]["uid"] == pod["metadata"]["uid"]
        assert not now["metadata"].get("deletionTimestamp")
        assert nothing_applied(e2e), "nothing applied while the lock is held"
    # The lock is free: the runner applies everything, then the resource (and its Job) goes.
    e2e.wait(lambda: migration(e2e) is None, "the resource gone once its run ended")
    assert e2e.tracking() == [("models", v) for v in stack.shop_versions()]  # each applied once
    reasons = [e["reason"] for e in stack.events_of(e2e.cluster, e2e.ns, NAME)]
    assert "Applied" in reasons, reasons
    e2e.wait(lambda: e2e.jobs() == [], "the Job garbage-collected after the resource")
    assert len([r for r in reasons if r == "RunStarted"]) == 1, "a deletion started no other run"


def test_a_forced_deletion_removes_the_finalizer_and_the_run_is_killed(e2e: E2E) -> None:
    """The documented way out (docs/operator.md#deleting): remove the finalizer by hand."""
    with lock_held_elsewhere(e2e.pg, e2e.db):
        start_held_run(e2e)
        e2e.cluster.kubectl("delete", "dbm", NAME, "-n", e2e.ns, "--wait=false")
        e2e.wait(lambda: (cr := migration(e2e)) and cr["metadata"].get("deletionTimestamp"), "Terminating")
        force = json.dumps([{"op": "remove", "path": "/metadata/finalizers"}])
        e2e.cluster.kubectl("patch", "dbm", NAME, "-n", e2e.ns, "--type=json", "-p", force)
        e2e.wait(lambda: migration(e2e) is None, "the resource gone at once")
        e2e.wait(lambda: e2e.jobs() == [] and pods(e2e) == [], "its Job and Pod garbage-collected")
    assert nothing_applied(e2e), "the killed runner applied nothing (it was waiting for the lock)"
