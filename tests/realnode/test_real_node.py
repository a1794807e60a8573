"""The whole story on a real node: a real kubelet runs the chart's operator image (2 replicas
electing with a Lease, restricted Pod Security) and the migration Jobs in containers built from
this repository's Dockerfiles. Every assertion reads what the kubelet reported (Pod/Job status).
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from dbmigrate_operator import constants as c
from dbmigrate_operator import images as image_refs
from dbmigrate_operator.jobs import CHECK_KIND, JOB_KIND_LABEL, PLAN_KIND
from dbmigrate_runner.report import DEFAULT_PATH, Outcome, decode
from localcluster import images, realstack, stack
from localcluster.cluster import Cluster
from localcluster.postgres import PASSWORD, Instance, lock_held_elsewhere
from localcluster.stack import events_of, get_json, jobs_of, shop_versions, status_of, wait_for
from tests.runner.test_lock_timeout import long_transaction

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.realnode,
    pytest.mark.local_cluster(
        "the real node: kubelet, containerd and this repository's images on this machine"
    ),
    pytest.mark.timeout(600),
]


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:5]}"


def _reason(status: dict[str, Any]) -> tuple[str, str, str]:
    """(type, reason, message) of the True kstatus condition."""
    for cond in status.get("conditions") or []:
        if cond["status"] == "True":
            return cond["type"], cond.get("reason", ""), cond.get("message", "")
    return "", "", ""


def _verdict(
    cluster: Cluster, namespace: str, name: str, kinds: tuple[str, ...], timeout: float, what: str
) -> dict[str, Any]:
    """The status once its True kstatus condition is one of `kinds`."""
    found: dict[str, Any] = wait_for(
        lambda: (s := status_of(cluster, namespace, name)) and _reason(s)[0] in kinds and s, timeout, what
    )
    return found


def _job_pods(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    """The pods of the migration's run and plan Jobs (not of its database checks, which a pinned app
    asks for)."""
    selector = f"{c.MIGRATION_LABEL}={name},{JOB_KIND_LABEL}!={CHECK_KIND}"
    return list(get_json(cluster, namespace, "pods", "-l", selector)["items"])


def _state(cluster: Cluster, namespace: str, name: str, key: str) -> dict[str, Any] | None:
    """The first migration pod's container state `key` (waiting/running/terminated), if in it."""
    pods = _job_pods(cluster, namespace, name)
    return _container(pods[0]).get("state", {}).get(key) if pods else None


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    return dict((pod.get("status", {}).get("containerStatuses") or [{}])[0])


def _deploy(cluster: Cluster, namespace: str, name: str, url: str, **spec: Any) -> None:
    cr = realstack.example_migration(namespace, **spec)
    _deploy_cr(cluster, cr, name, url)


def _deploy_cr(cluster: Cluster, cr: dict[str, Any], name: str, url: str) -> None:
    namespace = cr["metadata"]["namespace"]
    cr["metadata"]["name"] = name
    cr["spec"]["database"]["urlSecretRef"]["name"] = name
    realstack.apply(cluster, realstack.secret(namespace, name, url), cr)


def test_story_migration_in_a_container_releases_gated_pods(
    real_cluster: Cluster, operator: str, app_namespaces: dict[str, str], node_pg: Instance, database: str
) -> None:
    ns = app_namespaces["story"]
    # The app first, as `kubectl apply -f dir/` or Argo CD may do: its pods wait, gated by the
    # webhook that the API server reached through the chart's Service on the real node.
    realstack.apply(real_cluster, realstack.example_app(ns))
    gated = wait_for(
        lambda: [p for p in get_json(real_cluster, ns, "pods", "-l", "app=shop-web")["items"]
                 if c.SCHEDULING_GATE in {g["name"] for g in p["spec"].get("schedulingGates") or []}],
        60, "gated app pods",
    )  # fmt: skip
    assert all(p["status"]["phase"] == "Pending" for p in gated)
    assert {realstack.condition(p, "PodScheduled")["reason"] for p in gated} == {"SchedulingGated"}  # type: ignore[index]

    realstack.apply(real_cluster, *_story_docs(ns, realstack.pod_database_url(node_pg, database)))
    status = _verdict(
        real_cluster, ns, "shop-db", ("Ready", "Stalled"), 300, "the DatabaseMigration to be Ready"
    )
    assert _reason(status)[:2] == ("Ready", "Applied"), status
    expected = shop_versions()
    assert status["currentVersion"] == f"models:{expected[-1]}"
    applied_in_db = node_pg.server().psql(database, "SELECT version FROM aerich ORDER BY id").split()
    assert [v["version"] for v in status["appliedVersions"]] == [Path(v).stem for v in applied_in_db]

    # The kubelet ran the Job's container: exit 0, the report read from the path the Job names,
    # under a read-only root filesystem as a non-root user.
    (pod,) = _job_pods(real_cluster, ns, "shop-db")
    spec = pod["spec"]["containers"][0]
    assert spec["image"] == images.REFS["shop"]
    assert spec["terminationMessagePath"] == DEFAULT_PATH
    assert spec["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["runAsNonRoot"] is True
    terminated = _container(pod)["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
    report = decode(terminated["message"])
    assert report.outcome is Outcome.SUCCEEDED
    assert pod["status"]["containerStatuses"][0]["imageID"], "the kubelet reports the image it ran"
    complete = realstack.condition
    (job,) = wait_for(
        lambda: (js := jobs_of(real_cluster, ns, "shop-db")) and complete(js[-1], "Complete") and js,
        60, "the Job controller's Complete (it trails the Pod's exit)",
    )  # fmt: skip
    assert job["status"]["succeeded"] == 1

    # The gate is lifted and the app's pods run in real containers.
    running = wait_for(
        lambda: (ps := get_json(real_cluster, ns, "pods", "-l", "app=shop-web")["items"])
        and all(_container(p).get("ready") for p in ps) and ps,
        180, "the app pods Running and Ready",
    )  # fmt: skip
    assert all(not p["spec"].get("schedulingGates") for p in running)
    assert all(p["status"]["phase"] == "Running" for p in running)
    listed = real_cluster.crictl("ps", "-o", "json").stdout
    for p in running:
        assert _container(p)["containerID"].removeprefix("containerd://") in listed


def test_manual_approval_plans_in_a_container_and_kubectl_dbm_reads_the_kubelet(
    real_cluster: Cluster, operator: str, app_namespaces: dict[str, str], node_pg: Instance, database: str
) -> None:
    """docs/reviewing-changes.md on the real node: the plan Job runs the runner's `plan` (pglast
    in our image), nothing is applied until `kubectl dbm approve`, then exactly the plan runs, and
    `kubectl dbm logs` shows the run's log as the kubelet serves it."""
    ns, name = app_namespaces["review"], _name("review")
    _deploy(real_cluster, ns, name, realstack.pod_database_url(node_pg, database), approval="Manual")
    waiting = wait_for(
        lambda: (s := status_of(real_cluster, ns, name)) and _reason(s)[1] == "WaitingForApproval" and s,
        300, "the plan to wait for approval",
    )  # fmt: skip
    plan = waiting["plan"]
    assert plan["pending"] == [f"models:{v}" for v in shop_versions()]
    assert plan["hash"][:12] in _reason(waiting)[2]
    assert "currentVersion" not in waiting
    (plan_pod,) = get_json(real_cluster, ns, "pods", "-l", f"{JOB_KIND_LABEL}={PLAN_KIND}")["items"]
    assert plan_pod["spec"]["containers"][0]["args"][0] == "plan"
    terminated = _container(plan_pod)["state"]["terminated"]
    assert terminated["exitCode"] == 0
    assert decode(terminated["message"]).plan is not None
    # The image the plan ran, as the kubelet reported it, is what the approved run will use: by
    # digest when containerd knows the image's registry digest, else spec.image.
    ran = _container(plan_pod)["imageID"]
    assert plan["imageID"] == ran
    spec_image = get_json(real_cluster, ns, "dbm", name)["spec"]["image"]
    assert plan["image"] == (image_refs.at_digest(spec_image, ran) or spec_image)
    tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
    assert node_pg.server().psql(database, tables).strip() == "0", "a plan creates nothing"

    shown = stack.kubectl_dbm(real_cluster, "plan", name, "-n", ns)
    assert shown.returncode == 0, shown.stderr
    assert plan["hash"] in shown.stdout
    assert 'CREATE TABLE IF NOT EXISTS "product"' in shown.stdout
    approved = stack.kubectl_dbm(real_cluster, "approve", name, "-n", ns, "--yes")
    assert approved.returncode == 0, approved.stderr
    status = _verdict(real_cluster, ns, name, ("Ready", "Stalled"), 300, "the approved run")
    assert _reason(status)[:2] == ("Ready", "Applied"), status
    assert [v["version"] for v in status["appliedVersions"]] == shop_versions()
    assert status["lastRun"]["image"] == plan["image"]  # the run Job named the planned image

    logs = stack.kubectl_dbm(real_cluster, "logs", name, "-n", ns)
    assert logs.returncode == 0, logs.stderr
    events = [json.loads(line).get("event") for line in logs.stdout.splitlines() if line.startswith("{")]
    assert {"run.start", "migrations.done"} <= set(events), logs.stdout[-2000:]
    assert PASSWORD not in logs.stdout


def test_a_tag_moved_between_plan_and_run_runs_the_planned_digest(
    real_cluster: Cluster, operator: str, app_namespaces: dict[str, str], node_pg: Instance, database: str
) -> None:
    """docs/reviewing-changes.md "What an approval covers" on the real node: the plan Pod ran tag
    `moving:1` (the shop image, known to containerd by its registry digest); the tag is then moved to
    another image (the Alembic example's); the approved run names the planned digest, so the
    reviewed shop image runs and is applied, not what the tag names now."""
    node = real_cluster.real_node
    assert node is not None
    ctr = ["ctr", "--address", str(node.containerd_socket), "--namespace", "k8s.io", "images"]
    repo = "localhost/dbmigrate/moving-migrations"

    def target_digest(ref: str) -> str:
        for line in subprocess.run(
            [*ctr, "ls"], capture_output=True, text=True, check=True
        ).stdout.splitlines():
            fields = line.split()
            if fields and fields[0] == ref:
                return next(f for f in fields if f.startswith("sha256:"))
        raise AssertionError(f"containerd has no image {ref}")

    def tag(source: str, ref: str) -> None:
        subprocess.run([*ctr, "tag", "--force", source, ref], capture_output=True, text=True, check=True)

    planned = f"{repo}@{target_digest(images.REFS['shop'])}"
    tag(images.REFS["shop"], f"{repo}:1")
    tag(images.REFS["shop"], planned)  # what a pull from a registry records: the repo digest
    try:
        ns, name = app_namespaces["retag"], _name("retag")
        url = realstack.pod_database_url(node_pg, database)
        _deploy(real_cluster, ns, name, url, approval="Manual", image=f"{repo}:1")
        waiting = wait_for(
            lambda: (s := status_of(real_cluster, ns, name)) and _reason(s)[1] == "WaitingForApproval" and s,
            300, "the plan to wait for approval",
        )  # fmt: skip
        assert waiting["plan"]["image"] == planned
        assert waiting["plan"]["imageID"] == planned

        tag(images.REFS["alembic-shop"], f"{repo}:1")  # the tag moves to other code
        real_cluster.kubectl(
            "annotate", "dbm", name, "-n", ns, f"{c.APPROVE_ANNOTATION}={waiting['plan']['hash']}"
        )
        status = _verdict(real_cluster, ns, name, ("Ready", "Stalled"), 300, "the approved run")
        assert _reason(status)[:2] == ("Ready", "Applied"), status
        assert status["lastRun"]["image"] == planned
        assert [v["version"] for v in status["appliedVersions"]] == shop_versions()
        (run_pod,) = [
            p
            for p in _job_pods(real_cluster, ns, name)
            if p["metadata"]["labels"].get(JOB_KIND_LABEL) != PLAN_KIND
        ]
        assert run_pod["spec"]["containers"][0]["image"] == planned
    finally:
        for ref in (f"{repo}:1", planned):
            subprocess.run([*ctr, "rm", ref], capture_output=True, text=True, check=False)


def test_alembic_adopts_an_existing_schema_and_gates_on_revisions(
    real_cluster: Cluster, operator: str, app_namespaces: dict[str, str], node_pg: Instance, database: str
) -> None:
    """#13 on the real node: a production database that already has the first revision's schema
    (made by hand, no alembic_version) is adopted with spec.baseline from examples/alembic-shop's
    image; a pod pinned to an ancestor of the new head is released, one pinned to a revision the
    image does not have stays held."""
    ns, name = app_namespaces["alembic"], _name("alembic")
    server = node_pg.server()
    server.psql(database, "CREATE TABLE users (id serial PRIMARY KEY, email varchar(200) NOT NULL UNIQUE)")
    server.psql(database, "INSERT INTO users (email) VALUES ('kept@example.com')")
    realstack.apply(
        real_cluster,
        _pinned_pod(ns, "on-orders", name, f"{c.ALEMBIC_APP}:{ORDERS_REVISION}"),
        _pinned_pod(ns, "on-unknown", name, f"{c.ALEMBIC_APP}:ffffffffffff"),
    )
    cr = realstack.example_migration(
        ns, manifest=realstack.EXAMPLE_ALEMBIC, built="alembic-shop", baseline=FIRST_REVISION
    )
    _deploy_cr(real_cluster, cr, name, realstack.pod_database_url(node_pg, database))

    status = _verdict(real_cluster, ns, name, ("Ready", "Stalled"), 300, "the Alembic migration")
    assert _reason(status)[:2] == ("Ready", "Applied"), status
    assert status["currentVersion"] == f"{c.ALEMBIC_APP}:{HEAD_REVISION}"
    assert server.psql(database, "SELECT version_num FROM shop_alembic_version").strip() == HEAD_REVISION
    assert server.psql(database, "SELECT email FROM users").strip() == "kept@example.com"
    bio = "SELECT count(*) FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'bio'"
    assert server.psql(database, bio).strip() == "1", "the revisions after the baseline ran"
    (pod,) = _job_pods(real_cluster, ns, name)
    assert pod["spec"]["containers"][0]["image"] == images.REFS["alembic-shop"]

    released = wait_for(
        lambda: (p := get_json(real_cluster, ns, "pod", "on-orders"))["status"]["phase"] == "Running" and p,
        120, "the pod pinned to an applied ancestor Running",
    )  # fmt: skip
    assert not released["spec"].get("schedulingGates")
    held = get_json(real_cluster, ns, "pod", "on-unknown")
    assert [g["name"] for g in held["spec"]["schedulingGates"]] == [c.SCHEDULING_GATE]


def test_a_secret_edited_to_another_database_holds_the_new_rollout_until_it_is_migrated(
    real_cluster: Cluster, operator: str, app_namespaces: dict[str, str], node_pg: Instance, database: str
) -> None:
    """#18 item 9 as seen through Argo CD: the Secret is changed in place (same name and key) to a new,
    empty database and a new ReplicaSet of the pinned app rolls out. Its pods stay gated until the
    database check found the other database and the run against it applied the pinned version."""
    ns, server = app_namespaces["secret"], node_pg.server()
    empty = server.create_database(f"rn_{uuid.uuid4().hex[:8]}")
    realstack.apply(real_cluster, *_story_docs(ns, realstack.pod_database_url(node_pg, database)))
    status = _verdict(real_cluster, ns, "shop-db", ("Ready", "Stalled"), 300, "the first run")
    assert _reason(status)[:2] == ("Ready", "Applied"), status
    app = realstack.example_app(ns, replicas=1)

    def rollout_pods(release: str) -> list[dict[str, Any]]:
        pods = get_json(real_cluster, ns, "pods", "-l", "app=shop-web")["items"]
        return [p for p in pods if p["metadata"].get("annotations", {}).get("release") == release]

    app["spec"]["template"]["metadata"]["annotations"]["release"] = "1"
    realstack.apply(real_cluster, app)
    wait_for(
        lambda: (ps := rollout_pods("1")) and all(_container(p).get("ready") for p in ps), 180, "release 1"
    )

    realstack.apply(real_cluster, realstack.secret(ns, "shop-db", realstack.pod_database_url(node_pg, empty)))
    app["spec"]["template"]["metadata"]["annotations"]["release"] = "2"
    realstack.apply(real_cluster, app)
    held = wait_for(lambda: rollout_pods("2"), 60, "release 2's pod")
    assert all(c.SCHEDULING_GATE in {g["name"] for g in p["spec"].get("schedulingGates") or []} for p in held)
    moved = wait_for(
        lambda: [e for e in stack.events_of(real_cluster, ns, "shop-db") if e["reason"] == "DatabaseMoved"],
        120, "the check finding the other database",
    )  # fmt: skip
    assert "the Secret now points at another database" in moved[-1]["message"]

    def released() -> bool:
        pods = rollout_pods("2")
        if not (pods and all(_container(p).get("ready") for p in pods)):
            return False
        # Running: the new database holds the pinned version by then.
        assert shop_versions()[-1] in server.psql(empty, "SELECT version FROM aerich")
        return True

    wait_for(released, 300, "release 2 Running against the migrated new database")
    final = status_of(real_cluster, ns, "shop-db")
    assert final["database"]["fingerprint"] == final["databaseCheck"]["moved"]
    assert all(_container(p).get("ready") for p in rollout_pods("1")), "release 1 kept serving"


FIRST_REVISION, ORDERS_REVISION, HEAD_REVISION = "a1b2c3d4e5f6", "b7e1f0c2a9d3", "d0e1f2a3b4c5"


def _pinned_pod(namespace: str, name: str, migration: str, version: str) -> dict[str, Any]:
    pod = _labelled_pod(namespace, name)
    pod["metadata"]["labels"][c.WAIT_FOR_LABEL] = migration
    pod["metadata"]["annotations"] = {c.WAIT_FOR_VERSION_ANNOTATION: version}
    return pod


def _story_docs(namespace: str, url: str) -> list[dict[str, Any]]:
    return [realstack.secret(namespace, "shop-db", url), realstack.example_migration(namespace)]


def test_missing_secret_then_created(
    real_cluster: Cluster, operator: str, app_namespaces: dict[str, str], node_pg: Instance, database: str
) -> None:
    ns, name = app_namespaces["failures"], _name("nosecret")
    cr = realstack.example_migration(ns)
    cr["metadata"]["name"] = name
    cr["spec"]["database"]["urlSecretRef"]["name"] = name  # not created yet
    realstack.apply(real_cluster, cr)
    waiting = wait_for(
        lambda: (w := _state(real_cluster, ns, name, "waiting")) and w["reason"] != "ContainerCreating" and w,
        120, "the kubelet to report the missing Secret",
    )  # fmt: skip
    assert waiting["reason"] == "CreateContainerConfigError"
    assert name in waiting["message"]
    status = _verdict(real_cluster, ns, name, ("Stalled",), 60, "Stalled")
    assert _reason(status)[1] == "SecretNotFound"
    assert name in _reason(status)[2]

    realstack.apply(real_cluster, realstack.secret(ns, name, realstack.pod_database_url(node_pg, database)))
    status = _verdict(
        real_cluster,
        ns,
        name,
        ("Ready",),
        180,
        "Ready once the Secret exists (the kubelet retries by itself)",
    )
    assert status["currentVersion"] == f"models:{shop_versions()[-1]}"


def test_a_secret_entry_named_by_any_key_never_shows(
    real_cluster: Cluster, operator: str, app_namespaces: dict[str, str], node_pg: Instance, database: str
) -> None:
    """Issue 18: `portKey` naming an API key of the Secret put `DB_PORT must be a number, got
    'sk_live_…'` into status.lastRun.message and a Warning Event. Now the key is named, the value
    (or any 4-character piece of it) is nowhere: status, Events, the termination message, the log."""
    ns, name = app_namespaces["failures"], _name("keys")
    api_key = "sk_live_" + uuid.uuid4().hex[:12] + "Qx" + uuid.uuid4().hex[:10].upper()
    url = urlsplit(realstack.pod_database_url(node_pg, database))
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "stringData": {
            "host": str(url.hostname),
            "port": str(url.port),
            "name": database,
            "user": str(url.username),
            "password": PASSWORD,
            "api-key": api_key,
        },
    }
    cr = realstack.example_migration(ns)
    cr["metadata"]["name"] = name
    cr["spec"]["database"] = {"secretRef": {"name": name, "portKey": "api-key"}}
    realstack.apply(real_cluster, secret, cr)
    status = _verdict(real_cluster, ns, name, ("Stalled",), 180, "Stalled on the port")
    _type, reason, message = _reason(status)
    assert reason == "ConfigError", message
    assert "DB_PORT (from the Secret) must be a port number" in message
    assert "ConfigError: ConfigError" not in message
    events = get_json(real_cluster, ns, "events", "--field-selector", f"involvedObject.name={name}")
    assert any(e["type"] == "Warning" for e in events["items"])
    pods = _job_pods(real_cluster, ns, name)
    logs = "".join(
        real_cluster.kubectl("logs", "-n", ns, pod["metadata"]["name"], check=False).stdout for pod in pods
    )
    assert "run.end" in logs
    pieces = {api_key[i : i + 4] for i in range(len(api_key) - 3)}
    for where, text in (
        ("status", json.dumps(status)),
        ("events", json.dumps(events)),
        ("pods (termination message)", json.dumps(pods)),
        ("log", logs),
    ):
        found = sorted(p for p in pieces if p in text)
        assert not found, f"pieces {found} of the Secret's api-key in the {where}"


def test_absent_image_is_a_real_pull_failure(
    real_cluster: Cluster, operator: str, app_namespaces: dict[str, str], node_pg: Instance, database: str
) -> None:
    ns, name = app_namespaces["failures"], _name("noimage")
    absent = "localhost/dbmigrate/not-built:0.0.1"
    _deploy(real_cluster, ns, name, realstack.pod_database_url(node_pg, database), image=absent)
    waiting = wait_for(
        lambda: (ps := _job_pods(real_cluster, ns, name))
        and (w := _container(ps[0]).get("state", {}).get("waiting"))
        and w["reason"] in ("ErrImagePull", "ImagePullBackOff") and w,
        120, "the kubelet's pull failure",
    )  # fmt: skip
    assert absent in waiting["message"]
    status = _verdict(real_cluster, ns, name, ("Stalled",), 60, "Stalled")
    assert _reason(status)[1] == "ImagePullFailed"
    assert absent in _reason(status)[2]


def test_memory_limit_kill_is_called_oomkilled(
    real_cluster: Cluster, operator: str, app_namespaces: dict[str, str], node_pg: Instance, database: str
) -> None:
    ns, name = app_namespaces["failures"], _name("oom")
    job = {"backoffLimit": 0, "resources": {"limits": {"memory": "20Mi"}, "requests": {"memory": "20Mi"}}}
    _deploy(real_cluster, ns, name, realstack.pod_database_url(node_pg, database), job=job)
    terminated = wait_for(
        lambda: _state(real_cluster, ns, name, "terminated"),
        180, "the container killed by its memory limit",
    )  # fmt: skip
    assert (terminated["reason"], terminated["exitCode"]) == ("OOMKilled", 137)
    status = _verdict(real_cluster, ns, name, ("Stalled",), 120, "Stalled")
    _, reason, message = _reason(status)
    assert reason == "OOMKilled", status
    assert "memory" in message


def test_active_deadline_while_waiting_for_a_lock(
    real_cluster: Cluster, operator: str, app_namespaces: dict[str, str], node_pg: Instance, database: str
) -> None:
    ns, name = app_namespaces["deadline"], _name("deadline")
    with lock_held_elsewhere(node_pg.server(), database):
        _deploy(
            real_cluster, ns, name, realstack.pod_database_url(node_pg, database),
            job={"activeDeadlineSeconds": 30, "backoffLimit": 0},  # the schema's minimum
        )  # fmt: skip
        (job,) = wait_for(
            lambda: (js := jobs_of(real_cluster, ns, name)) and realstack.condition(js[0], "Failed") and js,
            120, "the Job's deadline",
        )  # fmt: skip
        assert realstack.condition(job, "Failed")["reason"] == "DeadlineExceeded"  # type: ignore[index]
        status = _verdict(real_cluster, ns, name, ("Stalled",), 60, "Stalled")
    assert _reason(status)[1] == "DeadlineExceeded", status
    assert status["lastRun"]["outcome"] != "Succeeded"


def test_a_running_migration_survives_a_foreground_deletion(
    real_cluster: Cluster, operator: str, app_namespaces: dict[str, str], node_pg: Instance, database: str
) -> None:
    """`kubectl delete dbm --cascade=foreground` while the runner is in its container (held on the
    advisory lock): the chart's running-migrations policy keeps the garbage collector off the Job,
    the container keeps running, and once the lock is free the run applies everything before the
    resource and its Job go. On the chart without that policy the Job was deleted at once."""
    ns, name = app_namespaces["deadline"], _name("fgdelete")
    server = node_pg.server()
    with lock_held_elsewhere(server, database):
        _deploy(real_cluster, ns, name, realstack.pod_database_url(node_pg, database))
        wait_for(
            lambda: _state(real_cluster, ns, name, "running")
            and c.RUN_FINALIZER in get_json(real_cluster, ns, "dbm", name)["metadata"].get("finalizers", []),
            120, "the migration container running (waiting for the lock) and the finalizer on",
        )  # fmt: skip
        (job,) = jobs_of(real_cluster, ns, name)
        (pod,) = _job_pods(real_cluster, ns, name)
        real_cluster.kubectl("delete", "dbm", name, "-n", ns, "--cascade=foreground", "--wait=false")
        wait_for(
            lambda: get_json(real_cluster, ns, "dbm", name)["metadata"].get("deletionTimestamp"),
            30, "Terminating",
        )  # fmt: skip
        time.sleep(5)  # the garbage collector acts within milliseconds (it did on the old chart)
        (alive,) = jobs_of(real_cluster, ns, name)
        assert alive["metadata"]["uid"] == job["metadata"]["uid"]
        assert not alive["metadata"].get("deletionTimestamp")
        (now,) = _job_pods(real_cluster, ns, name)
        assert now["metadata"]["uid"] == pod["metadata"]["uid"]
        assert "running" in _container(now).get("state", {}), now["status"]
        assert server.psql(database, "SELECT to_regclass('aerich') IS NULL").strip() == "t"
    wait_for(
        lambda: real_cluster.kubectl("get", "dbm", name, "-n", ns, check=False).returncode != 0,
        180, "the resource gone once its run ended",
    )  # fmt: skip
    applied = server.psql(database, "SELECT version FROM aerich ORDER BY id").split()
    assert [Path(v).stem for v in applied] == shop_versions()
    wait_for(lambda: not jobs_of(real_cluster, ns, name), 120, "the Job collected after the run")


def _active_operator_pod(cluster: Cluster, fullname: str) -> str:
    """The replica holding the leader-election Lease (holderIdentity: `<pod name>_<process id>`)."""
    lease = get_json(cluster, realstack.OPERATOR_NAMESPACE, "lease", fullname)
    return str(lease["spec"]["holderIdentity"]).rsplit("_", 1)[0]


POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"  # bound ServiceAccount tokens name their pod


def _lease(cluster: Cluster, fullname: str) -> dict[str, Any]:
    return dict(get_json(cluster, realstack.OPERATOR_NAMESPACE, "lease", fullname)["spec"])


def _micro(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _status_writes(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    """The API server's audit events of every write to this DatabaseMigration's status, oldest first."""
    return [
        e
        for e in cluster.audited_writes()
        if (ref := e.get("objectRef") or {}).get("resource") == c.PLURAL
        and ref.get("subresource") == "status"
        and ref.get("namespace") == namespace
        and ref.get("name") == name
        and e.get("responseStatus", {}).get("code", 0) < 300
    ]


def _writer_pod(event: dict[str, Any]) -> str:
    return str(((event.get("user") or {}).get("extra") or {}).get(POD_NAME_EXTRA, [""])[0])


def test_active_operator_killed_hard_mid_run_the_standby_takes_over_after_the_lease_expires(
    real_cluster: Cluster, operator: str, app_namespaces: dict[str, str], node_pg: Instance, database: str
) -> None:
    """The active replica's process is SIGKILLed through the container runtime while its run is in
    flight (the runner held on the advisory lock by this test's session): it cannot hand the Lease
    back, so the standby takes over only once the Lease expired; the run goes on under the new holder
    with exactly one Job, each migration applied once, and every status write after the kill is the
    new holder's, after its takeover (the API server's audit log names the writer's Pod)."""
    ns, name = app_namespaces["handover"], _name("handover")
    server = node_pg.server()
    with lock_held_elsewhere(server, database):
        _deploy(real_cluster, ns, name, realstack.pod_database_url(node_pg, database))
        wait_for(
            lambda: _state(real_cluster, ns, name, "running")
            and status_of(real_cluster, ns, name).get("phase") == "Running",
            120, "the migration container running (waiting for the lock) and the status saying so",
        )  # fmt: skip
        before = _lease(real_cluster, operator)
        killed_identity = str(before["holderIdentity"])
        killed_pod = killed_identity.rsplit("_", 1)[0]
        pod = get_json(real_cluster, realstack.OPERATOR_NAMESPACE, "pod", killed_pod)
        container_id = _container(pod)["containerID"].removeprefix("containerd://")
        assert [_writer_pod(e) for e in _status_writes(real_cluster, ns, name)][-1:] == [killed_pod], (
            "the audit log attributes the run's first status writes to the active replica's Pod"
        )
        real_cluster.crictl("stop", "--timeout", "0", container_id)  # SIGKILL: no release, no goodbye
        killed_at = datetime.now(UTC)
        last = _lease(real_cluster, operator)  # the dead holder's last renewal, as the API keeps it
        assert last["holderIdentity"] == killed_identity, "a killed process cannot release the Lease"
        gone = (None, killed_identity)
        after = wait_for(
            lambda: (lease := _lease(real_cluster, operator)).get("holderIdentity") not in gone and lease,
            180, "a new Lease holder",
        )  # fmt: skip
        duration = timedelta(seconds=int(last["leaseDurationSeconds"]))
        assert _micro(after["acquireTime"]) >= _micro(last["renewTime"]) + duration, (
            "taken over before the Lease expired",
            last,
            after,
        )
        assert int(after["leaseTransitions"]) == int(last.get("leaseTransitions") or 0) + 1
        restarted = get_json(real_cluster, realstack.OPERATOR_NAMESPACE, "pod", killed_pod)
        assert _container(restarted)["lastState"]["terminated"]["exitCode"] == 137, "killed by SIGKILL"
        assert _state(real_cluster, ns, name, "running"), "the migration kept running through the takeover"
    # the lock is free: the runner applies everything, under the new holder
    status = _verdict(
        real_cluster, ns, name, ("Ready", "Stalled"), 240, "the run completed after the takeover"
    )
    assert _reason(status)[:2] == ("Ready", "Applied"), status
    assert len(jobs_of(real_cluster, ns, name)) == 1, "no second Job after the takeover"
    applied = server.psql(database, "SELECT version FROM aerich ORDER BY id").split()
    assert [Path(v).stem for v in applied] == shop_versions(), "each migration applied exactly once"
    new_pod, acquired = str(after["holderIdentity"]).rsplit("_", 1)[0], _micro(after["acquireTime"])
    since_kill = [
        e for e in _status_writes(real_cluster, ns, name) if _micro(e["stageTimestamp"]) >= killed_at
    ]
    assert since_kill, "the new holder recorded the result"
    assert {_writer_pod(e) for e in since_kill} == {new_pod}, since_kill
    assert all(_micro(e["requestReceivedTimestamp"]) >= acquired for e in since_kill), (acquired, since_kill)


def _labelled_pod(namespace: str, name: str) -> dict[str, Any]:
    """A restricted-compliant pod that opts in to gating (on a DatabaseMigration that never runs)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {c.WAIT_FOR_LABEL: "never-created"}},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "web",
                    "image": images.REFS["app"],
                    "imagePullPolicy": "Never",
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


def test_webhook_pods_gone_fail_refuses_ignore_admits(real_cluster: Cluster) -> None:
    """docs/gating.md: with every operator pod gone, `Fail` refuses opted-in pods (never created
    ungated); `Ignore` lets them start without waiting. Its own release, scoped to one namespace."""
    system = realstack.restricted_namespace(real_cluster, "rn-webhook-sys")
    app = realstack.restricted_namespace(real_cluster, "rn-webhook-app")
    fullname = realstack.install_operator(
        real_cluster, system, "outage", watch=(app,), values=("replicaCount=1",)
    )
    gated = _labelled_pod(app, "while-up")
    real_cluster.kubectl("apply", "-f", "-", input=json.dumps(gated))
    pod = get_json(real_cluster, app, "pod", "while-up")
    assert [g["name"] for g in pod["spec"]["schedulingGates"]] == [c.SCHEDULING_GATE]

    real_cluster.kubectl("scale", "deployment", fullname, "-n", system, "--replicas=0")
    wait_for(lambda: not get_json(real_cluster, system, "pods")["items"], 120, "no operator pod left")
    refused = real_cluster.kubectl(
        "apply", "-f", "-", input=json.dumps(_labelled_pod(app, "while-down")), check=False
    )
    assert refused.returncode != 0
    assert "failed calling webhook" in refused.stderr, refused.stderr

    real_cluster.helm(
        "upgrade", "outage", str(realstack.CHART), "-n", system, "--reuse-values",
        "--set", "webhook.failurePolicy=Ignore",
    )  # fmt: skip
    real_cluster.kubectl("scale", "deployment", fullname, "-n", system, "--replicas=0")
    wait_for(lambda: not get_json(real_cluster, system, "pods")["items"], 120, "no operator pod left")
    admitted = wait_for(
        lambda: real_cluster.kubectl(
            "apply", "-f", "-", input=json.dumps(_labelled_pod(app, "ignored")), check=False
        ).returncode == 0,
        60, "the API server to use the Ignore policy",
    )  # fmt: skip
    assert admitted
    running = wait_for(
        lambda: (p := get_json(real_cluster, app, "pod", "ignored"))["status"]["phase"] == "Running" and p,
        120, "the ungated pod Running",
    )  # fmt: skip
    assert not running["spec"].get("schedulingGates")


def _at_v1(cluster: Cluster, ns: str, name: str, url: str) -> None:
    """The shop's first two migrations applied, so the third (ALTER TABLE customer) is pending."""
    _deploy(cluster, ns, name, url, target=shop_versions()[1])
    status = _verdict(cluster, ns, name, ("Ready", "Stalled"), 300, f"{name} Ready at the second migration")
    assert _reason(status)[:2] == ("Ready", "Applied"), status


def _upgrade_with(cluster: Cluster, ns: str, name: str, locking: dict[str, Any]) -> None:
    patch = {"spec": {"target": None, "locking": locking}}
    cluster.kubectl("patch", "dbm", name, "-n", ns, "--type=merge", "-p", json.dumps(patch))


def test_the_blocker_shows_while_the_migration_waits_then_ready_or_lock_not_available(
    real_cluster: Cluster, operator: str, app_namespaces: dict[str, str], node_pg: Instance
) -> None:
    """Issue #22: an app session holds a lock on the table a migration alters. While the runner
    retries, `kubectl describe dbm` names the session (read by the operator from the Pod's log
    through the kubelet); once the session commits, the run succeeds. A lock never released ends in
    LockNotAvailable, nothing applied, the blocker in the status."""
    ns, server, versions = app_namespaces["locks"], node_pg.server(), shop_versions()
    waits, stuck = _name("waits"), _name("stuck")
    db = {n: server.create_database(f"rn_{uuid.uuid4().hex[:8]}") for n in (waits, stuck)}
    for n in (waits, stuck):
        _at_v1(real_cluster, ns, n, realstack.pod_database_url(node_pg, db[n]))
    with (
        long_transaction(server, db[waits], "customer") as app,
        long_transaction(server, db[stuck], "customer") as forever,
    ):
        _upgrade_with(real_cluster, ns, waits, {"timeout": "1s", "retries": 200, "budget": "10m"})
        _upgrade_with(real_cluster, ns, stuck, {"timeout": "500ms", "retries": 3, "budget": "1m"})
        live = wait_for(
            lambda: (s := status_of(real_cluster, ns, waits))
            and (s.get("lockWait") or {}).get("blockerPid") == app.pid and s,
            120, "status.lockWait naming the app's session while the migration waits",
        )  # fmt: skip
        kind, reason, message = _reason(live)
        assert (kind, reason) == ("Reconciling", "WaitingForLock"), live
        for words in (f"pid {app.pid}", "public.customer", "'reporting'", "idle in transaction", "of 200"):
            assert words in message, message
        described = real_cluster.kubectl("describe", "dbm", waits, "-n", ns).stdout
        assert "WaitingForLock" in described
        assert f"pid {app.pid}" in described
        assert PASSWORD not in described
        app.end()  # the app commits: the next attempt gets the lock
        status = _verdict(
            real_cluster, ns, waits, ("Ready", "Stalled"), 180, f"{waits} Ready after the commit"
        )
        assert _reason(status)[:2] == ("Ready", "Applied"), status
        assert status["currentVersion"] == f"models:{versions[-1]}"
        assert "lockWait" not in status
        assert "bio" in server.psql(
            db[waits], "SELECT column_name FROM information_schema.columns WHERE table_name = 'customer'"
        )
        # one Event for this blocker, however many attempts and reads (not one per poll)
        named = [
            e for e in events_of(real_cluster, ns, waits)
            if e["reason"] == "WaitingForLock" and f"pid {app.pid}" in e["message"]
        ]  # fmt: skip
        assert sum(int(e.get("count") or 1) for e in named) == 1, named

        failed = _verdict(real_cluster, ns, stuck, ("Stalled",), 180, f"{stuck} Stalled")
        kind, reason, message = _reason(failed)
        assert reason == "LockNotAvailable", failed
        assert f"pid {forever.pid}" in message
        assert failed["lastRun"]["outcome"] == "LockNotAvailable"
        assert "lockWait" not in failed
        (job,) = [j for j in jobs_of(real_cluster, ns, stuck) if realstack.condition(j, "Failed")]
        assert job["status"].get("succeeded") in (None, 0)
        assert failed["currentVersion"] == f"models:{versions[1]}"
        applied = server.psql(db[stuck], "SELECT version FROM aerich ORDER BY id").split()
        assert [Path(v).stem for v in applied] == versions[:2]
        columns = server.psql(
            db[stuck], "SELECT column_name FROM information_schema.columns WHERE table_name = 'customer'"
        )
        assert "bio" not in columns
