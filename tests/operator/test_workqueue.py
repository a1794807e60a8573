"""The work queue between kopf's events and the passes: dedup, one worker per key, the last event
always followed by a pass, bounded concurrency; and the controller's use of it."""

from __future__ import annotations

import asyncio

import pytest

from dbmigrate_operator.controller import Controller
from dbmigrate_operator.settings import Settings
from dbmigrate_operator.workqueue import WorkQueue
from tests.operator.builders import make_cr
from tests.operator.test_ha import FakeKube, Switch, controller_on


async def test_a_key_waits_once_however_often_it_is_added() -> None:
    q: WorkQueue[str] = WorkQueue()
    for key in ("a", "b", "a", "a", "c", "b"):
        q.add(key)
    assert len(q) == 3
    assert [await q.get() for _ in range(3)] == ["a", "b", "c"]  # first-come order kept


async def test_a_key_added_while_processed_goes_round_once_more_after_it() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    key = await q.get()
    q.add("a")  # an event during the pass
    q.add("a")
    assert len(q) == 0  # not handed to a second worker while the first one works on it
    q.done(key)
    assert len(q) == 1
    assert await q.get() == "a"
    q.done("a")
    assert len(q) == 0
    assert q.processing == 0


async def test_discard_drops_a_waiting_key_but_not_a_running_pass() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    q.add("b")
    q.discard("a")
    assert await q.get() == "b"
    q.add("b")  # re-queued while processed...
    q.discard("b")  # ...then deleted: no further pass
    q.done("b")
    assert len(q) == 0


async def test_get_waits_for_a_key() -> None:
    q: WorkQueue[str] = WorkQueue()
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0.01)
    assert not getter.done()
    q.add("x")
    assert await asyncio.wait_for(getter, 1) == "x"


async def _run_workers(controller: Controller, passes: list[tuple[str, str]], hold: asyncio.Event) -> int:
    """Start the controller's workers with a pass that records itself and waits for ``hold``;
    returns the most passes seen running at once."""
    running = 0
    most = 0

    async def fake_reconcile(namespace: str, name: str) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        passes.append((namespace, name))
        await hold.wait()
        running -= 1

    controller.reconcile = fake_reconcile  # type: ignore[method-assign]
    controller.start_workers()
    await asyncio.sleep(0.05)
    hold.set()
    await asyncio.sleep(0.05)
    await controller.stop()
    return most


async def test_the_controller_runs_at_most_workers_passes_at_once() -> None:
    controller = Controller(Settings(workers=3))
    controller.leadership = Switch(True)
    for i in range(50):
        for _ in range(4):  # several events per CR
            controller.enqueue("ns", f"cr-{i}")
    passes: list[tuple[str, str]] = []
    most = await _run_workers(controller, passes, asyncio.Event())
    assert most == 3
    assert sorted(passes) == sorted(("ns", f"cr-{i}") for i in range(50))  # one pass per CR


async def test_a_standby_queues_nothing_and_a_deleted_cr_leaves_the_queue() -> None:
    controller = Controller(Settings(workers=2))
    controller.leadership = Switch(False)
    controller.enqueue("ns", "a")
    assert len(controller.queue) == 0
    controller.leadership = Switch(True)
    controller.enqueue("ns", "a")
    controller.enqueue("ns", "b")
    controller.forget("ns", "a")
    passes: list[tuple[str, str]] = []
    await _run_workers(controller, passes, asyncio.Event())
    assert passes == [("ns", "b")]


async def test_a_recheck_goes_through_the_queue() -> None:
    controller = controller_on(FakeKube(make_cr(), [], []))
    controller.leadership = Switch(True)
    controller._recheck("shop", "shop-db", 0.01)
    await asyncio.sleep(0.05)
    assert len(controller.queue) == 1


async def test_a_pass_in_a_worker_posts_its_events() -> None:
    """Passes run outside kopf's handler tasks (where kopf's own poster works): their Events still
    reach the API, about the DatabaseMigration."""
    kube = FakeKube(make_cr(), [], [])
    controller = controller_on(kube)
    controller.leadership = Switch(True)
    controller.start_workers()
    controller.enqueue("shop", "shop-db")
    for _ in range(100):
        await asyncio.sleep(0.01)
        if kube.events:
            break
    controller.kube = None  # no API client to close
    await controller.stop()
    (event,) = kube.events
    assert event["reason"] == "RunStarted"
    assert event["involvedObject"]["kind"] == "DatabaseMigration"
    assert event["involvedObject"]["name"] == "shop-db"
    assert event["metadata"]["namespace"] == "shop"


async def test_an_event_that_cannot_be_posted_does_not_fail_the_pass(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class NoEvents(FakeKube):
        def create_event(self, namespace: str, event: dict[str, object]) -> None:
            raise ConnectionResetError("the API server went away")

    kube = NoEvents(make_cr(), [], [])
    controller = controller_on(kube)
    controller.leadership = Switch(True)
    await controller.reconcile("shop", "shop-db")
    # the Job is there (and the finalizer that holds a deletion while it runs), its status said so
    assert [w for w, _ in kube.writes] == ["status", "finalizers", "create"]
    assert "cannot post Event RunStarted migration=shop/shop-db" in caplog.text
    assert "reconcile failed" not in caplog.text
