"""Figure 11 on the real node: the operator against an Argo CD PreSync hook Job, synced by the same
Argo CD 3.6.2 from Git in the same run, same app image, same migrations image, two databases.

Why it exists: the alternative our users have today is a PreSync hook Job running the init-container
steps (bench/baselines/init_container.sh: wait for PostgreSQL, create aerich's table, `aerich
upgrade`); the product claims to be better and this measures it side by side:

* upgrade: time from the commit to every new pod Running (and Ready), for a commit that adds one
  migration (schema 1 → 2) and the app release that needs it;
* no-change syncs: Jobs created over N syncs of an unchanged commit (`argocd app sync`, which is
  what a CI pipeline, a person or a sync window does; auto-sync alone does not re-sync a Synced
  app), and how long each sync takes;
* a failing migration committed: what Argo CD shows, whether the old pods keep serving, whether
  new pods ever run, and how many Jobs are created while Argo CD retries.

The hook Job runs in the migrations image with the steps of init_container.sh written in Python
(the image has no psql): that image's `aerich upgrade` applies every migration it carries, so the
first release's hook hides migration 2 from its copy of the folder (as an image built before it
would) and the failing release adds one whose SQL fails. The operator's releases are the stories'
(tests/realnode/test_argocd.py): `target` 1, then 2, then a version the image lacks.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from bench.context import Context
from bench.core import FigureResult
from dbmigrate_operator import constants as c
from localcluster.sampling import Sampler

HOOK_SCRIPT = r"""
set -eu
# init_container.sh, step 1: wait until PostgreSQL answers (pg_isready, then `select 1`).
until python -c 'import asyncio, asyncpg, os
async def ping():
    conn = await asyncpg.connect(os.environ["DATABASE_URL"], timeout=3)
    await conn.fetchval("select 1")
    await conn.close()
asyncio.run(ping())'; do echo "waiting for postgres"; sleep 1; done
cp -r /app /tmp/app && cd /tmp/app
# the release's image: what migrations it carries
if [ -n "${HIDE:-}" ]; then rm -f migrations/models/${HIDE}*; fi
if [ -n "${BREAK:-}" ]; then
  cat > migrations/models/3_20990101000000_broken.py <<'PY'
from tortoise import BaseDBAsyncClient


async def upgrade(db: BaseDBAsyncClient) -> str:
    return "SELECT * FROM no_such_table;"


async def downgrade(db: BaseDBAsyncClient) -> str:
    return ""
PY
fi
# step 2: aerich's tracking table by hand (bench/baselines/create_aerich_table.py)
python -c 'from tortoise import Tortoise, run_async
from shop.config import TORTOISE_ORM
DDL = ("CREATE TABLE IF NOT EXISTS \"aerich\" (\"id\" SERIAL NOT NULL PRIMARY KEY, "
       "\"version\" VARCHAR(255) NOT NULL, \"app\" VARCHAR(100) NOT NULL, \"content\" JSONB NOT NULL)")
async def main():
    await Tortoise.init(config=TORTOISE_ORM)
    await Tortoise.get_connection("default").execute_script(DDL)
run_async(main())'
# step 3
exec aerich upgrade
"""

RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}
POD_SECURITY = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
RELEASE = "bench.dbmigrate.dev/release"
SYNC_TIMEOUT = 300


def _versions() -> list[str]:
    from localcluster.stack import shop_versions

    return [f"models:{v}" for v in shop_versions()]


def _deployment(namespace: str, release: int, pin: str | None) -> dict[str, Any]:
    from localcluster import realstack

    app = realstack.example_app(namespace, replicas=2)
    meta = app["spec"]["template"]["metadata"]
    meta["annotations"] = {RELEASE: str(release)}
    if pin is None:  # the hook way: no operator objects, no gate
        meta["labels"].pop(c.WAIT_FOR_LABEL, None)
    else:
        meta["annotations"][c.WAIT_FOR_VERSION_ANNOTATION] = pin
    return app


def operator_files(namespace: str, release: int, target: str) -> dict[str, str]:
    """The operator way, as docs/argocd.md lays it out: DatabaseMigration in wave -1, app in 0."""
    from localcluster import realstack

    cr = realstack.example_migration(namespace, target=target)
    cr["metadata"]["annotations"] = {"argocd.argoproj.io/sync-wave": "-1"}
    return {
        "app/databasemigration.yaml": yaml.safe_dump(cr),
        "app/deployment.yaml": yaml.safe_dump(_deployment(namespace, release, target)),
    }


def hook_files(namespace: str, release: int, env: dict[str, str]) -> dict[str, str]:
    """The PreSync way: a hook Job (Argo CD's default delete policy, BeforeHookCreation) and the app."""
    from localcluster import images

    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "shop-migrate",
            "namespace": namespace,
            "annotations": {
                "argocd.argoproj.io/hook": "PreSync",
                "argocd.argoproj.io/hook-delete-policy": "BeforeHookCreation",
            },
        },
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "securityContext": POD_SECURITY,
                    "containers": [
                        {
                            "name": "migrate",
                            "image": images.REFS["shop"],
                            "imagePullPolicy": "Never",
                            "command": ["sh", "-c", HOOK_SCRIPT],
                            "securityContext": RESTRICTED_CONTAINER,
                            "env": [
                                {
                                    "name": "DATABASE_URL",
                                    "valueFrom": {"secretKeyRef": {"name": "shop-db", "key": "url"}},
                                },
                                *({"name": k, "value": v} for k, v in env.items()),
                            ],
                        }
                    ],
                }
            },
        },
    }
    return {
        "app/hook-job.yaml": yaml.safe_dump(job),
        "app/deployment.yaml": yaml.safe_dump(_deployment(namespace, release, None)),
    }


@dataclass
class Watch(Sampler):
    """Samples one namespace every half second: the Jobs ever seen (by uid) and the app's pods."""

    cluster: Any
    namespace: str
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    pods: list[tuple[float, list[dict[str, Any]]]] = field(default_factory=list)
    every = 0.5

    def _get(self, kind: str) -> list[dict[str, Any]]:
        out = self.cluster.kubectl("-n", self.namespace, "get", kind, "-o", "json", check=False)
        items: list[dict[str, Any]] = json.loads(out.stdout)["items"] if out.returncode == 0 else []
        return items

    def sample(self) -> None:
        now = time.monotonic()
        for job in self._get("jobs"):
            status = job.get("status") or {}
            self.jobs[job["metadata"]["uid"]] = {
                "name": job["metadata"]["name"],
                "failed": status.get("failed", 0),
                "succeeded": status.get("succeeded", 0),
            }
        pods = [_pod(p) for p in self._get("pods") if "app" in p["metadata"].get("labels", {})]
        self.pods.append((now, pods))

    def jobs_since(self, before: set[str]) -> list[dict[str, Any]]:
        return [j for uid, j in self.jobs.items() if uid not in before]


def _pod(pod: dict[str, Any]) -> dict[str, Any]:
    status = pod.get("status") or {}
    ready = any(x["type"] == "Ready" and x["status"] == "True" for x in status.get("conditions") or [])
    return {
        "release": (pod["metadata"].get("annotations") or {}).get(RELEASE),
        "running": status.get("phase") == "Running",
        "ready": ready,
        "deleting": "deletionTimestamp" in pod["metadata"],
    }


@dataclass
class Way:
    """One Application: its repo, namespace and how to write a release."""

    name: str
    app: str
    namespace: str
    repo: Any
    watch: Watch

    def wait_new_pods(self, release: int, t0: float, timeout: float = SYNC_TIMEOUT) -> tuple[float, float]:
        """Seconds from t0 until every replica of `release` was Running, then Ready."""
        running = ready = None
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for t, rows in self.watch.pods[seen:]:
                new = [r for r in rows if r["release"] == str(release) and not r["deleting"]]
                if running is None and len([r for r in new if r["running"]]) >= 2:
                    running = t - t0
                if ready is None and len([r for r in new if r["ready"]]) >= 2:
                    ready = t - t0
            seen = len(self.watch.pods)
            if running is not None and ready is not None:
                return running, ready
            time.sleep(0.5)
        raise RuntimeError(f"{self.name}: release {release}'s pods not all Running/Ready after {timeout}s")


def _summary(argocd: Any, app: str) -> dict[str, Any]:
    from localcluster import argocd as argomod

    return argomod.summary(argocd.application(app))


def _wait_synced(argocd: Any, app: str, sha: str, timeout: float = SYNC_TIMEOUT) -> None:
    from localcluster.stack import wait_for

    def check() -> bool:
        argocd.check_alive()
        s = _summary(argocd, app)
        return bool(
            s["revision"] == sha
            and s["operation_revision"] == sha
            and s["operation"] == "Succeeded"
            and s["sync"] == "Synced"
            and s["health"] == "Healthy"
        )

    wait_for(check, timeout, f"{app} Synced and Healthy at {sha[:8]}", every=1)


def _sync_once(argocd: Any, app: str, sha: str) -> float:
    """`argocd app sync` of an unchanged commit: an operation set on the Application, waited for."""
    from localcluster.stack import wait_for

    before = ((argocd.application(app).get("status") or {}).get("operationState") or {}).get("startedAt")
    patch = {"operation": {"initiatedBy": {"username": "bench"}, "sync": {"revision": sha}}}
    t0 = time.monotonic()
    argocd.cluster.kubectl(
        "-n", "argocd", "patch", "application", app, "--type", "merge", "-p", json.dumps(patch)
    )

    def done() -> bool:
        op = (argocd.application(app).get("status") or {}).get("operationState") or {}
        return op.get("startedAt") != before and op.get("phase") in ("Succeeded", "Failed", "Error")

    wait_for(done, SYNC_TIMEOUT, f"{app}'s sync to finish", every=0.5)
    return time.monotonic() - t0


def _stamp(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _phases(argocd: Any, way: Way, wall0: float) -> str:
    """Where the time went: Argo CD's sync of the commit started and ended, the new ReplicaSet."""
    op = (argocd.application(way.app).get("status") or {}).get("operationState") or {}
    out = way.watch.cluster.kubectl("-n", way.namespace, "get", "replicasets", "-o", "json").stdout
    new_rs = [
        r["metadata"]["creationTimestamp"]
        for r in json.loads(out)["items"]
        if (r["spec"]["template"]["metadata"].get("annotations") or {}).get(RELEASE) == "2"
    ]
    parts = [f"sync started {_stamp(op['startedAt']) - wall0:.0f}"]
    if new_rs:
        parts.append(f"new ReplicaSet {_stamp(new_rs[0]) - wall0:.0f}")
    parts.append(f"sync finished {_stamp(op['finishedAt']) - wall0:.0f}")
    return ", ".join(parts)


@contextlib.contextmanager
def _stack(ctx: Context) -> Iterator[tuple[Any, Any, Any]]:
    """The real node with our images, PostgreSQL on the node's address, the chart, Argo CD."""
    from localcluster import argocd as argomod
    from localcluster import images, realstack
    from localcluster.cluster import running_cluster

    images.ensure_images(sys.stderr)
    argomod.ensure_built()
    with contextlib.ExitStack() as stack:
        print("[bench] starting the real node", file=sys.stderr, flush=True)
        cluster = stack.enter_context(running_cluster(progress=sys.stderr, node="kubelet"))
        pg = stack.enter_context(realstack.node_postgres())
        yield cluster, pg, stack


def run(ctx: Context) -> FigureResult:
    from localcluster import argocd as argomod
    from localcluster import realstack

    syncs = ctx.repetitions(10, 3)
    fail_window = 60.0 if ctx.quick else 120.0
    fig = FigureResult(
        "presync",
        "the operator against an Argo CD PreSync hook Job, one Argo CD, same run",
    )
    v = _versions()
    with _stack(ctx) as (cluster, pg, stack):
        op_ns = realstack.restricted_namespace(cluster, "bench-op")
        hook_ns = realstack.restricted_namespace(cluster, "bench-hook")
        cluster.kubectl("create", "namespace", realstack.OPERATOR_NAMESPACE)
        cluster.kubectl("label", "namespace", realstack.OPERATOR_NAMESPACE, *realstack.RESTRICTED)
        realstack.install_operator(cluster, realstack.OPERATOR_NAMESPACE, "dbm", watch=(op_ns,))
        argocd = stack.enter_context(argomod.running(cluster, ctx.scratch / "argocd"))
        ways: dict[str, Way] = {}
        for key, ns in (("operator", op_ns), ("hook", hook_ns)):
            db = pg.server().create_database(f"bench_{key}_{uuid.uuid4().hex[:6]}")
            # The Secret comes from outside Git (a secret manager) in both ways: a PreSync hook runs
            # before any wave, so it could not come from the same sync.
            realstack.apply(cluster, realstack.secret(ns, "shop-db", realstack.pod_database_url(pg, db)))
            repo = argomod.GitRepo(ctx.scratch / f"git-{key}").init()
            watch = stack.enter_context(Watch(cluster, ns))
            ways[key] = Way(key, f"bench-{key}-{uuid.uuid4().hex[:4]}", ns, repo, watch)

        def release(key: str, n: int, **kw: Any) -> dict[str, str]:
            way = ways[key]
            if key == "operator":
                return operator_files(way.namespace, n, kw["target"])
            return hook_files(way.namespace, n, kw.get("env", {}))

        # Release 1 (schema 1) in both; not measured.
        first = {
            "operator": ways["operator"].repo.commit("release 1", release("operator", 1, target=v[1])),
            "hook": ways["hook"].repo.commit("release 1", release("hook", 1, env={"HIDE": "2_"})),
        }
        for way in ways.values():
            argocd.create_application(way.app, way.repo, way.namespace)
        for key, way in ways.items():
            _wait_synced(argocd, way.app, first[key])
            way.wait_new_pods(1, time.monotonic())

        # Release 2: one migration and the app that needs it. One way at a time.
        heads: dict[str, str] = {}
        for key, way in ways.items():
            files = release(key, 2, target=v[2]) if key == "operator" else release(key, 2)
            t0, wall0 = time.monotonic(), time.time()
            heads[key] = way.repo.commit("release 2: schema 2", files)
            running, ready = way.wait_new_pods(2, t0)
            _wait_synced(argocd, way.app, heads[key])
            synced = time.monotonic() - t0
            fig.extra[f"{key}_phases"] = _phases(argocd, way, wall0)
            fig.add(f"{key}: commit → all new pods Running", "s", [running])
            fig.add(f"{key}: commit → all new pods Ready", "s", [ready])
            fig.extra[f"{key}_commit_to_synced_s"] = round(synced, 1)
        fig.ratio("hook / operator, commit → new pods Running", "hook: commit → all new pods Running",
                  "operator: commit → all new pods Running")  # fmt: skip

        # N syncs of the unchanged commit.
        for key, way in ways.items():
            before = set(way.watch.jobs)
            times = [_sync_once(argocd, way.app, heads[key]) for _ in range(syncs)]
            time.sleep(2)  # the last sample
            created = way.watch.jobs_since(before)
            fig.add(f"{key}: Jobs created over {syncs} no-change syncs", "count", [float(len(created))])
            fig.add(f"{key}: one no-change sync", "s", times)

        # A failing migration committed; watched for a fixed window while Argo CD retries.
        for key, way in ways.items():
            files = (
                release(key, 3, target="models:9_20990101000000_not_in_the_image")
                if key == "operator"
                else release(key, 3, env={"BREAK": "1"})
            )
            before = set(way.watch.jobs)
            mark = len(way.watch.pods)
            t0 = time.monotonic()
            sha = way.repo.commit("release 3: a failing migration", files)
            time.sleep(fail_window)
            s = _summary(argocd, way.app)
            window = way.watch.pods[mark:]
            old_served = all(any(r["ready"] and r["release"] == "2" for r in rows) for _, rows in window)
            new_ran = any(r["running"] for _, rows in window for r in rows if r["release"] == "3")
            created = way.watch.jobs_since(before)
            failed = sum(1 for j in created if j["failed"])
            fig.add(f"{key}: Jobs created in {fail_window:.0f} s after a failing commit", "count",
                    [float(len(created))])  # fmt: skip
            message = (s["message"] or "").replace("|", "/").replace("\n", " ")[:160]
            fig.notes.append(
                f"{key}, failing migration ({time.monotonic() - t0:.0f} s after the commit): Argo CD "
                f"{s['sync']}/{s['health']}, operation {s['operation']} at "
                f"{'the failing commit' if s['operation_revision'] == sha else 'an older commit'}"
                f" ({message!r}); old pods served in every sample: {'yes' if old_served else 'NO'}; "
                f"a new pod ever Running: {'YES' if new_ran else 'no'}; Jobs created {len(created)}, "
                f"failed {failed}"
            )
        for key in ways:
            fig.notes.append(
                f"{key}, release 2, seconds after the push (API timestamps, whole seconds): "
                f"{fig.extra[f'{key}_phases']}"
            )
            fig.notes.append(
                f"{key}: commit → Synced and Healthy for release 2: "
                f"{fig.extra[f'{key}_commit_to_synced_s']} s"
            )
        fig.notes.append(
            f"one run, n = 1 for the upgrade (a database is upgraded once); no-change syncs median "
            f"operator {statistics.median(fig.row('operator: one no-change sync').stat.samples):.1f} s, "
            f"hook {statistics.median(fig.row('hook: one no-change sync').stat.samples):.1f} s"
        )
        if not ctx.options.get("keep_scratch"):
            shutil.rmtree(ctx.scratch / "argocd", ignore_errors=True)
    return fig
