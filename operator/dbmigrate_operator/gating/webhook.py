"""The mutating admission webhook: gate opted-in pods at creation while their requirement is unmet.

Scheduling gates can only be removed after a pod exists, never added, so this is the only place
that adds ours. The decision reads the DatabaseMigration from the API on every request: every
replica serves webhooks, standbys (not holding the Lease) too, so no replica's in-memory state may
decide.

Failure handling, fail-closed: when the DatabaseMigration cannot be read (API slow or down, RBAC,
every read thread busy), or anything in here raises, the pod is still admitted *with* the gate and a
warning. That is safe
(the release pass re-evaluates and removes the gate as soon as it can read the migration) and
better than a denial, which would make the ReplicaSet controller retry with back-off and fill the
Deployment with FailedCreate events. The only denial: a pod with `spec.nodeName` cannot carry a
scheduling gate (the API forbids it), so an unmet one is refused with the reason.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

import kopf

from dbmigrate_operator import metrics
from dbmigrate_operator.constants import SCHEDULING_GATE, WAIT_FOR_LABEL
from dbmigrate_operator.gating.patches import add_gate
from dbmigrate_operator.gating.requirement import Verdict, evaluate, has_gate, requirement_of
from dbmigrate_operator.gating.state import runtime_of
from dbmigrate_operator.gating.webhook_config import API_READ_TIMEOUT_SECONDS, WEBHOOK_ID
from dbmigrate_operator.rawapi import describe

FetchMigration = Callable[[str, str], Awaitable[Mapping[str, Any] | None]]
_T = TypeVar("_T")

# The webhook's API reads get threads of their own: in asyncio's default pool they queued behind the
# controller's reconciles (every reconcile's blocking calls run there), which pushed admission past
# seconds while the controller was busy. Threads start on first use; a few cover concurrent creations.
READ_THREADS = 4


class Busy(Exception):
    """Every read thread is taken by a request still under way: fail closed now, do not queue."""


class Reads:
    """The webhook's bounded reads: at most `workers` in flight, each awaited at most `timeout` s.

    A read that outlives its wait keeps its thread until its own request timeout ends it, and counts
    as in flight until then: a slow API server therefore makes new admissions gate their pods at once
    (`Busy`) instead of queueing behind stuck threads past the API server's webhook timeout.
    """

    def __init__(self, workers: int = READ_THREADS) -> None:
        self.workers = workers
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="webhook")
        self.in_flight = 0

    async def call(self, fn: Callable[[], _T], wait: float) -> _T:
        """`fn()` in a read thread, awaited at most `wait` seconds; `Busy` when none is free."""
        if self.in_flight >= self.workers:
            raise Busy(f"{self.in_flight} API reads of the webhook are still under way")
        self.in_flight += 1
        future = asyncio.get_running_loop().run_in_executor(self.pool, fn)
        future.add_done_callback(self._done)  # when the thread is free again, not when we stop waiting
        return await asyncio.wait_for(asyncio.shield(future), wait)

    def _done(self, _: object) -> None:
        self.in_flight -= 1


READS = Reads()


@dataclasses.dataclass(frozen=True)
class Admission:
    """The webhook's decision for one pod."""

    gate: bool  # add our scheduling gate
    verdict: Verdict | None = None  # None: the pod did not opt in, or already carries the gate
    deny: str | None = None  # refuse the pod with this message

    @property
    def warning(self) -> str | None:
        if not self.gate or self.verdict is None:
            return None
        return f"gated by {SCHEDULING_GATE}: {self.verdict.message}"


async def decide(pod: Mapping[str, Any], fetch: FetchMigration) -> Admission:
    """What to do with a pod being created. Never raises for API trouble: that gates the pod."""
    meta = pod.get("metadata") or {}
    requirement = requirement_of(meta.get("labels"), meta.get("annotations"), str(meta.get("name") or ""))
    if requirement is None or has_gate(pod):
        return Admission(gate=False)
    namespace = meta.get("namespace")
    if not namespace:
        verdict = Verdict(False, "Unknown", "the pod's namespace is not known; re-checked after creation")
    else:
        try:
            migration = await fetch(namespace, requirement.migration)
        except Busy as e:
            verdict = Verdict(
                False, "WebhookBusy", f"the gating webhook is busy ({e}); re-checked after creation"
            )
        except Exception as e:
            verdict = Verdict(
                False,
                "MigrationUnreadable",
                f"could not read DatabaseMigration {requirement.migration} ({describe(e)}); "
                "re-checked after creation",
            )
        else:
            verdict = evaluate(requirement, migration)
    if verdict.met:
        return Admission(gate=False, verdict=verdict)
    if (pod.get("spec") or {}).get("nodeName"):
        return Admission(
            gate=False,
            verdict=verdict,
            deny=f"pod sets spec.nodeName, so it cannot be held by a scheduling gate: {verdict.message}",
        )
    return Admission(gate=True, verdict=verdict)


def _add_gate(raw: kopf.RawBody) -> None:
    """kopf applies this to a copy of the pod and sends the difference as the JSON patch."""
    add_gate(cast(dict[str, Any], raw))


@kopf.on.mutate(
    "v1",
    "pods",
    id=WEBHOOK_ID,
    operations=["CREATE"],
    labels={WAIT_FOR_LABEL: kopf.PRESENT},
    persistent=True,  # only matters if someone turns kopf's managed configuration on
)
async def gate_pods(
    body: kopf.Body,
    patch: kopf.Patch,
    dryrun: bool,
    warnings: list[str],
    memo: kopf.Memo,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """Add the scheduling gate to an opted-in pod whose DatabaseMigration requirement is unmet."""
    started = time.monotonic()
    failed = False
    runtime = runtime_of(memo)
    try:
        if runtime is None:
            raise RuntimeError("gating is not started")
        api = runtime.api

        async def fetch(namespace: str, name: str) -> Mapping[str, Any] | None:
            read = functools.partial(api.get_migration, namespace, name, API_READ_TIMEOUT_SECONDS)
            return await READS.call(read, API_READ_TIMEOUT_SECONDS + 0.5)

        admission = await decide(body, fetch)
    except Exception as e:  # a bug must not let an opted-in pod through ungated
        logger.exception("Gating webhook failed; gating the pod (fail-closed).")
        verdict = Verdict(False, "WebhookError", f"the gating webhook failed ({describe(e)})")
        admission = Admission(gate=True, verdict=verdict)
        failed = True

    decision = (
        "denied"
        if admission.deny
        else "failed_closed"
        if failed
        else "gated"
        if admission.gate
        else "admitted"
    )
    metrics.admission(decision, time.monotonic() - started)
    if admission.deny:
        raise kopf.AdmissionError(admission.deny, code=403)
    if not admission.gate:
        return
    patch.fns.append(_add_gate)
    if admission.warning:
        warnings.append(admission.warning)
    meta = body.get("metadata") or {}
    requirement = requirement_of(meta.get("labels"), meta.get("annotations"))
    if not dryrun and runtime is not None and requirement is not None and meta.get("namespace"):
        # Catch the race with a migration that became Ready right after our read, and announce.
        runtime.releaser.nudge(meta["namespace"], requirement.migration)
