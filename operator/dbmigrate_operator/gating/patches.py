"""JSON patches (RFC 6902) that add or remove only our scheduling gate (pure).

Other controllers gate pods too (Kueue, custom schedulers). A merge patch would replace the whole
`spec.schedulingGates` list and could drop their gates or resurrect stale ones, so the removal
addresses our gate by index and guards that index with a `test` op: if the list changed between
our read and our write, the API server rejects the patch (422) and we re-read instead of removing
someone else's gate.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from dbmigrate_operator.constants import SCHEDULING_GATE

JsonPatch = list[dict[str, Any]]


def gate_index(pod: Mapping[str, Any]) -> int | None:
    """Position of our gate in spec.schedulingGates, or None when the pod does not carry it."""
    gates = (pod.get("spec") or {}).get("schedulingGates") or []
    for index, gate in enumerate(gates):
        if isinstance(gate, Mapping) and gate.get("name") == SCHEDULING_GATE:
            return index
    return None


def remove_gate_patch(pod: Mapping[str, Any]) -> JsonPatch | None:
    """The patch removing our gate from `pod` as we saw it, or None when there is nothing to remove."""
    index = gate_index(pod)
    if index is None:
        return None
    path = f"/spec/schedulingGates/{index}"
    return [
        {"op": "test", "path": f"{path}/name", "value": SCHEDULING_GATE},
        {"op": "remove", "path": path},
    ]


def add_gate(pod: MutableMapping[str, Any]) -> None:
    """Append our gate to `pod` in place (idempotent); used by the webhook, which diffs the result.

    Appending keeps other gates where they are; the API rejects duplicate gate names, hence the check.
    """
    if gate_index(pod) is not None:
        return
    spec = pod.setdefault("spec", {})
    gates = spec.get("schedulingGates")
    if not isinstance(gates, list):
        gates = spec["schedulingGates"] = []
    gates.append({"name": SCHEDULING_GATE})
