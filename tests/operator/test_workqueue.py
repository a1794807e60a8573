"""The work queue between kopf's events and the passes: dedup, one worker per key, the last event
always followed by a pass, bounded concurrency; and its two users, the controller (reconcile passes)
and the releaser (gate-release passes), driven through it with a scripted interleaving: each pass
says when it started and ends only when the test lets it, so no sleep decides the order."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Any

import pytest

from dbmigrate_operator.controller import Controller
from dbmigrate_operator.gating import release
from dbmigrate_operator.gating.release import SWEEP, Releaser, fingerprint
from dbmigrate_operator.gating.runtime import sweep_forever
from dbmigrate_operator.settings import Settings
from dbmigrate_operator.workqueue import WorkQueue
from tests.gating.harness import migration_body
from tests.gating.test_release import FakeApi
from tests.operator.builders import make_cr
from tests.operator.test_ha import FakeKube, Switch, controller_on


class Passes:
    """Scripted passes: each records its key when it starts and waits until the test finishes it."""

    def __init__(self) -> None:
        self.log: list[Hashable] = []
        self.running: set[Hashable] = set()
        self.overlaps: list[Hashable] = []  # a key that started while a pass of it was running
        self._ends: dict[Hashable, asyncio.Event] = {}
        self._started = asyncio.Event()

    async def run(self, key: Hashable) -> None:
        if key in self.running:
            self.overlaps.append(key)
        self.running.add(key)
        self.log.append(key)
        end = self._ends[key] = asyncio.Event()
        self._started.set()
        await end.wait()
        self.running.discard(key)

    async def until(self, count: int) -> None:
        """Wait until ``count`` passes have started (an event, not a timing)."""
        while len(self.log) < count:
            self._started.clear()
            await self._started.wait()

    def finish(self, key: Hashable) -> None:
        self._ends[key].set()


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


async def test_only_an_admitted_replica_queues_or_runs_a_pass() -> None:
    """The leadership check lives in the queue: a standby queues nothing, and a key queued before
    the Lease was lost is taken out without its pass."""
    active = [False]
    q: WorkQueue[str] = WorkQueue(admit=lambda: active[0])
    q.add("a")
    assert len(q) == 0
    active[0] = True
    q.add("a")
    q.add("b")
    active[0] = False
    ran: list[str] = []

    async def run(key: str) -> None:
        ran.append(key)

    await q.run_one(run)
    active[0] = True
    await q.run_one(run)
    assert ran == ["b"]
    assert len(q) == 0
    assert q.processing == 0


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


async def test_a_cr_is_never_in_two_passes_and_one_asked_for_during_its_pass_runs_once_more() -> None:
    """Two idle workers, events for one CR during its pass: the other worker never takes it; the
    events collapse into exactly one more pass, after the first (the controller has no lock of its
    own: the queue is what serialises a CR)."""
    controller = Controller(Settings(workers=2))
    controller.leadership = Switch(True)
    passes = Passes()

    async def reconcile(namespace: str, name: str) -> None:
        await passes.run((namespace, name))

    controller._reconcile = reconcile  # type: ignore[method-assign]  # the real reconcile() wraps it
    controller.start_workers()
    a, b, c = ("ns", "a"), ("ns", "b"), ("ns", "c")
    controller.enqueue(*a)
    await passes.until(1)
    for _ in range(3):
        controller.enqueue(*a)  # events during a's pass
    controller.enqueue(*b)
    await passes.until(2)  # the idle worker took b, the key behind a: a was not handed out twice
    assert passes.log == [a, b]
    passes.finish(a)
    await passes.until(3)  # a goes round once more, after its first pass ended
    assert passes.log == [a, b, a]
    controller.enqueue(*c)
    passes.finish(a)
    await passes.until(4)  # the worker that ran a took c: a was not queued a third time
    assert passes.log == [a, b, a, c]
    assert len(controller.queue) == 0
    assert passes.overlaps == []
    await controller.stop()


async def _release_queue(workers: int = 2) -> tuple[Releaser, Passes]:
    """A releaser whose passes (per DatabaseMigration, and the sweep) are scripted, workers running."""
    releaser = Releaser(FakeApi([], None), workers=workers, leadership=Switch(True))
    passes = Passes()

    async def one(namespace: str, name: str) -> tuple[bool, Any]:
        await passes.run((namespace, name))
        return True, release._NOT_READ  # clean, no pod waited: the event's digest is remembered

    async def sweep() -> None:
        await passes.run(SWEEP)

    releaser._pass = one  # type: ignore[method-assign]
    releaser.sweep = sweep  # type: ignore[method-assign]
    releaser.start()
    return releaser, passes


async def test_a_release_pass_is_never_run_twice_at_once_and_goes_round_once_more() -> None:
    """Gate release goes through the same queue: an event and a nudge during a migration's pass do
    not start a second pass beside it (the sweep, another key, does run), and are followed by exactly
    one more pass, which remembers the newest event's fingerprint."""
    releaser, passes = await _release_queue()
    key = ("shop", "shop-db")
    generation_1, generation_2 = (
        migration_body(ready=True, generation=1),
        migration_body(ready=True, generation=2),
    )
    releaser.on_migration_event(*key, generation_1)
    await passes.until(1)
    releaser.on_migration_event(*key, generation_2)  # during the pass
    releaser.enqueue(key)  # a nudge's key: the same pass
    releaser.request_sweep()
    await passes.until(2)  # the idle worker took the sweep, not the migration again
    assert passes.log == [key, SWEEP]
    passes.finish(key)
    await passes.until(3)
    assert passes.log == [key, SWEEP, key]
    passes.finish(key)
    passes.finish(SWEEP)
    releaser.request_sweep()
    await passes.until(4)  # the migration was not queued a third time: the sweep is next
    assert passes.log == [key, SWEEP, key, SWEEP]
    assert passes.overlaps == []
    assert releaser._fingerprints[key] == fingerprint(generation_2)
    releaser.on_migration_event(*key, generation_2)  # nothing new: no pass queued
    assert len(releaser.queue) == 0
    await releaser.cancel()


async def test_nudges_and_the_sweep_loop_queue_passes_instead_of_running_them() -> None:
    """The webhook's nudge and the periodic sweep only put a key in the release queue; the workers run
    the passes (here one step at a time: no worker started)."""
    releaser = Releaser(FakeApi([], None), nudge_delay=0, leadership=Switch(True))
    ran: list[Any] = []

    async def one(namespace: str, name: str) -> tuple[bool, Any]:
        ran.append((namespace, name))
        return True, release._NOT_READ

    async def sweep() -> None:
        ran.append(SWEEP)

    releaser._pass = one  # type: ignore[method-assign]
    releaser.sweep = sweep  # type: ignore[method-assign]
    releaser.nudge("shop", "shop-db")
    releaser.nudge("shop", "shop-db")  # coalesced with the pending one
    assert ran == []
    await releaser.run_one()  # waits for the nudge's key
    assert ran == [("shop", "shop-db")]
    takeover = asyncio.Event()
    loop = asyncio.create_task(sweep_forever(releaser, 3600, takeover))
    await releaser.run_one()  # the loop's first sweep
    takeover.set()  # became active: a sweep at once, not after the interval
    await releaser.run_one()
    assert ran == [("shop", "shop-db"), SWEEP, SWEEP]
    assert len(releaser.queue) == 0
    loop.cancel()
    await asyncio.gather(loop, return_exceptions=True)
    await releaser.cancel()
