"""Migration versions as status records them: the one reading of them for the whole operator (pure).

The controller (is a target a downgrade?), the release pass and the admission webhook (is a pod's
pin applied?) all ask this module, so what "applied" means cannot drift between them.

Vocabulary: `status.currentVersion` is ``app:version`` per app, joined by commas; `status.appliedVersions`
lists ``{app, version}`` oldest first, capped to the newest entries (`status.appliedCount` counts them
all); Alembic keeps its applied revision ids in `status.ancestry` (see `ancestry.py`), since Alembic
revision ids are not ordered. aerich and Tortoise versions start with a sortable number
(aerich ``3_20260101_x``, Tortoise ``0003_x``), which is how an older version is recognised.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Any

from dbmigrate_operator import ancestry
from dbmigrate_operator.constants import ALEMBIC_APP

_NUMBER = re.compile(r"(\d+)")


def number(version: str) -> int | None:
    """The sortable number a version starts with, or None (an Alembic id, a name without one)."""
    match = _NUMBER.match(version)
    return int(match.group(1)) if match else None


def order(version: str) -> int:
    """A version's place for comparisons: its number; ``zero`` (before any migration) and names
    without a number come first."""
    if version == "zero":
        return -1
    found = number(version)
    return -1 if found is None else found


def current_by_app(status: Mapping[str, Any]) -> dict[str, str]:
    """`status.currentVersion` as {app: version}."""
    out: dict[str, str] = {}
    for part in str(status.get("currentVersion") or "").split(","):
        app, sep, version = part.partition(":")
        if sep and app.strip():
            out[app.strip()] = version.strip()
    return out


# ---------------------------------------------------------------- downgrades (the controller)


def is_downgrade(target: str, status: Mapping[str, Any]) -> bool:
    """Is ``target`` (``spec.target``) below what `status` records as applied? Unknown (nothing
    applied, an unknown app) counts as no: the runner's ``upgrade`` refuses a downgrade itself.

    Alembic: a target below the head is one of the applied ancestors (listed in appliedVersions or
    in the recorded ancestry) other than the head itself; ``base`` reverts everything.
    """
    if not target:
        return False
    current = current_by_app(status)
    if ALEMBIC_APP in current:
        applied = status.get("appliedVersions")
        names = [
            str(v.get("version"))
            for v in (applied if isinstance(applied, list) else [])
            if isinstance(v, Mapping) and v.get("app") == ALEMBIC_APP
        ]
        known = ancestry.known(status)
        names += sorted(known.revisions) if known is not None else []
        return _alembic_is_downgrade(target, current[ALEMBIC_APP], names)
    app, _, version = target.rpartition(":")
    apps = [app] if app else list(current)
    return any(a in current and order(version) < order(current[a]) for a in apps)


def _alembic_is_downgrade(target: str, head: str, names: list[str]) -> bool:
    revision = target.rpartition(":")[2]
    if revision in ("head", "heads"):
        return False
    if revision == "base":
        return bool(head)
    matches = [name for name in names if name.startswith(revision)]
    return bool(matches) and not any(head.startswith(revision) or name == head for name in matches)


# ---------------------------------------------------------------- pins (the gate and the webhook)


@dataclasses.dataclass(frozen=True)
class Pin:
    """A version a pod waits for (`dbmigrate.dev/wait-for-version`), its app when written ``app:version``."""

    version: str
    app: str | None = None

    def __str__(self) -> str:
        return f"{self.app}:{self.version}" if self.app else self.version


def parse_pin(text: str | None) -> Pin | None:
    """The pin an annotation value names, or None when it is empty.

    No colon, or a degenerate ``:v`` / ``app:``: the whole text is the version (it is then simply
    unmet until such a version is applied, and the Event shows exactly what was looked for).
    """
    pin = (text or "").strip()
    if not pin:
        return None
    app, sep, version = pin.partition(":")
    if sep and app.strip() and version.strip():
        return Pin(version=version.strip(), app=app.strip())
    return Pin(version=pin.strip(":").strip() or pin)


@dataclasses.dataclass(frozen=True)
class PinState:
    """Whether status shows a pin applied; `unverifiable` when it cannot tell (older ids not listed)."""

    met: bool
    unverifiable: bool = False
    listed: int = 0  # for the message when unverifiable: revisions status names...
    omitted: int = 0  # ...and how many older ones it only counts


def pin_state(pin: Pin, status: Mapping[str, Any]) -> PinState:
    """Is `pin` among the versions `status` records? (Which database they belong to is not asked
    here: see `identity.py`.)

    Met when the version is listed in appliedVersions (for its app, if the pin names one); or, for an
    Alembic pin, listed in the recorded ancestry; or, when appliedVersions is capped (appliedCount is
    larger), for the ordered tools, when its number is at or below the app's current version
    (migrations apply in order).
    """
    in_ancestry = _in_ancestry(pin, status)
    if _is_listed(pin, status.get("appliedVersions")) or _is_below_current(pin, status) or in_ancestry:
        return PinState(True)
    if in_ancestry is None:
        listed, omitted = _listed_and_omitted(status)
        return PinState(False, unverifiable=True, listed=listed, omitted=omitted)
    return PinState(False)


def _is_listed(pin: Pin, applied: Any) -> bool:
    if not isinstance(applied, Iterable) or isinstance(applied, str | bytes | Mapping):
        return False
    return any(
        isinstance(entry, Mapping)
        and entry.get("version") == pin.version
        and (pin.app is None or entry.get("app") == pin.app)
        for entry in applied
    )


def _pin_app(pin: Pin, status: Mapping[str, Any]) -> str | None:
    """The app a pin refers to: its own prefix, or the only app of currentVersion."""
    if pin.app is not None:
        return pin.app
    apps = list(current_by_app(status))
    return apps[0] if len(apps) == 1 else None


def _capped(status: Mapping[str, Any]) -> bool:
    """appliedVersions lists fewer entries than appliedCount counts."""
    applied = status.get("appliedVersions")
    count = status.get("appliedCount")
    listed = len(applied) if isinstance(applied, list) else 0
    return isinstance(count, int) and count > listed


def _listed_and_omitted(status: Mapping[str, Any]) -> tuple[int, int]:
    known = ancestry.known(status)
    if known is not None:
        return len(known.revisions), known.omitted
    applied = status.get("appliedVersions")
    listed = len(applied) if isinstance(applied, list) else 0
    count = status.get("appliedCount")
    return listed, max((count if isinstance(count, int) else listed) - listed, 0)


def _in_ancestry(pin: Pin, status: Mapping[str, Any]) -> bool | None:
    """Alembic pins against status.ancestry: True applied, None cannot tell, False not applied/not Alembic."""
    if _pin_app(pin, status) != ALEMBIC_APP:
        return False
    known = ancestry.known(status)
    if known is None:
        return None if _capped(status) else False  # a capped appliedVersions leaves older pins unknown
    return known.contains(pin.version)


def _is_below_current(pin: Pin, status: Mapping[str, Any]) -> bool:
    """Only for a capped appliedVersions: an older pin is not listed, but migrations apply in order,
    so a pin numbered at or below the app's current version is applied. Never for Alembic."""
    if not _capped(status):
        return False
    current = current_by_app(status)
    app = _pin_app(pin, status)
    if app is None or app == ALEMBIC_APP:
        return False
    pinned, newest = number(pin.version), number(current.get(app, ""))
    return pinned is not None and newest is not None and pinned <= newest
