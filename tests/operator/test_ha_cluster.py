"""Several operator replicas against the real control plane (localcluster).

First the two API server guarantees the controller relies on against a concurrent writer (a delete
carrying ``preconditions.uid``, a status patch carrying ``metadata.resourceVersion``), with the
operator's own ServiceAccount; then operator processes competing for the Lease.
"""

from __future__ import annotations

import asyncio
import json
import socket
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from dbmigrate_operator.jobs import build_job, run_hash
from dbmigrate_operator.kube import Kube, StaleObject
from dbmigrate_operator.leadership import LeaseConfig, LeaseElector
from dbmigrate_operator.settings import Settings
from localcluster.stack import (
    OperatorProcess,
    install_crd,
    install_operator_identity,
    jobs_of,
    true_condition,
    wait_for,
)
from tests.operator.builders import make_cr, success_report
from tests.operator.scenarios import V1, V2

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def identity(cluster: Any) -> Path:
    install_crd(cluster)
    path: Path = install_operator_identity(cluster, cluster.create_namespace("dbmigrate-ha"), "operator")
    return path


@pytest.fixture
def kube(cluster: Any, identity: Path) -> Kube:
    return Kube(cluster.api_client(identity))


def suspended_job(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    """A migration Job as the operator builds it (the chart's admission policy refuses any other from
    its identity), owned by a real DatabaseMigration, suspended: it never makes a Pod."""
    cr = make_cr("x", namespace)
    del cr["metadata"]["uid"], cr["metadata"]["generation"]
    cluster.kubectl("apply", "-f", "-", input=json.dumps(cr))
    cr = json.loads(cluster.kubectl("get", "dbm", "x", "-n", namespace, "-o", "json").stdout)
    job = build_job(cr, hash_=run_hash(cr), command="upgrade", settings=Settings())
    job["metadata"]["name"] = name
    job["spec"]["suspend"] = True
    return job


def job_uid(cluster: Any, namespace: str, name: str) -> str:
    out = cluster.kubectl("get", "job", name, "-n", namespace, "-o", "jsonpath={.metadata.uid}")
    return str(out.stdout)


def test_a_delete_with_a_stale_uid_leaves_the_namesake_alone(
    cluster: Any, namespace: str, kube: Kube
) -> None:
    assert kube.create_job(namespace, suspended_job(cluster, namespace, "run-a"))
    first = job_uid(cluster, namespace, "run-a")
    assert kube.delete_job(namespace, "run-a", first)
    cluster.kubectl("wait", "--for=delete", "job/run-a", "-n", namespace, "--timeout=30s")
    assert kube.create_job(namespace, suspended_job(cluster, namespace, "run-a"))
    second = job_uid(cluster, namespace, "run-a")
    assert not kube.delete_job(namespace, "run-a", first)  # 409: precondition failed
    assert job_uid(cluster, namespace, "run-a") == second
    assert kube.delete_job(namespace, "run-a", second)
    assert not kube.delete_job(namespace, "run-a", second)  # 404 now


def test_a_status_patch_on_a_stale_resource_version_is_refused(
    cluster: Any, namespace: str, kube: Kube
) -> None:
    cr = make_cr("shop-db", namespace)
    del cr["metadata"]["uid"], cr["metadata"]["generation"]
    cluster.kubectl("apply", "-f", "-", input=json.dumps(cr))
    seen = kube.get_migration(namespace, "shop-db")
    assert seen is not None
    version = seen["metadata"]["resourceVersion"]
    assert kube.patch_status(namespace, "shop-db", {"phase": "Succeeded"}, version)
    with pytest.raises(StaleObject):  # a second writer on the same read: refused, nothing overwritten
        kube.patch_status(namespace, "shop-db", {"phase": "Pending"}, version)
    now = kube.get_migration(namespace, "shop-db")
    assert now is not None
    assert now["status"]["phase"] == "Succeeded"
    assert not kube.patch_status(namespace, "gone", {"phase": "Pending"}, version)


async def test_the_lease_has_one_holder_a_released_one_passes_at_once_a_dead_one_after_expiry(
    cluster: Any, identity: Path
) -> None:
    namespace = cluster.create_namespace("lease")
    # the chart's Lease rights: a Role in the operator's namespace, get/update of its own Lease only
    client = cluster.api_client(install_operator_identity(cluster, namespace, "elector", lease="dbm-ha"))

    def elector(who: str) -> LeaseElector:
        return LeaseElector(client, LeaseConfig.from_duration("dbm-ha", namespace, who, 3))

    a, b, c = elector("a"), elector("b"), elector("c")
    await a.step()
    await b.step()
    assert a.is_active()
    assert not b.is_active()
    taken = b.subscribe()
    await a.stop()  # graceful: stops writing, hands the Lease back
    assert not a.is_active()
    await b.step()
    assert b.is_active()
    assert taken.is_set()
    # b dies without a word (no renewals): c waits a whole lease duration of unchanged record
    await c.step()
    assert not c.is_active()
    await asyncio.sleep(2.2)
    assert not b.is_active()
    await c.step()
    assert not c.is_active()  # 2.2 s < 3 s since c first saw b's record
    await asyncio.sleep(1.0)
    await c.step()
    assert c.is_active()
    lease = json.loads(cluster.kubectl("get", "lease", "dbm-ha", "-n", namespace, "-o", "json").stdout)
    assert lease["spec"]["holderIdentity"] == "c"
    assert lease["spec"]["leaseTransitions"] == 2


# -- operator processes competing for the Lease ---------------------------------------------------

SLOW_IMAGE = "registry.example.com/ha-migrations:1.0.0"
SLOW_RUNNER = """#!{python}
import os, sys, time
time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
with open(os.environ["DBMIGRATE_REPORT_PATH"], "w") as f:
    f.write(os.environ.get("FAKE_REPORT", ""))
sys.exit(0)
"""


def writes_by(cluster: Any, namespace: str, account: str, *, lease: bool = True) -> list[str]:
    """What the API server's audit log says `account` wrote ("verb resource/name"), oldest first."""
    user = f"system:serviceaccount:{namespace}:{account}"
    out = []
    for event in cluster.audited_writes():
        ref = event.get("objectRef") or {}
        if (event.get("user") or {}).get("username") != user:
            continue
        if not lease and ref.get("resource") == "leases":
            continue
        resource = ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        out.append(f"{event.get('verb')} {resource}/{ref.get('name', '')}")
    return out


def replica(cluster: Any, namespace: str, account: str, tmp_path: Path) -> OperatorProcess:
    """`dbmigrate-operator` as its own process, with its own ServiceAccount (same RBAC as the others)."""
    kubeconfig = install_operator_identity(cluster, namespace, account, lease="dbmigrate-ha")
    env = {
        "DBMIGRATE_STANDALONE": "false",
        "DBMIGRATE_LEASE_NAME": "dbmigrate-ha",
        "DBMIGRATE_OPERATOR_NAMESPACE": namespace,
        "DBMIGRATE_LEASE_SECONDS": "6",
        "DBMIGRATE_RESYNC_SECONDS": "20",
    }
    return OperatorProcess(kubeconfig, tmp_path / f"{account}.log", env=env)


def lease_holder(cluster: Any, namespace: str) -> str:
    out = cluster.kubectl(
        "get", "lease", "dbmigrate-ha", "-n", namespace, "-o", "jsonpath={.spec.holderIdentity}", check=False
    )
    return str(out.stdout)


def migration(cluster: Any, namespace: str, name: str, sleep: float = 0) -> None:
    cr = make_cr(name, namespace, image=SLOW_IMAGE)
    del cr["metadata"]["uid"], cr["metadata"]["generation"]
    cr["spec"]["job"] = {
        "env": [
            {"name": "FAKE_REPORT", "value": success_report([V1, V2])},
            {"name": "FAKE_SLEEP", "value": str(sleep)},
        ]
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(cr))


def ready(cluster: Any, namespace: str, name: str) -> bool:
    return bool(true_condition(cluster, namespace, name) == ("Ready", "Applied"))


@pytest.mark.local_cluster("the API server's audit log tells the replicas' writes apart")
def test_one_replica_writes_and_a_killed_one_is_replaced_without_a_duplicate_job(
    cluster: Any, namespace: str, identity: Path, tmp_path: Path
) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    runner = bindir / "dbmigrate-runner"
    runner.write_text(SLOW_RUNNER.format(python=sys.executable))
    runner.chmod(runner.stat().st_mode | stat.S_IEXEC)
    cluster.map_image(SLOW_IMAGE, ["dbmigrate-runner"], env={"PATH": f"{bindir}:/usr/bin:/bin"})
    cluster.kubectl(
        "create", "secret", "generic", "shop-db", "-n", namespace, "--from-literal=url=postgres://x@y/z"
    )
    home = cluster.create_namespace("ha-operators")
    a, b, c = (replica(cluster, home, name, tmp_path) for name in ("replica-a", "replica-b", "replica-c"))
    try:
        a.start()
        wait_for(
            lambda: lease_holder(cluster, home).startswith(socket.gethostname()), 30, "a holding the Lease"
        )
        first = lease_holder(cluster, home)
        b.start()
        migration(cluster, namespace, "one")
        wait_for(lambda: ready(cluster, namespace, "one"), 90, "one Ready")
        c.start()  # a third replica joins: it waits like b
        migration(cluster, namespace, "two")
        wait_for(lambda: ready(cluster, namespace, "two"), 90, "two Ready")
        assert lease_holder(cluster, home) == first
        acted = writes_by(cluster, home, "replica-a", lease=False)
        assert any(w.startswith("create jobs/one-") for w in acted), acted
        assert any(w.startswith("create jobs/two-") for w in acted), acted
        assert any(w == "patch databasemigrations/status/two" for w in acted), acted
        assert writes_by(cluster, home, "replica-b") == []  # not even the Lease: standbys only read
        assert writes_by(cluster, home, "replica-c") == []

        # a run under way when the active replica dies (SIGKILL: no handover, the Lease expires)
        migration(cluster, namespace, "three", sleep=8)
        wait_for(lambda: len(jobs_of(cluster, namespace, "three")) == 1, 60, "three's Job")
        a.kill()
        wait_for(lambda: lease_holder(cluster, home) not in ("", first), 60, "a new Lease holder")
        wait_for(lambda: ready(cluster, namespace, "three"), 120, "three Ready after the handover")
        assert len(jobs_of(cluster, namespace, "three")) == 1, "a second Job of the same run"
        after = {r: writes_by(cluster, home, r, lease=False) for r in ("replica-b", "replica-c")}
        actors = [r for r, writes in after.items() if writes]
        assert len(actors) == 1, after  # exactly one of the two took over
        assert "patch databasemigrations/status/three" in after[actors[0]]
        assert not any(w.startswith("create jobs/") for w in after[actors[0]]), after
    finally:
        for proc in (a, b, c):
            proc.stop()
