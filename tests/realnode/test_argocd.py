"""docs/argocd.md on the real node, against a real Argo CD 3.6.2 (localcluster/argocd.py): every
change reaches the cluster as a Git commit that Argo CD's auto-sync picks up; the test never
applies the app's objects itself, and never touches the cluster to approve or to unblock a sync.

The wave layout is the one docs/argocd.md recommends: the Secret in wave -2, the DatabaseMigration
in -1, the gated Deployment in 0; auto-sync with prune and self-heal, prune in background. The
pruning story keeps Argo CD's default (foreground) prune instead, and one wave (see its docstring).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from dbmigrate_operator import constants as c
from dbmigrate_operator.jobs import CHECK_KIND, JOB_KIND_LABEL
from localcluster import argocd as argomod
from localcluster import realstack
from localcluster.cluster import Cluster
from localcluster.postgres import Instance
from localcluster.sampling import Sampler
from localcluster.stack import get_json, jobs_of, shop_versions, status_of, wait_for
from tests.runner.test_lock_timeout import long_transaction

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.realnode,
    pytest.mark.local_cluster("the real node, and Argo CD's processes beside the local control plane"),
    pytest.mark.timeout(1200),
]

VERSIONS = [f"models:{v}" for v in shop_versions()]
MISSING = "models:9_20990101000000_not_in_the_image"  # a commit naming a migration the image lacks
SYNC_TIMEOUT = 300


@pytest.fixture(scope="module")
def argocd(real_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[argomod.ArgoCD]:
    """One Argo CD for the module's stories (each has its own Application and namespace)."""
    with argomod.running(real_cluster, tmp_path_factory.mktemp("argocd")) as running:
        yield running


def _time(stamp: str) -> datetime:
    """To the second: the API server and the kubelet write whole seconds, the operator may not."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).replace(microsecond=0)


def _manifests(
    namespace: str, url: str, target: str, pin: str, **spec: Any
) -> dict[str, str]:  # fmt: skip
    """The app's directory in Git: Secret (wave -2), DatabaseMigration (-1), Deployment (0)."""
    secret = realstack.secret(namespace, "shop-db", url)
    secret["metadata"]["annotations"] = {"argocd.argoproj.io/sync-wave": "-2"}
    cr = realstack.example_migration(namespace, target=target, **spec)
    cr["metadata"]["annotations"] = {"argocd.argoproj.io/sync-wave": "-1"}
    app = realstack.example_app(namespace, replicas=1)
    app["spec"]["template"]["metadata"]["annotations"][c.WAIT_FOR_VERSION_ANNOTATION] = pin
    return {
        "app/secret.yaml": yaml.safe_dump(secret),
        "app/databasemigration.yaml": yaml.safe_dump(cr),
        "app/deployment.yaml": yaml.safe_dump(app),
    }


@dataclass
class PodLog(Sampler):
    """Samples the app's pods once a second while a story runs: which pin each pod carries, whether
    it was gated, and whether it was Ready, so an order can be shown after the fact."""

    cluster: Cluster
    namespace: str
    samples: list[tuple[datetime, list[dict[str, Any]]]] = field(default_factory=list)

    def sample(self) -> None:
        pods = get_json(self.cluster, self.namespace, "pods", "-l", "app=shop-web")["items"]
        self.samples.append((datetime.now().astimezone(), [_pod_row(p) for p in pods]))

    def rows(self, pin: str) -> list[tuple[datetime, dict[str, Any]]]:
        return [(t, r) for t, rows in self.samples for r in rows if r["pin"] == pin]


def _pod_row(pod: dict[str, Any]) -> dict[str, Any]:
    gates = {g["name"] for g in pod["spec"].get("schedulingGates") or []}
    statuses = pod.get("status", {}).get("containerStatuses") or [{}]
    running = statuses[0].get("state", {}).get("running") or {}
    ready = any(
        x["type"] == "Ready" and x["status"] == "True" for x in pod.get("status", {}).get("conditions") or []
    )
    return {
        "name": pod["metadata"]["name"],
        "pin": (pod["metadata"].get("annotations") or {}).get(c.WAIT_FOR_VERSION_ANNOTATION),
        "gated": c.SCHEDULING_GATE in gates,
        "ready": ready,
        "started": running.get("startedAt"),
        "deleting": "deletionTimestamp" in pod["metadata"],
    }


@dataclass
class Story:
    cluster: Cluster
    argocd: argomod.ArgoCD
    repo: argomod.GitRepo
    app: str
    namespace: str
    url: str
    seen: list[dict[str, Any]] = field(default_factory=list)

    def synced(
        self, sha: str, health: str = "Healthy", sync: str = "Synced", timeout: float = SYNC_TIMEOUT
    ) -> dict[str, Any]:
        """Until Argo CD's operation for commit `sha` has ended and the Application, compared with
        that commit, is `sync` and `health`."""

        def check() -> dict[str, Any] | None:
            self.argocd.check_alive()
            app = self.argocd.application(self.app)
            s = argomod.summary(app)
            self.seen.append(s)
            if (
                s["revision"] == sha
                and s["operation_revision"] == sha
                and s["operation"] not in (None, "Running", "Terminating")
                and s["sync"] == sync
                and s["health"] == health
            ):
                return app
            return None

        return self._wait(check, timeout, f"{self.app} {sync}, {health} at {sha[:8]}")

    def _wait(self, check: Any, timeout: float, what: str) -> dict[str, Any]:
        try:
            found: dict[str, Any] = wait_for(check, timeout, what, every=1)
        except AssertionError as e:
            tail = self.argocd.log_tail("application-controller", 4000)
            raise AssertionError(f"{e}\nlast seen: {self.seen[-3:]}\ncontroller log:\n{tail}") from None
        return found

    def failing(self, sha: str, timeout: float = SYNC_TIMEOUT) -> dict[str, Any]:
        """Until the sync of commit `sha` has failed at a wave (Argo CD may be retrying it) and the
        Application, compared with that commit, is OutOfSync and Degraded."""

        def check() -> dict[str, Any] | None:
            self.argocd.check_alive()
            app = self.argocd.application(self.app)
            s = argomod.summary(app)
            self.seen.append(s)
            failed = "completed unsuccessfully" in (s["message"] or "")
            if (
                s["revision"] == sha
                and s["operation_revision"] == sha
                and failed
                and s["health"] == "Degraded"
            ):
                return app
            return None

        return self._wait(check, timeout, f"{self.app}'s sync of {sha[:8]} to fail, Degraded")

    def dbm_health(self) -> dict[str, Any]:
        return argomod.resource_health(self.argocd.application(self.app), "DatabaseMigration", "shop-db")

    def pods(self) -> list[dict[str, Any]]:
        return [
            _pod_row(p) for p in get_json(self.cluster, self.namespace, "pods", "-l", "app=shop-web")["items"]
        ]


@pytest.fixture
def story(
    real_cluster: Cluster,
    argocd: argomod.ArgoCD,
    operator: str,  # the chart (and our CRD) before Argo CD syncs anything that needs it
    app_namespaces: dict[str, str],
    node_pg: Instance,
    database: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> Story:
    key: str = request.param
    repo = argomod.GitRepo(tmp_path / "git").init()
    name = f"shop-{key}-{uuid.uuid4().hex[:4]}"
    ns = app_namespaces[key]
    url = realstack.pod_database_url(node_pg, database)
    return Story(real_cluster, argocd, repo, name, ns, url)


def _start(story: Story, files: dict[str, str], message: str) -> str:
    sha = story.repo.commit(message, files)
    story.argocd.create_application(
        story.app, story.repo, story.namespace, sync_options=("PrunePropagationPolicy=background",)
    )
    return sha


@pytest.mark.parametrize("story", ["argo-story"], indirect=True)
def test_waves_upgrade_broken_fix_and_prune_through_git(
    story: Story, node_pg: Instance, database: str
) -> None:
    ns, cluster = story.namespace, story.cluster
    first, second = VERSIONS[1], VERSIONS[2]

    # First sync: wave -1 holds wave 0 until the migration for this commit is applied.
    sha = _start(story, _manifests(ns, story.url, first, first), "shop 1: schema 1")
    story.synced(sha)
    status = status_of(cluster, ns, "shop-db")
    assert status["currentVersion"] == first
    schema_done = _time(status["lastRun"]["completedAt"])
    deployment = get_json(cluster, ns, "deployment", "shop-web")
    assert _time(deployment["metadata"]["creationTimestamp"]) >= schema_done, (
        "wave 0 applied before its schema"
    )
    (pod,) = story.pods()
    assert pod["ready"]
    assert _time(pod["started"]) >= schema_done

    # An update of the Healthy DatabaseMigration and the app pinned to its new version.
    with PodLog(cluster, ns) as log:
        sha = story.repo.commit("shop 2: schema 2", _manifests(ns, story.url, second, second))
        story.synced(sha)
        # When Argo CD passed the wave before the run (the gate then holds the new pods), the sync
        # can end before a new pod has started: keep sampling until one has.
        wait_for(
            lambda: any(r["started"] for _, r in log.rows(second)), 180, "a pod of the new version started"
        )
    status = status_of(cluster, ns, "shop-db")
    assert status["currentVersion"] == second
    run = status["lastRun"]
    assert second in [f"models:{v}" if ":" not in v else v for v in run["applied"]], run
    schema_done = _time(run["completedAt"])
    new_rows = log.rows(second)
    assert new_rows, "no pod of the new version was ever seen"
    started = [(t, r) for t, r in new_rows if r["started"]]
    assert started, new_rows
    assert all(_time(r["started"]) >= schema_done for _, r in started), (schema_done, new_rows)
    # The old pod served until a new one was Ready: some pod was Ready in every sample.
    assert all(any(r["ready"] for r in rows) for _, rows in log.samples[1:]), log.samples
    rs = get_json(cluster, ns, "replicasets", "-l", "app=shop-web")["items"]
    new_rs = next(
        r
        for r in rs
        if r["spec"]["template"]["metadata"]["annotations"][c.WAIT_FOR_VERSION_ANNOTATION] == second
    )
    held_by = "wave" if _time(new_rs["metadata"]["creationTimestamp"]) >= schema_done else "gate"
    if held_by == "gate":  # Argo CD passed the wave: then the gate must have been seen holding them
        assert any(r["gated"] for _, r in new_rows), new_rows
    print(f"update: new ReplicaSet {new_rs['metadata']['creationTimestamp']}, run {run['startedAt']} → "
          f"{run['completedAt']}, new pods held by the {held_by}")  # fmt: skip

    # A broken migration committed: Degraded, the sync fails at its wave, old pods serve. Argo CD
    # keeps retrying that sync (5 times by default), each retry with the newest commit.
    broken = story.repo.commit(
        "shop 3: a migration the image lacks", _manifests(ns, story.url, MISSING, MISSING)
    )
    story.failing(broken)
    assert story.dbm_health()["status"] == "Degraded"
    pods = story.pods()
    assert [p for p in pods if p["pin"] == second and p["ready"]], pods
    assert all(p["gated"] for p in pods if p["pin"] == MISSING), pods
    template = get_json(cluster, ns, "deployment", "shop-web")["spec"]["template"]
    assert template["metadata"]["annotations"][c.WAIT_FOR_VERSION_ANNOTATION] == second, (
        "the sync went past the Degraded wave"
    )

    # `git revert` heals it, nobody touches the cluster.
    fixed = story.repo.revert(broken)
    story.synced(fixed)
    assert status_of(cluster, ns, "shop-db")["currentVersion"] == second
    assert all(p["pin"] == second for p in story.pods() if not p["deleting"]), story.pods()

    # Pruning: the DatabaseMigration removed from Git is deleted (its run long finished).
    pruned = story.repo.commit("shop 4: migrations managed elsewhere", {"app/databasemigration.yaml": None})
    story.synced(pruned)
    wait_for(
        lambda: not get_json(cluster, ns, "dbm")["items"], 120, "the pruned DatabaseMigration to be gone"
    )
    assert [p for p in story.pods() if p["ready"]], "the app kept serving"


@pytest.mark.parametrize("story", ["argo-review"], indirect=True)
def test_a_plan_waits_visibly_and_an_approval_committed_in_git_syncs(
    story: Story, node_pg: Instance, database: str
) -> None:
    """The shop image has no destructive forward migration (and downgrades are not planned), so the
    plan is asked for with `approval: Manual`: the same WaitingForApproval as OnDestructive's."""
    ns, cluster = story.namespace, story.cluster
    first, second = VERSIONS[1], VERSIONS[2]
    sha = _start(story, _manifests(ns, story.url, first, first), "shop: schema 1")
    story.synced(sha)

    # Schema 2 asked for with a review: the plan waits for a person, visibly, and the sync of that
    # commit fails at the DatabaseMigration's wave instead of holding Argo CD's operation open.
    asking = story.repo.commit(
        "shop: schema 2, reviewed", _manifests(ns, story.url, second, first, approval="Manual")
    )
    app = story.failing(asking)
    waiting = status_of(cluster, ns, "shop-db")
    plan_hash = waiting["plan"]["hash"]
    health = argomod.resource_health(app, "DatabaseMigration", "shop-db")
    assert health["status"] == "Degraded", health
    assert plan_hash[:12] in health["message"], health
    tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = 'review'"
    assert node_pg.server().psql(database, tables).strip() == "0", "nothing ran before the approval"

    # The approval is a commit; Argo CD syncs it (nobody touches the cluster): exactly the plan runs.
    approved = story.repo.commit(
        "shop: approve the plan",
        _manifests(ns, story.url, second, first, approval="Manual", approvedPlan=plan_hash),
    )
    story.synced(approved)
    status = status_of(cluster, ns, "shop-db")
    assert status["currentVersion"] == second
    assert status["plan"]["hash"] == plan_hash
    assert status["plan"].get("approvedBy"), status["plan"]
    assert node_pg.server().psql(database, tables).strip() == "1"


def _migration_only(namespace: str, url: str, **spec: Any) -> dict[str, str]:
    """The Secret and the DatabaseMigration, both in wave -1 (Argo CD applies the Secret first)."""
    secret = realstack.secret(namespace, "shop-db", url)
    cr = realstack.example_migration(namespace, **spec)
    for obj in (secret, cr):
        obj["metadata"]["annotations"] = {"argocd.argoproj.io/sync-wave": "-1"}
    return {"app/secret.yaml": yaml.safe_dump(secret), "app/databasemigration.yaml": yaml.safe_dump(cr)}


def _now() -> str:
    return datetime.now(UTC).strftime("%H:%M:%S")


@pytest.mark.parametrize("story", ["argo-prune"], indirect=True)
def test_a_migration_removed_from_git_mid_run_is_pruned_in_foreground_after_its_run(
    story: Story, node_pg: Instance, database: str
) -> None:
    """Issue #20's pruning story with Argo CD's default (foreground) prune propagation: the run is
    held by an app session's lock on `customer` (the third shop migration alters it) when the
    removal is committed; Argo CD deletes the DatabaseMigration, the chart's running-migrations
    policy keeps the garbage collector off the unfinished Job, the container keeps running, and the
    resource goes with its Job only once the released lock let the run finish. On the chart without
    that policy the Job was deleted at once (test_real_node's foreground deletion test).

    One wave (-1) only: with more than one wave Argo CD's sync operation waits for the
    DatabaseMigration to be Healthy (gitops-engine waits for running tasks of a multi-step sync), so
    the removal commit would be synced only after the run ended; the run must have been started by
    a sync that no longer holds Argo CD's one operation for the prune to meet it."""
    ns, cluster, server = story.namespace, story.cluster, node_pg.server()
    name, versions = "shop-db", shop_versions()
    job_pods = f"{c.MIGRATION_LABEL}={name},{JOB_KIND_LABEL}!={CHECK_KIND}"
    columns = "SELECT column_name FROM information_schema.columns WHERE table_name = 'customer'"
    sha = story.repo.commit("shop: schema 1", _migration_only(ns, story.url, target=VERSIONS[1]))
    story.argocd.create_application(story.app, story.repo, ns)  # default prune propagation
    story.synced(sha)
    assert status_of(cluster, ns, name)["currentVersion"] == VERSIONS[1]

    locking = {"timeout": "1s", "retries": 1000, "budget": "30m"}  # never gives up while held
    with long_transaction(server, database, "customer") as app:
        upgrade = story.repo.commit("shop: schema 2", _migration_only(ns, story.url, locking=locking))
        story.synced(upgrade, health="Progressing")  # the one-wave sync ended while the run goes on
        waiting = wait_for(
            lambda: (s := status_of(cluster, ns, name))
            and (s.get("lockWait") or {}).get("blockerPid") == app.pid and s,
            180, "status.lockWait naming the app's session",
        )  # fmt: skip
        job = jobs_of(cluster, ns, name)[-1]  # the first run's finished Job is kept as history
        this_job = f"{job_pods},job-name={job['metadata']['name']}"
        (pod,) = get_json(cluster, ns, "pods", "-l", this_job)["items"]
        held_at = _now()
        print(f"{held_at} run waiting: {waiting['conditions']}")

        pruned = story.repo.commit("shop: migrations managed elsewhere", {"app/databasemigration.yaml": None})
        gone_from_git = _now()
        deleting = wait_for(
            lambda: (d := get_json(cluster, ns, "dbm", name))["metadata"].get("deletionTimestamp") and d,
            SYNC_TIMEOUT, f"Argo CD to prune {name} (removal committed {gone_from_git})",
        )  # fmt: skip
        deleted_at = deleting["metadata"]["deletionTimestamp"]
        stamps = f"run waiting {held_at}, removal committed {gone_from_git}, deletionTimestamp {deleted_at}"
        print(f"{_now()} pruned: finalizers {deleting['metadata'].get('finalizers')}")
        operation = argomod.summary(story.argocd.application(story.app))
        assert operation["operation_revision"] == pruned, (stamps, operation)
        time.sleep(10)  # the garbage collector acts within milliseconds when nothing holds it off
        checked = _now()
        stamps += f", checked {checked}"
        (alive,) = [j for j in jobs_of(cluster, ns, name) if j["metadata"]["uid"] == job["metadata"]["uid"]]
        assert not alive["metadata"].get("deletionTimestamp"), (stamps, alive["metadata"])
        (now,) = get_json(cluster, ns, "pods", "-l", this_job)["items"]
        assert now["metadata"]["uid"] == pod["metadata"]["uid"], stamps
        assert not now["metadata"].get("deletionTimestamp"), (stamps, now["metadata"])
        state = (now["status"].get("containerStatuses") or [{}])[0].get("state", {})
        assert "running" in state, (stamps, now["status"])
        terminating = get_json(cluster, ns, "dbm", name)
        assert terminating["metadata"].get("deletionTimestamp") == deleted_at, stamps
        assert "bio" not in server.psql(database, columns), stamps
        operation = argomod.summary(story.argocd.application(story.app))
        print(f"{checked} Job and Pod alive, {name} Terminating; Argo CD: {operation}")
        app.end()  # the app commits: the run's next attempt gets the lock
        released = _now()
    stamps += f", lock released {released}"
    wait_for(lambda: not get_json(cluster, ns, "dbm")["items"], 300, f"{name} gone after its run ({stamps})")
    gone = _now()
    stamps += f", resource gone {gone}"
    applied = server.psql(database, "SELECT version FROM aerich ORDER BY id").split()
    assert [Path(v).stem for v in applied] == versions, (stamps, applied)
    assert "bio" in server.psql(database, columns), stamps
    wait_for(lambda: not jobs_of(cluster, ns, name), 120, f"the Job collected ({stamps})")
    stamps += f", Job gone {_now()}"
    story.synced(pruned)
    print(stamps)
