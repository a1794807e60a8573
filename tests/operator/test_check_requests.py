"""check_requests.Wanted: the controller's memory of which rollouts the release pass said wait for a
database check. A change queues a pass; a set nobody repeats is forgotten (its pods are gone). And how
the release pass reaches it: wired at startup through the operator run's memo, never a module's state."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

import dbmigrate_operator
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


def test_a_relay_built_before_the_controller_offered_reaches_it_once_offered() -> None:
    """kopf runs gating's startup handler (which builds the releaser with the relay) and the
    controller's (which offers its Wanted) in either order; a sweep may even run in between."""
    memo: dict[str, Any] = {}
    request = check_requests.relay(memo)
    request("ns", "shop", frozenset({"abc"}))  # nobody to tell yet: dropped, the next pass repeats it
    queued: list[tuple[str, str]] = []
    wanted = Wanted(lambda ns, name: queued.append((ns, name)))
    check_requests.offer(memo, wanted.say)
    request("ns", "shop", frozenset({"abc"}))
    assert queued == [("ns", "shop")]
    assert wanted.now(("ns", "shop")) == {"abc"}


def test_two_operator_runs_do_not_share_a_controller() -> None:
    """Each run (each in-process test) has its own memo: nothing is left behind in the module."""
    first: list[str] = []
    second: list[str] = []
    memo_a: dict[str, Any] = {}
    memo_b: dict[str, Any] = {}
    check_requests.offer(memo_a, lambda ns, name, rollouts: first.append(name))
    check_requests.offer(memo_b, lambda ns, name, rollouts: second.append(name))
    check_requests.relay(memo_a)("ns", "a", frozenset({"x"}))
    check_requests.relay(memo_b)("ns", "b", frozenset({"x"}))
    check_requests.relay({})("ns", "c", frozenset({"x"}))
    check_requests.nobody("ns", "d", frozenset({"x"}))
    assert (first, second) == (["a"], ["b"])


def test_no_module_of_the_operator_rebinds_a_global() -> None:
    """Wiring is passed at startup (constructor arguments, kopf's memo), not set into a module: a
    module-level callback installed by one part and called by another is how the release pass once
    reached the controller."""
    root = Path(dbmigrate_operator.__file__).parent
    rebinding = sorted(
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if any(isinstance(node, ast.Global) for node in ast.walk(ast.parse(path.read_text())))
    )
    assert list(root.rglob("*.py")), "the package was read"
    assert rebinding == []
