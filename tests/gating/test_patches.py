"""Only our gate is ever removed; the removal is guarded against a list that changed meanwhile."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest

from dbmigrate_operator.constants import SCHEDULING_GATE
from dbmigrate_operator.gating.patches import add_gate, remove_gate_patch


def pod(*gates: str) -> dict[str, Any]:
    return {"metadata": {"name": "p"}, "spec": {"schedulingGates": [{"name": g} for g in gates]}}


def test_removes_only_our_gate_and_keeps_the_others_in_order() -> None:
    before = pod("kueue.x-k8s.io/admission", SCHEDULING_GATE, "example.com/other")
    patch = remove_gate_patch(before)
    assert patch is not None
    after = jsonpatch.apply_patch(before, patch)
    assert after["spec"]["schedulingGates"] == [
        {"name": "kueue.x-k8s.io/admission"},
        {"name": "example.com/other"},
    ]


def test_guards_the_index_with_a_test_op() -> None:
    patch = remove_gate_patch(pod("a", SCHEDULING_GATE))
    assert patch == [
        {"op": "test", "path": "/spec/schedulingGates/1/name", "value": SCHEDULING_GATE},
        {"op": "remove", "path": "/spec/schedulingGates/1"},
    ]


def test_a_stale_patch_fails_instead_of_removing_another_gate() -> None:
    seen = pod("a", SCHEDULING_GATE)
    patch = remove_gate_patch(seen)
    assert patch is not None
    now = pod(SCHEDULING_GATE, "a")  # another controller reordered/replaced the list meanwhile
    with pytest.raises(jsonpatch.JsonPatchTestFailed):
        jsonpatch.apply_patch(now, patch)


def test_nothing_to_remove() -> None:
    assert remove_gate_patch(pod("a")) is None
    assert remove_gate_patch({"spec": {}}) is None


def test_add_gate_appends_after_existing_gates() -> None:
    body = pod("a")
    add_gate(body)
    assert body["spec"]["schedulingGates"] == [{"name": "a"}, {"name": SCHEDULING_GATE}]


def test_add_gate_creates_the_list_and_is_idempotent() -> None:
    body: dict[str, Any] = {"spec": {"containers": []}}
    add_gate(body)
    once = copy.deepcopy(body)
    add_gate(body)
    assert body == once == {"spec": {"containers": [], "schedulingGates": [{"name": SCHEDULING_GATE}]}}
