"""Kubernetes Events that tell a user why pods wait and when they were released (pure builders).

`kubectl describe pod|deployment` lists core/v1 Events by their involvedObject, so each Event names
the object it is about; the pod's own Events, its ReplicaSet's and its Deployment's all carry the
same message (the DatabaseMigration and the missing version).
"""

from __future__ import annotations

import dataclasses
import datetime
import secrets
from collections.abc import Mapping
from typing import Any

from dbmigrate_operator.constants import MANAGED_BY
from dbmigrate_operator.status import timestamp

# The API server rejects Event messages longer than 1 KiB... and long texts are unreadable anyway.
MAX_MESSAGE = 1000
REASON_WAITING = "WaitingForMigration"
REASON_FAILED = "MigrationFailed"
REASON_RELEASED = "MigrationSatisfied"


@dataclasses.dataclass(frozen=True)
class ObjectRef:
    """Enough of an object to be an Event's involvedObject."""

    api_version: str
    kind: str
    name: str
    namespace: str
    uid: str

    def as_involved_object(self) -> dict[str, str]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "namespace": self.namespace,
            "uid": self.uid,
        }


def ref_of(obj: Mapping[str, Any], *, api_version: str = "v1", kind: str = "Pod") -> ObjectRef:
    meta = obj.get("metadata") or {}
    return ObjectRef(
        api_version=str(obj.get("apiVersion") or api_version),
        kind=str(obj.get("kind") or kind),
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "")),
        uid=str(meta.get("uid", "")),
    )


def controller_of(obj: Mapping[str, Any]) -> ObjectRef | None:
    """The managing controller (ownerReference with controller=true) of a namespaced object."""
    meta = obj.get("metadata") or {}
    for owner in meta.get("ownerReferences") or []:
        if isinstance(owner, Mapping) and owner.get("controller"):
            return ObjectRef(
                api_version=str(owner.get("apiVersion", "")),
                kind=str(owner.get("kind", "")),
                name=str(owner.get("name", "")),
                namespace=str(meta.get("namespace", "")),
                uid=str(owner.get("uid", "")),
            )
    return None


def build_event(
    about: ObjectRef,
    *,
    reason: str,
    message: str,
    warning: bool = False,
    component: str = MANAGED_BY,
    now: datetime.datetime | None = None,
) -> dict[str, Any]:
    """A core/v1 Event body about `about`."""
    now = now or datetime.datetime.now(datetime.UTC)
    stamp = timestamp(now)
    # Named like client-go's recorder does (object name + time) plus randomness, not generateName:
    # a name we choose works with every API implementation and cannot collide in practice.
    name = f"{about.name[:200]}.{int(now.timestamp() * 1e9):x}{secrets.token_hex(3)}"
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "…"
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": about.namespace},
        "involvedObject": about.as_involved_object(),
        "reason": reason,
        "message": message,
        "type": "Warning" if warning else "Normal",
        "source": {"component": component},
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
