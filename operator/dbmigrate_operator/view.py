"""What the operator's watches have shown it: every DatabaseMigration, its Jobs and their Pods.

Pure (no I/O, no kopf): the kopf handlers feed it the bodies their watches deliver, and a reconcile
pass reads the CR, its Jobs and Pods from it instead of asking the API server each time. The watches
are the ones the operator opens anyway (server-side label-selected, ``watching.py``), so the view
costs no request; the API's answers to our own writes (a status patch, a created Job) go in too, so
the next pass starts from what was written, not from what the watch has not echoed yet.

Order: a body replaces the stored one only when it is not older (``metadata.resourceVersion``,
compared as the integers etcd makes of them; when either is not an integer, the later arrival wins).
An object once deleted (its uid) never comes back: a late event about it is ignored.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from dbmigrate_operator import constants as c

Key = tuple[str, str]  # (namespace, name) of a DatabaseMigration
TOMBSTONES = 4096  # deleted uids remembered, so a late event cannot resurrect one (bounded memory)
SHARED_STRING = 64  # strings up to this long are interned (keys, labels, phases, images, times)


class Kind(Enum):
    MIGRATION = "databasemigrations"
    JOB = "jobs"
    POD = "pods"


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def newer_or_same(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    """Is ``new`` at least as recent as ``old``? (etcd's resourceVersions are increasing integers)."""
    if old is None:
        return True
    a, b = str(_meta(new).get("resourceVersion") or ""), str(_meta(old).get("resourceVersion") or "")
    if a.isdigit() and b.isdigit():
        return int(a) >= int(b)
    return True


def _shared(value: Any) -> Any:
    """A deep copy whose short strings are interned: every watch event is parsed on its own, so each
    of the thousands of bodies in the view would otherwise hold its own "metadata", "labels",
    "dbmigrate.dev/migration", "True"... (interned strings are freed when no longer used)."""
    if isinstance(value, Mapping):
        return {(sys.intern(k) if isinstance(k, str) else k): _shared(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shared(v) for v in value]
    if isinstance(value, str) and len(value) <= SHARED_STRING:
        return sys.intern(value)
    return value


def trimmed(kind: Kind, obj: Mapping[str, Any]) -> dict[str, Any]:
    """A private copy without what no decision reads: managedFields, and a Pod's spec (its status and
    metadata say everything :mod:`reconcile` asks). Keeps the view's memory near the objects' size."""
    out = {k: v for k, v in obj.items() if not (kind is Kind.POD and k == "spec")}
    meta = out.get("metadata")
    if isinstance(meta, Mapping):
        out["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
    return dict(_shared(out))


@dataclass
class View:
    """The CRs, and the Jobs and Pods of each CR (by the ``dbmigrate.dev/migration`` label)."""

    _crs: dict[Key, dict[str, Any]] = field(default_factory=dict)
    # (namespace, migration) -> object name -> object, for Jobs and for Pods
    _owned: dict[Kind, dict[Key, dict[str, dict[str, Any]]]] = field(
        default_factory=lambda: {Kind.JOB: {}, Kind.POD: {}}
    )
    _gone: OrderedDict[str, None] = field(default_factory=OrderedDict)  # tombstoned uids

    # -- feeding ---------------------------------------------------------------------------------

    def put(self, kind: Kind, obj: Mapping[str, Any]) -> bool:
        """Store what a watch event or a write's answer showed; False when it was older or deleted."""
        meta = _meta(obj)
        namespace, name, uid = meta.get("namespace"), meta.get("name"), meta.get("uid")
        if not namespace or not name or (uid and str(uid) in self._gone):
            return False
        if kind is Kind.MIGRATION:
            key = (str(namespace), str(name))
            if not newer_or_same(obj, self._crs.get(key)):
                return False
            self._crs[key] = trimmed(kind, obj)
            return True
        migration = (meta.get("labels") or {}).get(c.MIGRATION_LABEL)
        if not migration:
            return False  # not ours (the watches are selected; this guards a hand-edited label)
        group = self._owned[kind].setdefault((str(namespace), str(migration)), {})
        if not newer_or_same(obj, group.get(str(name))):
            return False
        group[str(name)] = trimmed(kind, obj)
        return True

    def delete(self, kind: Kind, obj: Mapping[str, Any]) -> None:
        """A DELETED event (or our own successful delete): drop it and never take it back."""
        meta = _meta(obj)
        namespace, name, uid = str(meta.get("namespace") or ""), str(meta.get("name") or ""), meta.get("uid")
        if uid:
            self._gone[str(uid)] = None
            while len(self._gone) > TOMBSTONES:
                self._gone.popitem(last=False)
        if kind is Kind.MIGRATION:
            stored = self._crs.get((namespace, name))
            if stored is not None and (not uid or _meta(stored).get("uid") in (None, uid)):
                del self._crs[(namespace, name)]
            return
        for key, group in list(self._owned[kind].items()):
            stored = group.get(name)
            if key[0] == namespace and stored is not None and _meta(stored).get("uid") in (None, uid):
                del group[name]
                if not group:
                    del self._owned[kind][key]

    def replace(
        self,
        key: Key,
        cr: Mapping[str, Any] | None,
        jobs: list[dict[str, Any]],
        pods: list[dict[str, Any]],
    ) -> None:
        """What the API answered for one CR (a read when the view could not be trusted): it wins."""
        if cr is None:
            self._crs.pop(key, None)
        else:
            self._crs[key] = trimmed(Kind.MIGRATION, cr)
        for kind, objects in ((Kind.JOB, jobs), (Kind.POD, pods)):
            group = {
                str(_meta(o).get("name")): trimmed(kind, o)
                for o in objects
                if _meta(o).get("name") and str(_meta(o).get("uid") or "") not in self._gone
            }
            if group:
                self._owned[kind][key] = group
            else:
                self._owned[kind].pop(key, None)

    # -- reading ---------------------------------------------------------------------------------

    def migration(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._crs.get((namespace, name))

    def jobs(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return list(self._owned[Kind.JOB].get((namespace, name), {}).values())

    def pods(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return list(self._owned[Kind.POD].get((namespace, name), {}).values())

    def keys(self) -> list[Key]:
        return sorted(self._crs)

    def counts(self) -> dict[str, int]:
        """How many objects the view holds, per kind (the figures and the logs)."""
        return {
            Kind.MIGRATION.value: len(self._crs),
            **{kind.value: sum(len(g) for g in groups.values()) for kind, groups in self._owned.items()},
        }
