"""Which replica may write: a ``coordination.k8s.io/v1`` Lease, as client-go's leader election does.

Every replica runs kopf (watches, the admission webhook: reads only). Only the replica holding the
Lease writes anything — Jobs, status, Events, pod gate removals; the others write nothing at all,
not even a heartbeat: a candidate only reads the Lease until it expires, then takes it with one
guarded update (``metadata.resourceVersion``: of two candidates, one wins, the other gets 409).

Safety margin: the holder stops writing ``renew_deadline`` after the start of its last successful
renewal; a candidate takes over only after it has seen the Lease record unchanged for the Lease's
whole ``leaseDurationSeconds`` (measured on its own monotonic clock, so clock skew between nodes
does not matter), which is longer. A replica that stops gracefully releases the Lease, so a rolling
update hands over at once; a killed one is replaced after ``leaseDurationSeconds``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, cast

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from dbmigrate_operator.rawapi import RawApi, found, service_account_namespace

logger = logging.getLogger("dbmigrate_operator")


class NotActive(Exception):
    """This replica does not hold the Lease (any more): it must not write."""


class Leadership(Protocol):
    def is_active(self) -> bool:
        """True while this replica may write."""

    def subscribe(self) -> asyncio.Event:
        """A new Event, set each time this replica becomes active (its consumer clears it)."""


class Standalone:
    """One replica, no election: always active."""

    def is_active(self) -> bool:
        return True

    def subscribe(self) -> asyncio.Event:
        return asyncio.Event()  # never set: active from the start, kopf's first listing covers it


class ProcessLeadership:
    """The process's leadership, shared by the controller and gating: standalone until an elector
    is installed (at startup, in whatever order kopf runs the startup handlers); subscriptions made
    before that are handed to the elector."""

    def __init__(self) -> None:
        self.inner: Leadership = Standalone()
        self._early: list[asyncio.Event] = []

    def is_active(self) -> bool:
        return self.inner.is_active()

    def subscribe(self) -> asyncio.Event:
        if isinstance(self.inner, LeaseElector):
            return self.inner.subscribe()
        event = asyncio.Event()
        self._early.append(event)
        return event

    def install(self, leadership: Leadership) -> None:
        self.inner = leadership
        if isinstance(leadership, LeaseElector):
            leadership.adopt(self._early)
        self._early = []


_PROCESS = ProcessLeadership()


def current() -> ProcessLeadership:
    return _PROCESS


def install(leadership: Leadership) -> None:
    """Make ``leadership`` the process's (the default is standalone: always active)."""
    _PROCESS.install(leadership)


def ensure_active(leadership: Leadership) -> None:
    """Call right before every write."""
    if not leadership.is_active():
        raise NotActive("this replica does not hold the Lease")


class Writer:
    """What the controller and the releaser share: they write only while this replica is active.
    ``leadership`` None is the process's (:func:`current`); a test may give its own."""

    leadership: Leadership | None = None

    def active(self) -> bool:
        return (self.leadership or current()).is_active()

    def _ensure_active(self) -> None:
        """Call right before every write (:class:`NotActive` otherwise)."""
        ensure_active(self.leadership or current())


def new_identity() -> str:
    """The pod's name (its hostname) plus a per-process suffix: a restarted process is a new holder."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def lease_namespace(configured: str) -> str:
    """The configured namespace, else the in-cluster ServiceAccount's, else ``default``."""
    return configured or service_account_namespace() or "default"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseConfig:
    name: str
    namespace: str
    identity: str
    duration: float = 15.0  # leaseDurationSeconds: how long candidates wait on an unchanged record
    renew_deadline: float = 10.0  # the holder stops writing this long after its last renewal began
    retry: float = 2.0  # renew / check interval

    @classmethod
    def from_duration(cls, name: str, namespace: str, identity: str, duration: float) -> LeaseConfig:
        return cls(name, namespace, identity, duration, duration * 2 / 3, max(0.5, duration / 7.5))


class LeaseElector:
    """Acquire, renew and release one Lease; :meth:`is_active` is checked before every write."""

    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        config: LeaseConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = RawApi(api_client)  # not CoordinationV1Api: see rawapi (memory)
        self.config = config
        self.clock = clock
        self._renewed_at: float | None = None  # when the last successful acquire/renew began
        self._observed: tuple[Any, ...] | None = None  # another holder's record, and when it changed
        self._observed_at = 0.0
        self._subscribers: list[asyncio.Event] = []
        self._task: asyncio.Task[None] | None = None

    # -- what writers ask -----------------------------------------------------------------------

    def is_active(self) -> bool:
        began = self._renewed_at
        return began is not None and self.clock() - began < self.config.renew_deadline

    def subscribe(self) -> asyncio.Event:
        event = asyncio.Event()
        self._subscribers.append(event)
        return event

    def adopt(self, events: list[asyncio.Event]) -> None:
        self._subscribers.extend(events)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """One attempt now (a free Lease is taken before kopf's first events), then the loop."""
        await self.step()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="dbmigrate-lease")

    async def stop(self) -> None:
        """Stop renewing; when holding the Lease, stop writing first, then hand it back."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        held = self.is_active()
        self._renewed_at = None
        if held:
            await asyncio.to_thread(self._release)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.config.retry)
            await self.step()

    async def step(self) -> None:
        was = self.is_active()
        began = self.clock()
        try:
            held = await asyncio.to_thread(self._try_acquire_or_renew)
        except Exception as exc:  # the API is unreachable: is_active() runs out by itself
            logger.warning("lease %s: renew failed: %s", self.config.name, exc)
            held = False
        if held:
            self._renewed_at = began
        elif was:
            self._renewed_at = None
        now = self.is_active()
        if now and not was:
            logger.info(
                "lease %s acquired by %s: this replica is active", self.config.name, self.config.identity
            )
            for event in self._subscribers:
                event.set()
        elif was and not now:
            logger.warning(
                "lease %s lost by %s: this replica stops writing", self.config.name, self.config.identity
            )

    # -- the API (blocking) ---------------------------------------------------------------------

    def _read(self) -> dict[str, Any] | None:
        cfg = self.config
        return found(self.api.read_namespaced_lease, cfg.name, cfg.namespace)

    def _replace(self, lease: dict[str, Any]) -> bool:
        """Write back what was read (its resourceVersion included): False on 409, someone was first."""
        cfg = self.config
        try:
            self.api.replace_namespaced_lease(cfg.name, cfg.namespace, cast(Any, lease))
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def _try_acquire_or_renew(self) -> bool:
        cfg = self.config
        lease = self._read()
        if lease is None:
            return self._create()
        spec = lease.setdefault("spec", {})
        holder = spec.get("holderIdentity")
        if holder != cfg.identity and not self._expired(spec):
            return False
        now = _now()
        if holder != cfg.identity:  # take it over
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
            spec["holderIdentity"] = cfg.identity
        spec["renewTime"] = now
        spec["leaseDurationSeconds"] = int(cfg.duration)
        return self._replace(lease)

    def _expired(self, spec: dict[str, Any]) -> bool:
        """Free, or the same record seen for a whole lease duration (on our own clock)."""
        if not spec.get("holderIdentity"):
            return True
        record = (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("leaseTransitions"))
        if record != self._observed:
            self._observed, self._observed_at = record, self.clock()
        duration = float(spec.get("leaseDurationSeconds") or self.config.duration)
        return self.clock() - self._observed_at >= duration

    def _create(self) -> bool:
        cfg = self.config
        now = _now()
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": cfg.name, "namespace": cfg.namespace},
            "spec": {
                "holderIdentity": cfg.identity,
                "leaseDurationSeconds": int(cfg.duration),
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        }
        try:
            self.api.create_namespaced_lease(cfg.namespace, cast(Any, body))
        except ApiException as exc:
            if exc.status == 409:  # another candidate created it first
                return False
            raise
        return True

    def _release(self) -> None:
        """Hand the Lease back (no holder): a waiting candidate takes it on its next check."""
        cfg = self.config
        try:
            lease = self._read()
            spec = (lease or {}).get("spec") or {}
            if lease is None or spec.get("holderIdentity") != cfg.identity:
                return
            spec.update(holderIdentity=None, leaseDurationSeconds=1, renewTime=_now())
            if self._replace(lease):
                logger.info("lease %s released by %s", cfg.name, cfg.identity)
        except ApiException as exc:  # it expires by itself
            logger.warning("lease %s: release failed: %s", cfg.name, exc)
