"""A background sampler for stories and bench figures that must show an order after the fact (which
pod ran when, which Jobs ever existed): ``sample()`` runs every ``every`` seconds in a thread for as
long as the ``with`` block lasts. A failed sample is a missing sample, never a failed story."""

from __future__ import annotations

import contextlib
import threading


class Sampler:
    every = 1.0  # seconds between samples

    def sample(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Sampler:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.sample()
            self._stop.wait(self.every)
