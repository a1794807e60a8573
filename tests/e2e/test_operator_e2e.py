"""The product end to end: the operator as its own process with the chart's RBAC only, migration
Jobs running the real runner against the real PostgreSQL, results read back with our kubectl.

Real parts everywhere: kube-apiserver (schema, CEL, status subresource), the Job controller and
garbage collector, the scheduler, the node agent as kubelet (it runs the mapped image's command,
`dbmigrate-runner` of our venv, in a copy of examples/shop), `dbmigrate-operator` started like the
chart starts it (environment-only settings, a ServiceAccount token: a missing permission fails
here). One operator process for the module; each test has its own namespace and database.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from dbmigrate_operator import constants as c
from dbmigrate_runner.report import Outcome
from localcluster import Cluster, stack
from localcluster.postgres import PostgresServer
from localcluster.stack import EXAMPLE_IMAGE, SHOP, OperatorProcess
from tests.operator.crd_support import invalid_cases

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.postgres,
    pytest.mark.timeout(300),
    pytest.mark.local_cluster(
        "map_image: migration Job pods run the real runner as local processes against PostgreSQL on loopback"
    ),
]
NAME = "shop-db"  # the DatabaseMigration (and Secret) of examples/databasemigration.yaml
BROKEN = (
    Path(__file__).parents[1] / "runner" / "fixtures" / "failing" / "aerich" / "3_20991231000000_broken.py"
)


@pytest.fixture(scope="module")
def operator(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    stack.install_crd(cluster)
    lease = f"dbmigrate-e2e-{uuid.uuid4().hex[:6]}"  # as the chart runs it: replicas elect with a Lease
    kubeconfig = stack.install_operator_identity(cluster, lease=lease)
    stack.map_runner_image(cluster, EXAMPLE_IMAGE, SHOP)
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    op = OperatorProcess(kubeconfig, log, env={"DBMIGRATE_RESYNC_SECONDS": "30"}, lease=lease).start()
    yield op
    op.stop()


class E2E:
    """One test's view: its namespace and database, the operator, waits that show the operator's log."""

    def __init__(self, cluster: Cluster, namespace: str, op: OperatorProcess, pg: PostgresServer, tmp: Path):
        self.cluster, self.ns, self.op, self.pg, self.tmp = cluster, namespace, op, pg, tmp
        self.db = pg.create_database()

    def wait(self, check: Callable[[], Any], what: str, timeout: float = 150) -> Any:
        try:
            return stack.wait_for(check, timeout, what)
        except AssertionError as e:
            raise AssertionError(
                f"{e}\n--- operator log tail ({self.op.log}) ---\n{self.op.log_tail()}"
            ) from None

    def apply_example(self, image: str = EXAMPLE_IMAGE, secret: bool = True, **spec: Any) -> None:
        docs = stack.example_documents(self.ns, self.pg.url(self.db), image)
        for doc in docs:
            if doc["kind"] == c.KIND:
                doc["spec"].update(spec)
        stack.apply_docs(self.cluster, [d for d in docs if secret or d["kind"] != "Secret"])

    def image(self, project_dir: Path) -> str:
        """A fresh image name whose pods run the real runner in `project_dir`."""
        image = f"registry.example.com/shop-migrations:e2e-{uuid.uuid4().hex[:8]}"
        stack.map_runner_image(self.cluster, image, project_dir)
        return image

    def condition(self) -> tuple[str, str]:
        return stack.true_condition(self.cluster, self.ns, NAME)

    def status(self) -> dict[str, Any]:
        return stack.status_of(self.cluster, self.ns, NAME)

    def jobs(self) -> list[dict[str, Any]]:
        return stack.jobs_of(self.cluster, self.ns, NAME)

    def wait_ready(self, generation: int = 1) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            status = self.status()
            ready = stack.true_condition_in(status) == ("Ready", "Applied")
            done = ready and status.get("observedGeneration") == generation
            return status if done else None

        result: dict[str, Any] = self.wait(ready, f"Ready/Applied for generation {generation}")
        return result

    def tracking(self, table: str = "aerich") -> list[tuple[str, str]]:
        """(app, version) rows of the tool's tracking table, oldest first (the database's truth)."""
        sql = {
            "aerich": "SELECT app, version FROM aerich ORDER BY id",
            "tortoise_migrations": "SELECT app, name FROM tortoise_migrations ORDER BY applied_at, id",
        }[table]
        rows = [line.split("|") for line in self.pg.psql(self.db, sql).splitlines() if line]
        return [(app, version.removesuffix(".py")) for app, version in rows]

    def columns(self, table: str) -> list[str]:
        sql = f"SELECT column_name FROM information_schema.columns WHERE table_name = '{table}' ORDER BY 1"
        return self.pg.psql(self.db, sql).splitlines()

    def no_password_anywhere(self) -> None:
        """Status, Events and Jobs never carry the database password."""
        for what in (("dbm", NAME), ("events",), ("jobs",)):
            text = self.cluster.kubectl("get", "-n", self.ns, "-o", "yaml", *what).stdout
            assert self.pg.password not in text, what


@pytest.fixture
def e2e(
    cluster: Cluster, namespace: str, operator: OperatorProcess, postgres: PostgresServer, tmp_path: Path
) -> E2E:
    assert operator.alive(), operator.log_tail()
    return E2E(cluster, namespace, operator, postgres, tmp_path)


def test_example_applies_the_shop_migrations(e2e: E2E) -> None:
    e2e.apply_example()
    status = e2e.wait_ready()

    versions = stack.shop_versions()
    assert e2e.tracking() == [("models", v) for v in versions]
    assert stack.applied_pairs(status) == e2e.tracking(), status  # exactly the tracking table
    assert status["appliedCount"] == len(versions)
    assert status["currentVersion"] == f"models:{versions[-1]}"
    assert status["phase"] == "Succeeded"
    assert status["lastRun"]["outcome"] == Outcome.SUCCEEDED
    assert status["lastRun"]["image"] == EXAMPLE_IMAGE
    assert "customer" in e2e.pg.psql(e2e.db, "SELECT tablename FROM pg_tables").split()
    # Ready comes from the Pod's report, ahead of the Job controller's own Complete: wait for it.
    (job,) = stack.wait_for(
        lambda: [j for j in e2e.jobs() if j["status"].get("succeeded") == 1], what="the Job's Complete"
    )
    assert len(e2e.jobs()) == 1
    assert job["metadata"]["ownerReferences"][0]["kind"] == c.KIND

    # What a user reads back, from our kubectl's real output (printer columns included).
    lines = e2e.cluster.kubectl("get", "dbmigrations", "-n", e2e.ns).stdout.splitlines()
    assert lines[0].split() == ["NAME", "READY", "VERSION", "PHASE", "AGE"]
    assert lines[1].split()[:4] == [NAME, "True", f"models:{versions[-1]}", "Succeeded"]
    wide = e2e.cluster.kubectl("get", "dbm", NAME, "-n", e2e.ns, "-o", "wide", "--no-headers").stdout.split()
    assert wide[5:] == [EXAMPLE_IMAGE, "Applied"]
    reasons = {e["reason"] for e in stack.events_of(e2e.cluster, e2e.ns, NAME)}
    assert {"RunStarted", "Applied"} <= reasons
    e2e.no_password_anywhere()


def test_new_image_runs_again_keeps_history_and_deletion_leaves_the_database(e2e: E2E) -> None:
    note = stack.aerich_migration(
        'ALTER TABLE "product" ADD "note" TEXT;', 'ALTER TABLE "product" DROP COLUMN "note";'
    )
    newer = stack.shop_copy(e2e.tmp / "shop-next", aerich={"3_20991230000000_add_note.py": note})
    e2e.apply_example(historyLimit=2)
    e2e.wait_ready()
    (first,) = (j["metadata"]["name"] for j in e2e.jobs())

    # A new image with one more migration: a second Job, the status follows the database.
    image = e2e.image(newer)
    patch = {"spec": {"image": image}}
    e2e.cluster.kubectl("patch", "dbm", NAME, "-n", e2e.ns, "--type", "merge", "-p", json.dumps(patch))
    status = e2e.wait_ready(generation=2)
    assert status["currentVersion"] == "models:3_20991230000000_add_note"
    assert status["lastRun"]["applied"] == ["models:3_20991230000000_add_note"]
    assert (
        stack.applied_pairs(status) == e2e.tracking() == [("models", v) for v in stack.shop_versions(newer)]
    )
    assert "note" in e2e.columns("product")
    jobs = [j["metadata"]["name"] for j in e2e.jobs()]
    assert len(jobs) == 2
    assert jobs[0] == first  # within historyLimit: the old Job (and its logs) stays
    second = jobs[1]

    # A third run (rerun of the same spec, nothing left to apply): the oldest Job goes.
    e2e.cluster.kubectl("annotate", "dbm", NAME, "-n", e2e.ns, f"{c.RERUN_ANNOTATION}=1", "--overwrite")
    e2e.wait(lambda: e2e.status()["lastRun"]["job"] not in (first, second), "a third run")
    status = e2e.wait_ready(generation=2)
    assert status["lastRun"]["applied"] == []
    remaining = e2e.wait(
        lambda: (names := [j["metadata"]["name"] for j in e2e.jobs()]) and first not in names and names,
        "the oldest Job deleted beyond historyLimit",
    )
    assert remaining == [second, status["lastRun"]["job"]]

    # Deleting the resource: the garbage collector removes its Jobs and Pods; the schema stays.
    before = e2e.tracking()
    e2e.cluster.kubectl("delete", "dbm", NAME, "-n", e2e.ns, "--wait=true")
    e2e.wait(lambda: e2e.jobs() == [], "Jobs garbage-collected")
    selector = f"{c.MIGRATION_LABEL}={NAME}"
    e2e.wait(lambda: stack.get_json(e2e.cluster, e2e.ns, "pods", "-l", selector)["items"] == [], "Pods gone")
    assert e2e.tracking() == before
    assert "note" in e2e.columns("product")


def test_failing_migration_is_stalled_with_the_database_message(e2e: E2E) -> None:
    failed = (
        "dbmigrate_runs_total",
        frozenset({("outcome", "MigrationFailed"), ("reason", "MigrationFailed")}),
    )
    counted = samples(e2e.op.metrics()).get(failed, 0)
    broken = stack.shop_copy(e2e.tmp / "shop-broken", aerich={BROKEN.name: BROKEN.read_text()})
    e2e.apply_example(image=e2e.image(broken))
    e2e.wait(lambda: e2e.condition() == ("Stalled", "MigrationFailed"), "Stalled/MigrationFailed")

    status = e2e.status()
    stalled = stack.condition(e2e.cluster, e2e.ns, NAME, "Stalled")
    assert 'relation "no_such_table" does not exist' in stalled["message"]
    assert status["phase"] == "Failed"
    assert samples(e2e.op.metrics())[failed] == counted + 1  # the run, counted with its outcome
    assert status["lastRun"]["outcome"] == Outcome.MIGRATION_FAILED
    good = [("models", v) for v in stack.shop_versions()]
    assert e2e.tracking() == good  # earlier versions applied and intact, the broken one left nothing
    assert stack.applied_pairs(status) == good
    assert "broken" not in e2e.columns("product")
    warnings = [
        e
        for e in stack.events_of(e2e.cluster, e2e.ns, NAME)
        if e["type"] == "Warning" and e["reason"] == "MigrationFailed"
    ]
    assert warnings
    assert "no_such_table" in warnings[0]["message"]
    (job,) = e2e.jobs()
    assert job["status"].get("failed") == 1  # a failed migration is final: no retries of the Pod
    row = e2e.cluster.kubectl("get", "dbm", NAME, "-n", e2e.ns, "--no-headers").stdout.split()
    assert row[1] == "False"
    assert row[3] == "Failed"
    e2e.no_password_anywhere()

    # The result outlives its Pod (pod GC, node drain): it is not re-derived from the Job alone.
    selector = f"{c.MIGRATION_LABEL}={NAME}"
    e2e.cluster.kubectl("delete", "pods", "-n", e2e.ns, "-l", selector, "--wait=true")
    time.sleep(5)  # the Pod deletion event and a reconcile or two
    assert e2e.condition() == ("Stalled", "MigrationFailed")
    assert "no_such_table" in stack.condition(e2e.cluster, e2e.ns, NAME, "Stalled")["message"]
    assert samples(e2e.op.metrics())[failed] == counted + 1  # re-reading the same run counts nothing


def test_missing_secret_is_reported_at_once_and_clears_when_it_arrives(e2e: E2E) -> None:
    e2e.apply_example(secret=False, job={"activeDeadlineSeconds": 3600})
    # Within the wait below, far from the Job's deadline: the Pod's own state says why.
    e2e.wait(lambda: e2e.condition() == ("Stalled", "SecretNotFound"), "Stalled/SecretNotFound", timeout=90)
    assert f'secret "{NAME}" not found' in stack.condition(e2e.cluster, e2e.ns, NAME, "Stalled")["message"]
    assert e2e.status()["phase"] == "Pending"
    assert any(e["type"] == "Warning" for e in stack.events_of(e2e.cluster, e2e.ns, NAME))

    e2e.apply_example(job={"activeDeadlineSeconds": 3600})  # now with the Secret: the Pod starts
    e2e.wait_ready()
    assert len(e2e.jobs()) == 1
    assert e2e.tracking() == [("models", v) for v in stack.shop_versions()]


def test_invalid_resources_are_refused_by_kubectl_apply(e2e: E2E) -> None:
    # tests/operator/test_crd_apiserver.py sends every case as a server dry-run; here each is a real
    # `kubectl apply -f` of the file as a user would write it, and nothing gets stored.
    failures = []
    for case in invalid_cases():
        obj = json.loads(json.dumps(case.obj))
        obj["metadata"]["namespace"] = e2e.ns
        res = e2e.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(obj), check=False)
        if res.returncode == 0 or case.expect not in res.stderr:
            failures.append((case.name, case.expect, res.returncode, res.stderr.strip()))
    assert failures == []
    assert e2e.cluster.kubectl("get", "dbm", "-n", e2e.ns, "-o", "name").stdout.strip() == ""
    assert len(invalid_cases()) >= 10


def test_operator_killed_mid_run_resumes_without_a_second_job(e2e: E2E) -> None:
    slow = stack.aerich_migration("SELECT pg_sleep(6);")
    project = stack.shop_copy(e2e.tmp / "shop-slow", aerich={"3_20991230000000_slow.py": slow})
    e2e.apply_example(image=e2e.image(project))
    e2e.wait(lambda: e2e.status().get("phase") == "Running", "the run under way")
    (job,) = e2e.jobs()

    e2e.op.kill()  # SIGKILL: no cleanup, no goodbye
    assert not e2e.op.alive()
    assert not stack.get_json(e2e.cluster, e2e.ns, "job", job["metadata"]["name"])["status"].get("succeeded")
    e2e.op.start()

    status = e2e.wait_ready()
    assert [j["metadata"]["name"] for j in e2e.jobs()] == [job["metadata"]["name"]]
    assert status["lastRun"]["job"] == job["metadata"]["name"]
    assert status["currentVersion"] == "models:3_20991230000000_slow"
    assert e2e.tracking() == [("models", v) for v in stack.shop_versions(project)]
    pods = stack.get_json(e2e.cluster, e2e.ns, "pods", "-l", f"{c.MIGRATION_LABEL}={NAME}")["items"]
    assert len(pods) == 1  # the runner ran once


def test_tortoise_tool_on_a_fresh_database(e2e: E2E) -> None:
    e2e.apply_example(tool="tortoise", config="shop.config.TORTOISE_ORM_BUILTIN")
    status = e2e.wait_ready()
    versions = stack.shop_versions(tool="tortoise")
    assert e2e.tracking("tortoise_migrations") == [("models", v) for v in versions]
    assert stack.applied_pairs(status) == e2e.tracking("tortoise_migrations")
    assert status["currentVersion"] == f"models:{versions[-1]}"
    assert e2e.pg.psql(e2e.db, "SELECT to_regclass('aerich') IS NULL") == "t"
    row = e2e.cluster.kubectl("get", "dbm", NAME, "-n", e2e.ns, "--no-headers").stdout.split()
    assert row[1:4] == ["True", f"models:{versions[-1]}", "Succeeded"]


def test_standalone_operator_reacts(e2e: E2E) -> None:
    # DBMIGRATE_STANDALONE=true (the default, one replica, what `.venv/bin/dbmigrate-operator`
    # runs locally), in place of the module's Lease-electing operator for the length of this test.
    standalone = OperatorProcess(e2e.op.kubeconfig, e2e.op.log, env={"DBMIGRATE_RESYNC_SECONDS": "30"})
    e2e.op.stop()
    try:
        standalone.start()
        e2e.apply_example()
        try:
            e2e.wait_ready()
        finally:
            standalone.stop()
    finally:
        e2e.op.start()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text exposition → {(sample name, labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_the_run_with_its_outcome(e2e: E2E) -> None:
    """/metrics of the operator process, on its own port, after a real run through the node agent."""
    succeeded = ("dbmigrate_runs_total", frozenset({("outcome", "Succeeded"), ("reason", "Applied")}))
    before = samples(e2e.op.metrics())
    e2e.apply_example()
    status = e2e.wait_ready()

    after = samples(e2e.op.metrics())
    assert after[succeeded] == before.get(succeeded, 0) + 1
    duration = ("dbmigrate_run_duration_seconds_count", frozenset({("outcome", "Succeeded")}))
    assert after[duration] == before.get(duration, 0) + 1
    completed = datetime.fromisoformat(status["lastRun"]["completedAt"].replace("Z", "+00:00"))
    last = ("dbmigrate_last_success_timestamp_seconds", frozenset({("namespace", e2e.ns), ("name", NAME)}))
    assert after[last] == completed.timestamp()
    assert after[("dbmigrate_reconcile_total", frozenset())] > before.get(
        ("dbmigrate_reconcile_total", frozenset()), 0
    )
    assert after[("dbmigrate_watch_events_total", frozenset({("resource", "jobs")}))] > 0
    # bounded cardinality: no Job or Pod name anywhere in the exposition
    job = status["lastRun"]["job"]
    assert job not in e2e.op.metrics()

    # the DatabaseMigration deleted: its series goes with it
    e2e.cluster.kubectl("delete", "dbm", NAME, "-n", e2e.ns, "--wait=true")
    e2e.wait(lambda: last not in samples(e2e.op.metrics()), "the last-success series removed")
