"""The queue between what asks for a pass and the pass (client-go's workqueue semantics): reconcile
passes (controller.py) and gate-release passes (gating/release.py) each go through one.

Why: kopf runs a handler inside the per-object worker that received the event, so a handler that
awaits its whole pass keeps that event's body (and every event queued behind it) alive until the pass
ends. With 1,000 DatabaseMigrations created at once that was 1,000 passes in flight, each holding its
CR, Jobs, Pods and plan while waiting for the thread pool: the operator's memory peak. The handlers
now only put a key here and return; a fixed number of workers take keys out.

A key waits in the queue at most once however many events name it, and is never processed by two
workers at once; a key added while it is being processed goes round once more after that pass, so
the last event is always followed by a pass that starts after it (what a level-triggered reconcile
needs). Keys only: the state a pass decides from is read when it starts, never carried in here.
Only the replica that may write (``admit``, the leadership check) queues or starts a pass: a
standby's queue stays empty, and a key queued before the Lease was lost is dropped when taken out.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    """A FIFO of distinct keys with a "being processed" set; asyncio only (one event loop)."""

    def __init__(self, admit: Callable[[], bool] | None = None) -> None:
        self._admit = admit or (lambda: True)  # may this replica run passes now (leadership)?
        self._queue: deque[K] = deque()
        self._dirty: set[K] = set()  # waiting for a pass (in the queue, or re-queued when done)
        self._processing: set[K] = set()
        self._ready = asyncio.Event()

    def add(self, key: K) -> None:
        if key in self._dirty or not self._admit():
            return
        self._dirty.add(key)
        if key in self._processing:
            return  # done() puts it back
        self._queue.append(key)
        self._ready.set()

    async def get(self) -> K:
        """The oldest waiting key; the caller must call :meth:`done` with it once its pass is over."""
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        key = self._queue.popleft()
        self._dirty.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.append(key)
            self._ready.set()

    async def run_one(self, run: Callable[[K], Awaitable[None]]) -> None:
        """Take the oldest key (waiting for one), run its pass unless this replica may no longer
        write, then mark it done: what each worker does in a loop, and tests one step at a time."""
        key = await self.get()
        try:
            if self._admit():
                await run(key)
        finally:
            self.done(key)

    async def serve(self, run: Callable[[K], Awaitable[None]]) -> None:
        """A worker: passes, one key at a time, until cancelled."""
        while True:
            await self.run_one(run)

    def discard(self, key: K) -> None:
        """Forget a waiting key (its object is gone); a pass already running finishes."""
        if key in self._dirty and key not in self._processing:
            self._queue.remove(key)
        self._dirty.discard(key)

    def __len__(self) -> int:
        """Keys waiting (not those being processed)."""
        return len(self._queue)

    @property
    def processing(self) -> int:
        return len(self._processing)
