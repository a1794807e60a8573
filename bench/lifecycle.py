"""Figure 6 on the real local control plane: what one DatabaseMigration costs over its whole life,
and what the rest of the cluster costs the operator (nothing, with server-side filtered watches).

* lifecycle: N DatabaseMigrations created, run to Ready, left idle, deleted: the operator's API
  requests per CR for each phase (the API server counts them for the operator's ServiceAccount alone,
  a FlowSchema of its own; see bench/kube.py). The same N again, in the same run, with the previous
  design (``bench.legacy_operator``: every pass re-reads the CR, its Jobs and Pods; issue #12);
* noise: while those N are idle, unrelated Pods and Jobs (not the operator's, no opt-in label) are
  created, run to completion and deleted. The operator's API requests and CPU during that churn are
  compared with an idle window as long, and its own counter of the watch events it received
  (``dbmigrate_watch_events_total``) shows whether any of the churn reached it.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.context import Context
from bench.core import FigureResult
from bench.kube import APP_IMAGE, RUN_LABEL, Kube, Watcher, start
from dbmigrate_operator.constants import GROUP, PLURAL, VERSION


def watch_events(kube: Kube) -> dict[str, float]:
    """The operator's own count of the watch events it received, by resource."""
    return {
        r: kube.operator.metric("dbmigrate_watch_events_total", {"resource": r})
        for r in ("pods", "jobs", "databasemigrations")
    }


def _bystanders(kube: Kube, ns: str, pods: int, jobs: int) -> None:
    """Pods and Jobs that are none of the operator's business, run to completion, then deleted."""
    from kubernetes import client

    core: Any = client.CoreV1Api(kube.api)
    batch: Any = client.BatchV1Api(kube.api)
    labels = {RUN_LABEL: kube.run_id, "app": "bystander"}
    spec = {
        "containers": [{"name": "app", "image": APP_IMAGE}],
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 0,
    }

    def pod(i: int) -> None:
        body = {"metadata": {"name": f"noise-{i}", "labels": labels}, "spec": spec}
        core.create_namespaced_pod(ns, body, _preload_content=False)

    def job(i: int) -> None:
        body = {
            "metadata": {"name": f"noise-job-{i}", "labels": labels},
            "spec": {"template": {"metadata": {"labels": labels}, "spec": spec}, "backoffLimit": 0},
        }
        batch.create_namespaced_job(ns, body, _preload_content=False)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(pod, range(pods)))
        list(pool.map(job, range(jobs)))
    deadline = time.monotonic() + 120 + pods + jobs
    selector = "app=bystander"
    while time.monotonic() < deadline:
        items = core.list_namespaced_pod(ns, label_selector=selector).items
        if len(items) >= pods + jobs and all(p.status.phase in ("Succeeded", "Failed") for p in items):
            break
        time.sleep(1)
    batch.delete_collection_namespaced_job(ns, label_selector=selector, propagation_policy="Background")
    core.delete_collection_namespaced_pod(ns, label_selector=selector, grace_period_seconds=0)
    while time.monotonic() < deadline and core.list_namespaced_pod(ns, label_selector=selector).items:
        time.sleep(1)


BASELINE_SECONDS = 20.0


def _fixed_rate(kube: Kube) -> float:
    """The operator's requests per second with no DatabaseMigration to work on: what it costs anyway
    (Lease renewals, the gating sweep, watch reconnections), subtracted from a phase's count."""
    req0, t0 = kube.operator_requests(), time.monotonic()
    time.sleep(BASELINE_SECONDS)
    return (kube.operator_requests() - req0) / (time.monotonic() - t0)


def _create_to_quiet(kube: Kube, ns: str, n: int) -> tuple[float, float, float]:
    """N CRs created, every one Ready, the operator quiet: its requests and watch events meanwhile,
    and the phase's length (s)."""
    with Watcher(kube, {ns}) as w:
        req0, ev0, t0 = kube.operator_requests(), watch_events(kube), time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: kube.create_migration(ns, f"mig-{i}"), range(n)))
        w.wait(lambda: len(w.ready) >= n, 120 + n, "every CR Ready")
        # ...and every Job closed by the Job controller, and no more watch events about them: the
        # operator reading from its view is quiet in requests well before its Jobs' last updates.
        w.wait(lambda: len(w.job_complete) >= n, 120 + n, "every Job Complete")
        _events_settle(kube)
        kube.settle()
        req1, ev1 = kube.operator_requests(), watch_events(kube)
    return req1 - req0, sum(ev1.values()) - sum(ev0.values()), time.monotonic() - t0


def _events_settle(kube: Kube, still: float = 5.0, timeout: float = 120) -> None:
    """Wait until the operator's watch event counters have not moved for ``still`` seconds."""
    deadline = time.monotonic() + timeout
    last = watch_events(kube)
    while time.monotonic() < deadline:
        time.sleep(still)
        now = watch_events(kube)
        if now == last:
            return
        last = now


def _delete_to_quiet(kube: Kube, ns: str, n: int) -> tuple[float, float]:
    """The N CRs deleted (their Jobs collected), the operator quiet: its requests meanwhile, and the
    phase's length (s)."""
    from kubernetes import client

    custom: Any = client.CustomObjectsApi(kube.api)
    req0, t0 = kube.operator_requests(), time.monotonic()
    for i in range(n):
        custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, f"mig-{i}")
    deadline = time.monotonic() + 120
    while (
        time.monotonic() < deadline
        and custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
    ):
        time.sleep(1)
    kube.settle()
    return kube.operator_requests() - req0, time.monotonic() - t0


def _previous_design(ctx: Context, n: int) -> tuple[float, float, float]:
    """The same lifecycle with ``bench.legacy_operator`` (the shipped operator is back afterwards):
    requests of the whole life, their part beyond the fixed rate, and that fixed rate."""
    kube = start(ctx, legacy=True)
    kube.settle()
    rate = _fixed_rate(kube)
    ns = kube.namespace("lifecycle-legacy")
    try:
        created, _, t_created = _create_to_quiet(kube, ns, n)
        deleted, t_deleted = _delete_to_quiet(kube, ns, n)
    finally:
        kube.delete_namespaces([ns])
        start(ctx)
    whole = created + deleted
    return whole, whole - rate * (t_created + t_deleted), rate


def run(ctx: Context) -> FigureResult:
    n = int(ctx.options.get("crs") or (20 if ctx.quick else 100))
    churn = ctx.repetitions(full=300, quick=60)
    fig = FigureResult(
        "lifecycle", f"{n} DatabaseMigrations: create → Ready → idle → delete; {churn} unrelated Pods + Jobs"
    )
    kube = start(ctx)
    fig.extra["settle_before_s"] = round(kube.settle(), 1)
    rate = _fixed_rate(kube)
    ns = kube.namespace("lifecycle")
    try:
        created, events, t_created = _create_to_quiet(kube, ns, n)
        req1, ev1 = kube.operator_requests(), watch_events(kube)

        # the noise: unrelated churn while the n CRs are idle
        cpu0, t0 = kube.operator.cpu_seconds(), time.monotonic()
        _bystanders(kube, ns, churn, churn // 4)
        churn_s = time.monotonic() - t0
        req2, ev2, cpu1 = kube.operator_requests(), watch_events(kube), kube.operator.cpu_seconds()
        # an idle window as long, for comparison (the resync timer's reads)
        time.sleep(churn_s)
        req3, cpu2 = kube.operator_requests(), kube.operator.cpu_seconds()

        deleted, t_deleted = _delete_to_quiet(kube, ns, n)
        ev4 = watch_events(kube)
    finally:
        kube.delete_namespaces([ns])
    net = created + deleted - rate * (t_created + t_deleted)
    old_whole, old_net, old_rate = _previous_design(ctx, n)

    fig.add("operator API requests per CR: create → Ready → quiet", "req", [created / n])
    fig.add("operator API requests per CR: delete → quiet", "req", [deleted / n])
    fig.add("operator API requests per CR: whole life (without idle)", "req", [(created + deleted) / n])
    fig.add("the same, less the operator's fixed rate over those phases", "req", [net / n])
    fig.add("operator's fixed rate, no CR (Lease, gating sweep, watches)", "req/s", [rate])
    fig.add("previous design (every pass reads the API): whole life per CR", "req", [old_whole / n])
    fig.add("previous design: the same, less its fixed rate", "req", [old_net / n])
    fig.target("API requests per CR over its whole life, less the fixed rate", net / n, 8)
    fig.target(
        "whole life less the fixed rate, this design / previous design (same run)",
        net / max(1.0, old_net),
        None,
    )
    fig.add("watch events received per CR: create → quiet (CR, Jobs, Pods)", "events", [events / n])
    fig.add(f"churn window ({churn} Pods + {churn // 4} Jobs, not ours)", "s", [churn_s])
    fig.add("operator API requests during the churn", "req", [req2 - req1])
    fig.add("operator API requests in an idle window as long", "req", [req3 - req2])
    fig.add("operator CPU during the churn", "s", [cpu1 - cpu0])
    fig.add("operator CPU in an idle window as long", "s", [cpu2 - cpu1])
    noise = (ev2["pods"] - ev1["pods"]) + (ev2["jobs"] - ev1["jobs"])
    fig.add("Pod/Job watch events the churn brought the operator", "events", [noise])
    fig.target("Pod/Job watch events from unrelated churn", noise, 0)
    fig.extra.update(
        {
            "crs": n,
            "churn_pods": churn,
            "churn_jobs": churn // 4,
            "operator_requests": {
                "create_to_quiet": created,
                "churn": req2 - req1,
                "idle": req3 - req2,
                "delete_to_quiet": deleted,
                "fixed_rate_per_s": rate,
                "phases_s": {"create_to_quiet": t_created, "delete_to_quiet": t_deleted},
                "previous_design": {
                    "whole_life": old_whole,
                    "less_fixed_rate": old_net,
                    "fixed_rate_per_s": old_rate,
                },
            },
            "watch_events": {"ready": ev1, "after_churn": ev2, "after_delete": ev4},
        }
    )
    fig.notes.append(
        "requests counted by the API server for the operator's ServiceAccount alone (its FlowSchema); watch "
        "events from the operator's own dbmigrate_watch_events_total (docs/operations.md); bystanders run "
        "`true` through the node agent"
    )
    return fig
