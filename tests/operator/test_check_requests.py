"""check_requests.Wanted: the controller's memory of which rollouts the release pass said wait for a
database check. A change queues a pass; a set nobody repeats is forgotten (its pods are gone)."""

from __future__ import annotations

import pytest

from dbmigrate_operator import check_requests
from dbmigrate_operator.check_requests import STALE_SECONDS, Wanted


def test_a_change_queues_a_pass_and_a_repeat_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    queued: list[tuple[str, str]] = []
    wanted = Wanted(lambda ns, name: queued.append((ns, name)))
    wanted.say("ns", "shop", frozenset({"abc"}))
    wanted.say("ns", "shop", frozenset({"abc"}))  # the sweep repeats it
    assert queued == [("ns", "shop")]
    assert wanted.now(("ns", "shop")) == {"abc"}
    wanted.say("ns", "shop", frozenset())  # no rollout waits any more
    assert queued == [("ns", "shop")] * 2
    assert wanted.now(("ns", "shop")) == frozenset()


def test_a_set_nobody_repeats_goes_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(check_requests.time, "monotonic", lambda: clock[0])
    wanted = Wanted(lambda ns, name: None)
    wanted.say("ns", "shop", frozenset({"abc"}))
    clock[0] += STALE_SECONDS - 1
    assert wanted.now(("ns", "shop")) == {"abc"}
    clock[0] += 2
    assert wanted.now(("ns", "shop")) == frozenset()


def test_forget_drops_the_resource() -> None:
    wanted = Wanted(lambda ns, name: None)
    wanted.say("ns", "shop", frozenset({"abc"}))
    wanted.forget(("ns", "shop"))
    assert wanted.now(("ns", "shop")) == frozenset()
