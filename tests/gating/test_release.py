"""The release pass against a fake API: conflicts, Event de-duplication, owner chain, sweep."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from dbmigrate_operator.constants import SCHEDULING_GATE
from dbmigrate_operator.gating.kube import Conflict
from dbmigrate_operator.gating.release import Releaser, decide, fingerprint, group_by_migration
from tests.gating.harness import gates_of, make_pod, migration_body

RS_OWNER = {
    "apiVersion": "apps/v1",
    "kind": "ReplicaSet",
    "name": "web-1a",
    "uid": "rs-1",
    "controller": True,
}
DEPLOY_OWNER = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "name": "web",
    "uid": "d-1",
    "controller": True,
}


class FakeApi:
    """In-memory GatingApi: applies JSON patches like the API server, 422 on a failed `test` op."""

    def __init__(self, pods: list[dict[str, Any]], migration: dict[str, Any] | None) -> None:
        self.pods = {p["metadata"]["name"]: p for p in pods}
        self.migration = migration
        self.events: list[dict[str, Any]] = []
        self.patches: list[tuple[str, list[dict[str, Any]]]] = []
        self.before_patch: list[Any] = []  # callables run before the next patch (simulated races)
        self.lists = 0  # listings of waiting pods (each one an API request)

    def get_migration(self, namespace: str, name: str, timeout: float | None = None) -> dict[str, Any] | None:
        return copy.deepcopy(self.migration)

    def list_waiting_pods(
        self, namespace: str | None, migration: str | None, *, cached: bool = False
    ) -> list[dict[str, Any]]:
        self.lists += 1
        return [copy.deepcopy(p) for p in self.pods.values()]  # ignores selectors, like kmock

    def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.pods.get(name))

    def patch_pod(self, namespace: str, name: str, patch: list[dict[str, Any]]) -> None:
        import jsonpatch

        if self.before_patch:
            self.before_patch.pop(0)()
        self.patches.append((name, patch))
        try:
            self.pods[name] = jsonpatch.apply_patch(self.pods[name], patch)
        except jsonpatch.JsonPatchTestFailed:
            raise Conflict("422") from None

    def get_replicaset(self, namespace: str, name: str) -> dict[str, Any] | None:
        return {"metadata": {"name": name, "namespace": namespace, "ownerReferences": [DEPLOY_OWNER]}}

    def create_event(self, namespace: str, event: dict[str, Any]) -> None:
        self.events.append(event)


async def changed(releaser: Releaser, api: FakeApi, body: dict[str, Any] | None) -> None:
    """The DatabaseMigration became `body` (None: deleted) and its watch event arrives."""
    api.migration = copy.deepcopy(body)
    releaser.on_migration_event("shop", "shop-db", body)
    await releaser.drain()  # the queued pass, in this task


def about(api: FakeApi, kind: str) -> list[dict[str, Any]]:
    return [e for e in api.events if e["involvedObject"]["kind"] == kind]


async def test_a_conflicting_patch_is_retried_on_a_fresh_read() -> None:
    api = FakeApi([make_pod("web-1", gates=("a", SCHEDULING_GATE))], migration_body(ready=True))

    def reorder() -> None:  # another controller rewrites the list between our read and our write
        api.pods["web-1"]["spec"]["schedulingGates"] = [{"name": SCHEDULING_GATE}, {"name": "b"}]

    api.before_patch.append(reorder)
    assert await Releaser(api).reconcile("shop", "shop-db")
    assert gates_of(api.pods["web-1"]) == ["b"]
    assert len(api.patches) == 2


async def test_waiting_is_announced_once_per_message() -> None:
    pods = [make_pod(f"web-{i}", gates=(SCHEDULING_GATE,), owner=RS_OWNER) for i in range(3)]
    api = FakeApi(pods, migration_body(ready=False))
    releaser = Releaser(api)
    await releaser.reconcile("shop", "shop-db")
    await releaser.reconcile("shop", "shop-db")
    assert len(about(api, "Pod")) == 3
    assert len(about(api, "ReplicaSet")) == 1
    assert len(about(api, "Deployment")) == 1
    assert all(e["reason"] == "WaitingForMigration" for e in api.events)

    failed = migration_body(ready=False)
    failed["status"]["phase"] = "Failed"
    api.migration = failed
    await releaser.reconcile("shop", "shop-db")
    assert [e["type"] for e in about(api, "Deployment")] == ["Normal", "Warning"]


async def test_release_says_so_and_touches_nothing_else() -> None:
    waiting = make_pod("web-1", gates=(SCHEDULING_GATE,), owner=RS_OWNER)
    other = make_pod("other-1", wait_for="other-db", gates=(SCHEDULING_GATE,))
    api = FakeApi([waiting, other], migration_body(ready=True))
    assert await Releaser(api).reconcile("shop", "shop-db")
    assert gates_of(api.pods["web-1"]) == []
    assert gates_of(api.pods["other-1"]) == [SCHEDULING_GATE]
    assert {e["reason"] for e in api.events} == {"MigrationSatisfied"}
    assert [e["involvedObject"]["name"] for e in about(api, "Pod")] == ["web-1"]


async def test_the_sweep_groups_pods_by_migration() -> None:
    pods = [
        make_pod("a-1", wait_for="a-db", gates=(SCHEDULING_GATE,)),
        make_pod("b-1", wait_for="b-db", gates=(SCHEDULING_GATE,)),
        make_pod("c-1", wait_for="a-db"),  # not gated: ignored
    ]
    assert sorted(group_by_migration(pods)) == [("shop", "a-db"), ("shop", "b-db")]
    api = FakeApi(pods, migration_body(ready=True))
    await Releaser(api).sweep()
    assert gates_of(api.pods["a-1"]) == gates_of(api.pods["b-1"]) == []


async def test_a_migration_event_with_unchanged_inputs_is_skipped() -> None:
    api = FakeApi([make_pod("web-1", gates=(SCHEDULING_GATE,))], migration_body(ready=False))
    releaser = Releaser(api)
    body = migration_body(ready=False)
    body["status"]["phase"] = "Failed"
    body["status"]["conditions"].append({"type": "Stalled", "status": "True", "reason": "MigrationFailed"})
    await changed(releaser, api, body)
    assert [e["reason"] for e in about(api, "Pod")] == ["MigrationFailed"]  # a failure is said at once
    api.pods["web-1"]["metadata"]["uid"] = "another"  # would be announced again if a pass ran
    await changed(releaser, api, copy.deepcopy(body))
    assert len(api.events) == 1
    await changed(releaser, api, migration_body(ready=True))
    assert gates_of(api.pods["web-1"]) == []


async def test_a_run_under_way_or_a_deleted_migration_costs_no_pod_listing() -> None:
    """Nothing can be released then: the pods stay held, and the sweep refreshes their Events."""
    api = FakeApi([make_pod("web-1", gates=(SCHEDULING_GATE,))], migration_body(ready=False))
    releaser = Releaser(api)
    pending = migration_body(ready=False)
    running = copy.deepcopy(pending)
    running["status"]["phase"] = "Running"
    for body in (pending, running, None):
        await changed(releaser, api, body)
    assert api.lists == 0
    assert api.events == []
    await changed(releaser, api, migration_body(ready=True))
    assert api.lists == 1
    assert gates_of(api.pods["web-1"]) == []


def test_decide_skips_pods_being_deleted() -> None:
    pod = make_pod("web-1", gates=(SCHEDULING_GATE,))
    pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert decide([pod], "shop-db", migration_body(ready=True)) == []


def test_fingerprint_ignores_irrelevant_status_changes() -> None:
    a, b = migration_body(ready=False), migration_body(ready=False)
    b["status"]["lastRun"] = {"startedAt": "2026-01-01T00:00:00Z"}
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint(migration_body(ready=True))
    assert fingerprint(None) != fingerprint(a)


class _RecordingCore:
    """CoreV1Api stand-in: records the list calls' arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _answer(self) -> Any:
        return type("Response", (), {"data": b'{"items": []}'})()

    def list_pod_for_all_namespaces(self, **kwargs: Any) -> Any:
        self.calls.append(("*", kwargs))
        return self._answer()

    def list_namespaced_pod(self, namespace: str, **kwargs: Any) -> Any:
        self.calls.append((namespace, kwargs))
        return self._answer()


async def test_the_sweep_lists_opted_in_pods_from_the_watch_cache() -> None:
    """Every 30 s over the whole cluster: label-selected, and served by the API server's cache, not etcd."""
    import kubernetes.client

    from dbmigrate_operator.constants import WAIT_FOR_LABEL
    from dbmigrate_operator.gating.kube import KubeApi

    api = KubeApi(kubernetes.client.ApiClient())
    core = _RecordingCore()
    api.raw = core  # type: ignore[assignment]
    await Releaser(api).sweep()
    await Releaser(api, namespaces=("shop",)).sweep()
    await Releaser(api).reconcile("shop", "shop-db")
    (everywhere, one_namespace, one_migration) = core.calls
    for where, kwargs in (everywhere, one_namespace):
        assert kwargs["label_selector"] == WAIT_FOR_LABEL, where
        assert kwargs["resource_version"] == "0", where
    assert one_namespace[0] == "shop"
    # a pass for one DatabaseMigration (its status just changed) reads the latest state
    assert one_migration[1]["label_selector"] == f"{WAIT_FOR_LABEL}=shop-db"
    assert "resource_version" not in one_migration[1]


async def test_the_sweep_reports_the_pods_it_leaves_held() -> None:
    from prometheus_client import REGISTRY

    pods = [
        make_pod("a-1", wait_for="a-db", gates=(SCHEDULING_GATE,)),
        make_pod("a-2", wait_for="a-db", gates=(SCHEDULING_GATE,)),
    ]
    await Releaser(FakeApi(pods, migration_body(ready=False))).sweep()
    assert REGISTRY.get_sample_value("dbmigrate_gated_pods") == 2
    await Releaser(FakeApi(pods, migration_body(ready=True))).sweep()  # released: none left
    assert REGISTRY.get_sample_value("dbmigrate_gated_pods") == 0
    assert REGISTRY.get_sample_value("dbmigrate_gated_pod_oldest_wait_seconds") == 0


def test_fingerprint_sees_a_grown_alembic_ancestry() -> None:
    """Alembic pins are decided by status.ancestry: a change there alone must trigger a release pass."""
    a = migration_body(ready=True)
    b = migration_body(ready=True)
    b["status"]["ancestry"] = {"heads": ["ae1027a6acf6"], "packed": "AYEBrhAnpq/2", "known": 1, "omitted": 0}
    assert fingerprint(a) != fingerprint(b)


# --- the release race (issue 18 item 1): a pod gated against a newer generation than a pass read ---


class InterleavingApi(FakeApi):
    """A FakeApi that runs `between` right after the first read of a pass returns: the moment where,
    in a cluster, the spec is edited and the webhook admits a pod gated against the new generation."""

    def __init__(self, pods: list[dict[str, Any]], migration: dict[str, Any] | None) -> None:
        super().__init__(pods, migration)
        self.between: Callable[[], None] | None = None
        self.reads: list[str] = []

    def _read(self, what: str) -> None:
        self.reads.append(what)
        if self.between is not None:
            step, self.between = self.between, None
            step()

    def get_migration(self, namespace: str, name: str, timeout: float | None = None) -> dict[str, Any] | None:
        got = super().get_migration(namespace, name, timeout)
        self._read("migration")
        return got

    def list_waiting_pods(
        self, namespace: str | None, migration: str | None, *, cached: bool = False
    ) -> list[dict[str, Any]]:
        got = super().list_waiting_pods(namespace, migration, cached=cached)
        self._read("pods")
        return got


def generation_2_gates_a_pod(api: FakeApi) -> Callable[[], None]:
    """Generation 2 is applied to the spec (its run has not even started) and the webhook, reading
    it, gates a new pod: that pod must wait for generation 2."""

    def step() -> None:
        edited = migration_body(ready=True, generation=1)
        edited["metadata"]["generation"] = 2  # status still says Ready for generation 1
        api.migration = edited
        api.pods["web-2"] = make_pod("web-2", gates=(SCHEDULING_GATE,))

    return step


async def test_an_event_body_older_than_a_gated_pod_releases_nothing() -> None:
    """The event carries generation 1 Ready; by the time the pass runs, generation 2 was applied and
    a pod was gated against it. Deciding with the event's body released that pod before generation 2
    ran; the pass judges with the object read after listing the pods."""
    api = InterleavingApi([], migration_body(ready=True, generation=1))
    generation_2_gates_a_pod(api)()  # happened after the event's body was read by the watch
    releaser = Releaser(api)
    releaser.on_migration_event("shop", "shop-db", migration_body(ready=True, generation=1))
    await releaser.drain()
    assert gates_of(api.pods["web-2"]) == [SCHEDULING_GATE]
    assert api.reads == ["pods", "migration"]
    assert [e["reason"] for e in about(api, "Pod")] == ["WaitingForMigration"]

    api.migration = migration_body(ready=True, generation=2)  # generation 2 ran
    await changed(releaser, api, migration_body(ready=True, generation=2))
    assert gates_of(api.pods["web-2"]) == []


async def test_a_nudge_reads_the_migration_after_the_pods() -> None:
    """A nudge's pass: the pod appears (gated against generation 2) between the pass's two reads."""
    api = InterleavingApi([], migration_body(ready=True, generation=1))
    api.between = generation_2_gates_a_pod(api)
    releaser = Releaser(api, nudge_delay=0)
    releaser.nudge("shop", "shop-db")
    await releaser.run_one()  # waits for the nudge's key, then runs its pass
    assert gates_of(api.pods["web-2"]) == [SCHEDULING_GATE]
    assert api.reads[0] == "pods"

    await releaser.reconcile("shop", "shop-db")  # the webhook's own nudge for web-2: still held
    assert gates_of(api.pods["web-2"]) == [SCHEDULING_GATE]
    assert api.reads[-2:] == ["pods", "migration"]


async def test_the_sweep_reads_each_migration_after_the_pods() -> None:
    api = InterleavingApi([], migration_body(ready=True, generation=1))
    api.between = generation_2_gates_a_pod(api)
    await Releaser(api).sweep()
    assert gates_of(api.pods["web-2"]) == [SCHEDULING_GATE]
    await Releaser(api).sweep()  # the next sweep sees web-2 and the object read after it
    assert gates_of(api.pods["web-2"]) == [SCHEDULING_GATE]
    assert api.reads == ["pods", "pods", "migration"]


async def test_a_pin_waits_for_the_run_against_a_new_database() -> None:
    """spec.database changed: the versions in status are the old database's, so a pinned pod waits
    (the issue's new ReplicaSet pinned to models:2 ran against an empty database)."""
    applied = [{"app": "models", "version": "2_20260101_x"}]
    moved = migration_body(ready=True, applied=applied)
    moved["metadata"]["generation"] = 2
    moved["spec"]["database"] = {"secretRef": {"name": "shop-db-new"}}
    api = FakeApi([make_pod("web-1", version="models:2_20260101_x", gates=(SCHEDULING_GATE,))], moved)
    assert await Releaser(api).reconcile("shop", "shop-db")
    assert gates_of(api.pods["web-1"]) == [SCHEDULING_GATE]
    assert "spec.database or spec.tool changed" in about(api, "Pod")[0]["message"]


async def test_a_pass_asks_for_a_check_of_the_rollouts_whose_pin_waits_only_for_it() -> None:
    """A pinned pod whose version is applied but whose rollout is not verified against the recorded
    database stays gated, and the pass tells the controller which rollouts to check (request_checks)."""
    asked: list[tuple[str, str, frozenset[str]]] = []
    body = migration_body(ready=True, applied=[{"app": "models", "version": "1_a"}])
    body["status"]["database"]["fingerprint"] = "ab" * 8
    body["status"]["databaseCheck"] = {"verified": [{"rollout": "old", "fingerprint": "ab" * 8}]}
    pods = [
        make_pod(f"web-{h}", version="models:1_a", gates=(SCHEDULING_GATE,)) for h in ("new", "old", "new2")
    ]
    for pod, h in zip(pods, ("new", "old", "new"), strict=True):
        pod["metadata"]["labels"]["pod-template-hash"] = h
    api = FakeApi(pods, body)
    releaser = Releaser(api, request_checks=lambda ns, name, rollouts: asked.append((ns, name, rollouts)))
    assert await releaser.reconcile("shop", "shop-db")
    assert asked == [("shop", "shop-db", frozenset({"new"}))]
    assert gates_of(api.pods["web-new"]) == [SCHEDULING_GATE]
    assert gates_of(api.pods["web-old"]) == [], "a verified rollout starts at once"
