"""The operator as it observed state before issue #12's watched view, for same-run comparisons only.

``python -m bench.legacy_operator`` runs the real operator (``dbmigrate_operator.__main__``) with three
switches turned back, in this process only; the operator itself has no such option:

* every reconcile pass reads the CR, its Jobs and its Pods from the API (as if the view could never
  be trusted: ``Controller._observe`` reads on each call);
* a run's progress is written as soon as it is seen (no hold);
* gating lists the held pods on every status change that its earlier fingerprint saw (phase,
  Ready/Stalled conditions, observedGeneration, versions, lastRun's message), also when nothing can
  be released.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from dbmigrate_operator import controller
from dbmigrate_operator.gating import release


def _fingerprint(migration: Mapping[str, Any] | None) -> str:
    """gating's fingerprint before #12: any verdict-relevant status change costs a pod listing."""
    if migration is None:
        return "absent"
    status = migration.get("status") or {}
    relevant = {
        "generation": (migration.get("metadata") or {}).get("generation"),
        "observedGeneration": status.get("observedGeneration"),
        "phase": status.get("phase"),
        "conditions": [
            {k: c.get(k) for k in ("type", "status", "observedGeneration", "reason")}
            for c in status.get("conditions") or []
            if isinstance(c, Mapping) and c.get("type") in ("Ready", "Stalled")
        ],
        "appliedVersions": status.get("appliedVersions"),
        "appliedCount": status.get("appliedCount"),
        "ancestry": status.get("ancestry"),
        "currentVersion": status.get("currentVersion"),
        "lastRun": (status.get("lastRun") or {}).get("message"),
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()


def _always(migration: Mapping[str, Any] | None) -> bool:
    return True


_observe = controller.Controller._observe


async def _observe_from_the_api(
    self: controller.Controller, namespace: str, name: str
) -> tuple[dict[str, Any] | None, list[dict[str, Any]], list[dict[str, Any]]]:
    self.mark_unsure(namespace, name)
    return await _observe(self, namespace, name)


def install() -> None:
    """Turn the three switches back (before the operator starts)."""
    controller.Controller._observe = _observe_from_the_api  # type: ignore[method-assign]
    controller.PROGRESS_WRITE_SECONDS = 0.0
    release.fingerprint = _fingerprint
    release.worth_a_pass = _always


if __name__ == "__main__":
    install()
    from dbmigrate_operator.__main__ import main

    main()
