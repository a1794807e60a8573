"""status.ancestry: the Alembic revisions the operator knows to be applied, for version pins (pure).

Alembic revision ids are not ordered, so a pin `alembic:<rev>` is met only when `<rev>` is one of
the database's heads or one of their ancestors, and the operator must know that set by name. The
runner's report carries it (packed, newest kept, the rest counted as omitted: see
``dbmigrate_runner.report``); status keeps it, so it outlives the Job's cleanup and an operator
restart, and grows across runs:

* Every id stored is an ancestor of (or is) one of ``heads``: never a revision that is not applied.
* A new report replaces the set, except that the ids already known are kept when every old head is
  in the new report's list (then each of them is an ancestor of a new head too). A history applied
  through the operator a release at a time is thus known back to its first revision, even when one
  report only has room for the newest few hundred ids.
* ``omitted`` counts the applied revisions the operator does not know. A pin that is not listed is
  "not applied" only when ``omitted`` is 0; otherwise it is "unknown" and the pod stays gated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dbmigrate_runner.report import AppState, ReportError, pack_versions, unpack_versions


@dataclass(frozen=True)
class Known:
    """The applied revisions status lists (``revisions``) and how many more are applied unlisted."""

    heads: tuple[str, ...]
    revisions: frozenset[str]
    omitted: int

    def contains(self, revision: str) -> bool | None:
        """True: applied. False: not applied. None: cannot tell (not listed, some omitted)."""
        if revision in self.revisions:
            return True
        return None if self.omitted else False


def known(status: Mapping[str, Any]) -> Known | None:
    """What status.ancestry says, or None when there is none (or it is unreadable: fail closed)."""
    data = status.get("ancestry")
    if not isinstance(data, Mapping):
        return None
    try:
        revisions = unpack_versions(str(data["packed"])) if data.get("packed") else []
        omitted = int(data.get("omitted") or 0)
    except (ReportError, ValueError, TypeError):
        return None
    heads = data.get("heads") or []
    if not isinstance(heads, list):
        return None
    return Known(tuple(str(h) for h in heads), frozenset(revisions), max(omitted, 0))


def merge(old: Mapping[str, Any] | None, state: AppState, cap: int) -> dict[str, Any]:
    """The new status.ancestry from an Alembic report's app state and the old one (at most ``cap`` ids)."""
    listed = list(state.versions)  # oldest first, the newest of the ancestry
    ids = set(listed)
    previous = known({"ancestry": old}) if old is not None else None
    older: list[str] = []
    if previous is not None and previous.heads and set(previous.heads) <= ids:
        old_list = unpack_versions(str((old or {}).get("packed") or "")) if (old or {}).get("packed") else []
        older = [rev for rev in old_list if rev not in ids]
    merged = (older + listed)[-cap:] if cap > 0 else []
    packed = pack_versions(merged)
    if packed is None:  # an id over 127 bytes: list nothing rather than something inexact
        merged, packed = [], ""
    return {
        "heads": list(state.heads),
        "packed": packed if merged else "",
        "known": len(merged),
        "omitted": max(state.count - len(merged), 0),
    }
