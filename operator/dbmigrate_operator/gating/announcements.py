"""Telling a user why gated pods wait, and when they were released: Events on the pod and on its
controller chain (ReplicaSet, then its Deployment), each said once.

Why a module of its own: the release pass (release.py) decides which pods go; what it says about
them is a concern of its own, with its own memory (the last message per pod and per owner, each
ReplicaSet's Deployment) so that a sweep every 30 s does not repeat an Event. The Event bodies are
built by events.py (pure); this module decides their text and reason and posts them, each after the
releaser's leadership check (a standby says nothing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from dbmigrate_operator.constants import SCHEDULING_GATE
from dbmigrate_operator.gating import events
from dbmigrate_operator.gating.kube import GatingApi
from dbmigrate_operator.gating.requirement import Verdict

_OWNER_MEMORY = 4096  # remembered owner announcements, to bound memory on long runs


def owner_message(verdict: Verdict) -> str:
    """The text for a pod's ReplicaSet/Deployment: the same for all its pods, so it is said once."""
    if verdict.met:
        return f"removed scheduling gate {SCHEDULING_GATE} from new pods: {verdict.message}"
    return f"new pods are held by scheduling gate {SCHEDULING_GATE}: {verdict.message}"


def pod_message(verdict: Verdict) -> str:
    if verdict.met:
        return f"removed scheduling gate {SCHEDULING_GATE}: {verdict.message}"
    return f"held by scheduling gate {SCHEDULING_GATE}: {verdict.message}"


def event_reason(verdict: Verdict) -> tuple[str, bool]:
    """The Event reason and whether it is a Warning."""
    if verdict.met:
        return events.REASON_RELEASED, False
    if verdict.reason == "MigrationFailed":
        return events.REASON_FAILED, True
    return events.REASON_WAITING, False


class Announcer:
    """The releaser's voice: remembers what it said to avoid Event spam.

    ``ensure_active`` is the releaser's leadership check (raises ``NotActive``, which goes up: nothing
    is then remembered as said); ``error`` reports a failed read or post, which never blocks a release.
    """

    def __init__(
        self,
        api: GatingApi,
        ensure_active: Callable[[], None],
        error: Callable[[str, BaseException], None],
    ) -> None:
        self.api = api
        self._ensure_active = ensure_active
        self._error = error
        self._announced: dict[str, str] = {}  # pod uid -> last message
        self._owner_announced: dict[str, str] = {}  # owner uid -> last message
        self._rs_owner: dict[str, events.ObjectRef | None] = {}  # ReplicaSet uid -> its Deployment

    async def waiting(self, pod: Mapping[str, Any], verdict: Verdict) -> None:
        """A pod stays gated: say why, unless this very message was said already."""
        uid = str((pod.get("metadata") or {}).get("uid"))
        message = pod_message(verdict)
        if self._announced.get(uid) == message:
            return
        await self._tell(pod, verdict)
        self._announced[uid] = message

    async def released(self, pod: Mapping[str, Any], verdict: Verdict) -> None:
        """A pod's gate was removed: always said (and the pod forgotten)."""
        self._announced.pop(str((pod.get("metadata") or {}).get("uid")), None)
        await self._tell(pod, verdict)

    def keep_only(self, waiting: set[str]) -> None:
        """Forget the pods (uids) that no longer wait (released, deleted): bounded memory."""
        for uid in set(self._announced) - waiting:
            del self._announced[uid]

    async def _tell(self, pod: Mapping[str, Any], verdict: Verdict) -> None:
        """Events on the pod and on its controller chain (ReplicaSet, then its Deployment)."""
        reason, warning = event_reason(verdict)
        pod_ref = events.ref_of(pod)
        await self._post(pod_ref, reason, pod_message(verdict), warning)
        text = owner_message(verdict)
        for owner in await self._owners(pod):
            if self._owner_announced.get(owner.uid) == text:
                continue
            await self._post(owner, reason, text, warning)
            if len(self._owner_announced) >= _OWNER_MEMORY:
                self._owner_announced.clear()
            self._owner_announced[owner.uid] = text

    async def _owners(self, pod: Mapping[str, Any]) -> list[events.ObjectRef]:
        owner = events.controller_of(pod)
        if owner is None:
            return []
        chain = [owner]
        if owner.kind == "ReplicaSet" and owner.api_version.startswith("apps/"):
            if owner.uid not in self._rs_owner:
                try:
                    rs = await asyncio.to_thread(self.api.get_replicaset, owner.namespace, owner.name)
                except Exception as e:  # the pod's own Event matters more than its owner's
                    self._error(f"reading ReplicaSet {owner.namespace}/{owner.name} failed", e)
                    return chain
                if len(self._rs_owner) >= _OWNER_MEMORY:
                    self._rs_owner.clear()
                self._rs_owner[owner.uid] = events.controller_of(rs) if rs else None
            parent = self._rs_owner[owner.uid]
            if parent is not None:
                chain.append(parent)
        return chain

    async def _post(self, about: events.ObjectRef, reason: str, message: str, warning: bool) -> None:
        body = events.build_event(about, reason=reason, message=message, warning=warning)
        self._ensure_active()  # NotActive goes up: nothing is remembered as announced
        try:
            await asyncio.to_thread(self.api.create_event, about.namespace, body)
        except Exception as e:  # an Event is informative; never let it block a release
            self._error(f"posting an Event on {about.kind} {about.namespace}/{about.name} failed", e)
