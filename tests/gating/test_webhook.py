"""The webhook's decision, and its fail-closed behaviour, without a server (see test_wiring.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from dbmigrate_operator.constants import SCHEDULING_GATE
from dbmigrate_operator.gating.webhook import decide
from tests.gating.harness import make_pod, migration_body


def fetching(result: Mapping[str, Any] | BaseException | None) -> Any:
    calls: list[tuple[str, str]] = []

    async def fetch(namespace: str, name: str) -> Mapping[str, Any] | None:
        calls.append((namespace, name))
        if isinstance(result, BaseException):
            raise result
        return result

    fetch.calls = calls  # type: ignore[attr-defined]
    return fetch


async def test_unmet_gates_with_the_reason() -> None:
    fetch = fetching(None)
    admission = await decide(make_pod("web-1"), fetch)
    assert admission.gate
    assert fetch.calls == [("shop", "shop-db")]
    assert admission.warning is not None
    assert "shop-db" in admission.warning


async def test_met_admits_ungated() -> None:
    admission = await decide(make_pod("web-1"), fetching(migration_body(ready=True)))
    assert not admission.gate
    assert admission.deny is None


@pytest.mark.parametrize("error", [TimeoutError(), ConnectionRefusedError(), RuntimeError("boom")])
async def test_api_trouble_gates_the_pod(error: BaseException) -> None:
    admission = await decide(make_pod("web-1"), fetching(error))
    assert admission.gate
    assert admission.warning is not None
    assert "could not read" in admission.warning


async def test_pods_not_opted_in_are_not_looked_at() -> None:
    fetch = fetching(RuntimeError("must not be called"))
    admission = await decide(make_pod("web-1", wait_for=None), fetch)
    assert not admission.gate
    assert fetch.calls == []


async def test_already_gated_pod_is_left_as_is() -> None:
    fetch = fetching(None)
    admission = await decide(make_pod("web-1", gates=(SCHEDULING_GATE,)), fetch)
    assert not admission.gate
    assert fetch.calls == []


async def test_missing_namespace_gates_without_reading() -> None:
    pod = make_pod("web-1")
    del pod["metadata"]["namespace"]
    fetch = fetching(migration_body(ready=True))
    admission = await decide(pod, fetch)
    assert admission.gate
    assert fetch.calls == []


async def test_node_name_pods_are_denied_when_unmet_only() -> None:
    pod = make_pod("web-1")
    pod["spec"]["nodeName"] = "node-1"
    denied = await decide(pod, fetching(None))
    assert denied.deny is not None
    assert not denied.gate
    admitted = await decide(pod, fetching(migration_body(ready=True)))
    assert admitted.deny is None


async def call_handler(pod: dict[str, Any], memo: Any) -> tuple[list[str], dict[str, Any]]:
    """Call the kopf handler as kopf does; return the warnings and the pod as patched."""
    import logging

    import jsonpatch
    import kopf

    from dbmigrate_operator.gating.webhook import gate_pods

    body = kopf.Body(pod)
    patch = kopf.Patch(body=body)
    warnings: list[str] = []
    await gate_pods(
        body=body, patch=patch, dryrun=False, warnings=warnings, memo=memo, logger=logging.getLogger("t")
    )
    return warnings, jsonpatch.apply_patch(pod, patch.as_json_patch())


async def test_handler_failure_gates_the_pod_instead_of_erroring() -> None:
    import kopf

    # No runtime in the memo: as if startup had not run, or any bug before the decision.
    warnings, patched = await call_handler(make_pod("web-1", gates=("other",)), kopf.Memo())
    assert [g["name"] for g in patched["spec"]["schedulingGates"]] == ["other", SCHEDULING_GATE]
    assert any("webhook failed" in w for w in warnings)


async def test_handler_denies_with_an_admission_error() -> None:
    import kopf

    from dbmigrate_operator.gating.release import Releaser
    from dbmigrate_operator.gating.server import WebhookSettings
    from dbmigrate_operator.gating.state import MEMO_KEY, Runtime
    from tests.gating.test_release import FakeApi

    api = FakeApi([], None)
    memo = kopf.Memo({MEMO_KEY: Runtime(api=api, releaser=Releaser(api), settings=WebhookSettings())})
    pod = make_pod("web-1")
    pod["spec"]["nodeName"] = "node-1"
    with pytest.raises(kopf.AdmissionError, match=r"nodeName"):
        await call_handler(pod, memo)


async def test_the_api_read_does_not_queue_behind_a_busy_default_thread_pool() -> None:
    """Reconciles fill asyncio's default pool; admission reads have their own threads."""
    import asyncio
    import threading

    import kopf

    from dbmigrate_operator.gating.release import Releaser
    from dbmigrate_operator.gating.server import WebhookSettings
    from dbmigrate_operator.gating.state import MEMO_KEY, Runtime
    from tests.gating.test_release import FakeApi

    threads: list[str] = []

    class ThreadNoting(FakeApi):
        def get_migration(
            self, namespace: str, name: str, timeout: float | None = None
        ) -> dict[str, Any] | None:
            threads.append(threading.current_thread().name)
            return super().get_migration(namespace, name, timeout)

    api = ThreadNoting([], migration_body(ready=True))
    memo = kopf.Memo({MEMO_KEY: Runtime(api=api, releaser=Releaser(api), settings=WebhookSettings())})
    loop = asyncio.get_running_loop()
    release = threading.Event()
    busy = [loop.run_in_executor(None, release.wait, 60) for _ in range(64)]  # every default thread
    try:
        # a guard against hanging, not a timing: a shared pool would block until `release`
        warnings, patched = await asyncio.wait_for(call_handler(make_pod("web-1"), memo), timeout=30)
    finally:
        release.set()
        await asyncio.gather(*busy)
    assert "schedulingGates" not in patched["spec"]  # read the Ready migration: admitted ungated
    assert warnings == []
    assert len(threads) == 1
    assert threads[0].startswith("webhook")


async def test_admissions_are_counted_by_decision() -> None:
    import kopf
    from prometheus_client import REGISTRY

    def count(decision: str) -> float:
        return REGISTRY.get_sample_value("dbmigrate_webhook_admissions_total", {"decision": decision}) or 0.0

    before = count("failed_closed")
    await call_handler(make_pod("web-1"), kopf.Memo())  # no runtime: fails closed
    assert count("failed_closed") == before + 1
    latency = REGISTRY.get_sample_value(
        "dbmigrate_webhook_admission_duration_seconds_count", {"decision": "failed_closed"}
    )
    assert latency is not None
    assert latency >= 1


# --- bounded reads (issue 18 item 10): slow API calls cannot exhaust the webhook's threads ---------


async def test_a_slow_api_makes_new_pods_gated_at_once_not_queued() -> None:
    """Both read threads hang in API calls: the next admission does not queue behind them (it would
    outlast the API server's webhook timeout); it gates the pod now and says why."""
    import asyncio
    import threading

    from dbmigrate_operator.gating.webhook import Reads

    reads = Reads(workers=2)
    unblock = threading.Event()

    def slow() -> Mapping[str, Any] | None:
        unblock.wait(30)
        return migration_body(ready=True)

    async def fetch(namespace: str, name: str) -> Mapping[str, Any] | None:
        return await reads.call(slow, 60)

    hung = [asyncio.create_task(decide(make_pod(f"web-{i}"), fetch)) for i in range(2)]
    await asyncio.sleep(0)
    assert reads.in_flight == 2
    busy = await decide(make_pod("web-3"), fetch)
    assert busy.gate
    assert busy.verdict is not None
    assert busy.verdict.reason == "WebhookBusy"
    assert busy.warning is not None
    assert "busy" in busy.warning

    unblock.set()
    assert [a.gate for a in await asyncio.gather(*hung)] == [False, False]
    assert reads.in_flight == 0
    assert not (await decide(make_pod("web-4"), fetch)).gate  # threads free again: decided normally


async def test_a_read_given_up_on_keeps_its_thread_counted_until_it_ends() -> None:
    import asyncio
    import threading

    from dbmigrate_operator.gating.webhook import Busy, Reads

    reads = Reads(workers=1)
    unblock = threading.Event()
    ended = threading.Event()

    def slow() -> None:
        unblock.wait(30)
        ended.set()

    with pytest.raises(TimeoutError):
        await reads.call(slow, 0.01)
    with pytest.raises(Busy):  # the thread is still in its API call
        await reads.call(lambda: None, 1)
    unblock.set()
    await asyncio.to_thread(ended.wait, 30)
    for _ in range(1000):  # the done callback runs on the loop right after the thread ends
        if reads.in_flight == 0:
            break
        await asyncio.sleep(0.01)
    assert reads.in_flight == 0
    assert await reads.call(lambda: 7, 5) == 7
