"""Figures 3-5 on the real local control plane (tests/cluster) with the real operator process.

* react: per-CR reaction times of the operator, CRs applied one after another at a steady pace;
* scale: many CRs across many namespaces created at once — time to all Jobs, to all Ready,
  operator CPU and peak RSS, API requests per CR, and the idle request rate against the timer;
* webhook: admission latency of pod creations with and without the opt-in label, and how many
  requests the webhook server saw.

Times are taken in the bench process when a watch event arrives (API timestamps have one-second
resolution), so each includes one watch delivery; the bench's own watches cost some CPU too.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.context import Context
from bench.core import FigureResult
from bench.kube import Kube, Watcher, metric_sum, namespaces, start

WEBHOOK_NAME = "gate-pods.dbmigrate.dev"


def _deltas(later: dict[str, float], earlier: dict[str, float]) -> list[float]:
    return [later[k] - earlier[k] for k in earlier if k in later]


def _complete(fig: FigureResult, what: str, got: int, want: int) -> None:
    if got < want:
        fig.notes.append(f"INCOMPLETE: {what} observed for {got} of {want}")


def react(ctx: Context) -> FigureResult:
    n = ctx.repetitions(full=200, quick=30)
    pace = float(ctx.options.get("react_pace") or 0.6)
    fig = FigureResult("react", f"Operator reaction times, {n} DatabaseMigrations applied {pace:g} s apart")
    kube = start(ctx)
    fig.extra["settle_s"] = round(kube.settle(), 1)
    reactions(kube, fig, n, pace)
    return fig


def reactions(kube: Kube, fig: FigureResult, n: int, pace: float, prefix: str = "react") -> None:
    """Figure 3's measurement, into ``fig``: n gated pods + DatabaseMigrations applied ``pace`` s apart
    in a fresh namespace; apply → Job, pod Succeeded → Ready, Ready → pod released (targets 0.3 s / 1 s)."""
    from kubernetes import client

    core: Any = client.CoreV1Api(kube.api)
    with namespaces(kube, prefix, 1) as [ns], Watcher(kube, {ns}) as w:
        applied: dict[str, float] = {}
        pod_of: dict[str, str] = {}
        for i in range(n):
            key = f"{ns}/mig-{i}"
            pod_of[key] = f"{ns}/app-{i}"
            # The app's pod first (as with `kubectl apply -f dir/`): gated, since the CR is missing.
            core.create_namespaced_pod(ns, kube.gated_pod(ns, f"app-{i}", f"mig-{i}"), _preload_content=False)
            applied[key] = time.monotonic()
            kube.create_migration(ns, f"mig-{i}")
            time.sleep(pace)
        w.wait(lambda: len(w.released) >= n, 60 + n, "every gated pod released")
        with w.lock:
            job, succeeded, ready = dict(w.job_created), dict(w.pod_succeeded), dict(w.ready)
            complete = dict(w.job_complete)
            released = {k: w.released[p] for k, p in pod_of.items() if p in w.released}
            gated = sum(1 for p in pod_of.values() if p in w.gated)
    to_job = _deltas(job, applied)
    to_ready = _deltas(ready, succeeded)
    to_release = _deltas(released, ready)
    for label, values in (
        ("apply → Job created", to_job),
        ("pod Succeeded → status Ready", to_ready),
        ("status Ready → gated pod released", to_release),
    ):
        if values:
            row = fig.add(label, "s", values)
            fig.target(f"{label}: p50", row.stat.median, 0.3)
            fig.target(f"{label}: p99", row.stat.p99, 1.0)
    # Where "pod Succeeded → Ready" goes: the Job controller first, then the operator.
    if complete:
        fig.add(
            "  of which: pod Succeeded → Job Complete (Job controller)", "s", _deltas(complete, succeeded)
        )
        fig.add("  of which: Job Complete → status Ready (operator)", "s", _deltas(ready, complete))
    total = _deltas(ready, applied)
    if total:
        fig.add("apply → status Ready (whole run, for context)", "s", total)
    _complete(fig, "gated app pods", gated, n)
    _complete(fig, "Jobs", len(to_job), n)
    _complete(fig, "Ready after pod Succeeded", len(to_ready), n)
    _complete(fig, "releases", len(to_release), n)
    if w.errors:
        fig.notes.append(f"watch restarts: {len(w.errors)} ({w.errors[-1][:120]})")
    fig.notes.append(
        "times from the bench's own watch events (each includes one watch delivery); the Job's pod is run "
        "by the node agent as a stand-in runner writing a success report"
    )


def scale(ctx: Context) -> FigureResult:
    # 1,000 CRs take ~13 minutes on the shared 2-core machine (recorded once in docs/benchmarks.md
    # with --crs 1000); the default fits a full bench run in ~15 minutes.
    n = int(ctx.options.get("crs") or (100 if ctx.quick else 500))
    n_ns = min(n, 10 if ctx.quick else 50)
    idle_s = 20.0 if ctx.quick else 90.0
    fig = FigureResult("scale", f"{n} DatabaseMigrations across {n_ns} namespaces created at once")
    kube = start(ctx)
    fig.extra["settle_before_s"] = round(kube.settle(), 1)
    with namespaces(kube, "scale", n_ns) as names, Watcher(kube, set(names)) as w:
        keys = [(names[i % n_ns], f"mig-{i}") for i in range(n)]
        req0, cpu0 = kube.operator_requests(), kube.operator.cpu_seconds()
        t0 = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda k: kube.create_migration(*k), keys))
        created = time.monotonic() - t0
        budget = float(ctx.options.get("scale_timeout") or (120 + n * 0.6))
        w.wait(lambda: len(w.job_created) >= n, budget, "every Job")
        w.wait(lambda: len(w.ready) >= n, budget - (time.monotonic() - t0), "every CR Ready")
        with w.lock:
            jobs, ready = dict(w.job_created), dict(w.ready)
        # Events still queued when the last status turned Ready are part of what a CR costs.
        settle = kube.settle()
        req1, cpu1 = kube.operator_requests(), kube.operator.cpu_seconds()
        rss = kube.operator.peak_rss_mb()
        idle_start = time.monotonic()
        time.sleep(idle_s)
        req2 = kube.operator_requests()
        idle_elapsed = time.monotonic() - idle_start
    fig.add("create all CRs (8 client threads)", "s", [created])
    if jobs:
        fig.add("create start → every Job exists", "s", [max(jobs.values()) - t0])
    if ready:
        fig.add("create start → every status Ready", "s", [max(ready.values()) - t0])
        fig.add("per CR: create start → Ready", "s", [v - t0 for v in ready.values()])
    fig.add("operator CPU, create start → quiet", "s", [cpu1 - cpu0])
    fig.add("operator peak RSS", "MiB", [rss])
    fig.add("operator API requests per CR, create start → quiet", "req", [(req1 - req0) / n])
    per_cr_min = (req2 - req1) / n / (idle_elapsed / 60)
    fig.add(f"operator API requests per CR per minute, idle ({idle_s:g} s)", "req", [per_cr_min])
    resync = kube.operator.resync_seconds
    # An idle reconcile reads 3 things (the CR, its Jobs, its Pods): the timer allows 3 per CR per resync.
    allowed = 3 * 60 / resync
    fig.target(
        "idle requests per CR per minute vs the timer's 3 reads per resync (+10 %)",
        per_cr_min,
        round(allowed * 1.1, 3),
    )
    _complete(fig, "Jobs", len(jobs), n)
    _complete(fig, "Ready", len(ready), n)
    fig.add("last status Ready → operator quiet (5 s steps)", "s", [settle])
    fig.extra.update(
        {
            "crs": n,
            "namespaces": n_ns,
            "resync_seconds": resync,
            "idle_window_s": idle_elapsed,
            "operator_requests": {"burst": req1 - req0, "idle": req2 - req1},
        }
    )
    fig.notes.append(
        f"operator resync timer {resync:g} s (DBMIGRATE_RESYNC_SECONDS); API requests counted by the API "
        "server for the operator's ServiceAccount alone (a FlowSchema of its own)"
    )
    return fig


def _webhook_calls(kube: Kube) -> float:
    return metric_sum(
        kube.metrics(), "apiserver_admission_webhook_admission_duration_seconds_count", {"name": WEBHOOK_NAME}
    )


def _webhook_seconds(kube: Kube) -> float:
    return metric_sum(
        kube.metrics(), "apiserver_admission_webhook_admission_duration_seconds_sum", {"name": WEBHOOK_NAME}
    )


def _admissions(
    kube: Kube, core: Any, ns: str, n: int, block: int = 50
) -> tuple[dict[bool, list[float]], dict[bool, float], dict[bool, float], float]:
    """Create n pods with and n without the label, alternating blocks; time and count them."""
    times: dict[bool, list[float]] = {True: [], False: []}
    server: dict[bool, float] = {True: 0, False: 0}
    api_calls: dict[bool, float] = {True: 0, False: 0}
    api_seconds = 0.0
    for b in range(2 * max(1, n // block)):
        labelled = b % 2 == 1
        before, calls0, secs0 = kube.operator.webhook_requests(), _webhook_calls(kube), _webhook_seconds(kube)
        for i in range(min(block, n)):
            body: dict[str, Any] = kube.gated_pod(ns, f"p-{b}-{i}", "db" if labelled else None)
            t = time.perf_counter()
            # Dry run: the full admission chain (webhook included), without storing, scheduling or
            # running 2 × n pods on this small machine.
            core.create_namespaced_pod(ns, body, dry_run="All", _preload_content=False)
            times[labelled].append(time.perf_counter() - t)
        time.sleep(0.3)  # let the access log line of the last request land
        server[labelled] += kube.operator.webhook_requests() - before
        api_calls[labelled] += _webhook_calls(kube) - calls0
        if labelled:
            api_seconds += _webhook_seconds(kube) - secs0
    return times, server, api_calls, api_seconds


def webhook(ctx: Context) -> FigureResult:
    n = ctx.repetitions(full=500, quick=100)
    fig = FigureResult("webhook", f"Pod admission, {n} creations with and {n} without the opt-in label")
    kube = start(ctx)
    from kubernetes import client

    core: Any = client.CoreV1Api(kube.api)
    fig.extra["settle_s"] = round(kube.settle(), 1)
    ns = kube.namespace("webhook")
    try:
        with Watcher(kube, {ns}) as w:
            kube.create_migration(ns, "db")
            if not w.wait(lambda: f"{ns}/db" in w.ready, 120, "the DatabaseMigration Ready"):
                raise RuntimeError("the webhook figure's DatabaseMigration never became Ready")
        times, server, api_calls, api_seconds = _admissions(kube, core, ns, n)
    finally:
        kube.delete_namespaces([ns])
    with_label = fig.add("pod create (dry run) with the label", "s", times[True])
    without = fig.add("pod create (dry run) without the label", "s", times[False])
    fig.ratio("with / without label (p50)", with_label.label, without.label)
    if api_calls[True]:
        fig.add("webhook call as seen by the API server (mean)", "s", [api_seconds / api_calls[True]])
    fig.add("webhook server requests, labelled pods", "req", [server[True]])
    fig.add("webhook server requests, unlabelled pods", "req", [max(server[False], 0)])
    fig.target("unlabelled pods that reached the webhook server", server[False], 0)
    fig.target("unlabelled pods the API server sent to the webhook", api_calls[False], 0)
    fig.extra.update({"webhook_server_requests": server, "apiserver_webhook_calls": api_calls})
    if server[True] != n:
        fig.notes.append(f"labelled pods: {n} created, {server[True]:g} webhook server requests counted")
    fig.notes.append(
        "latency = the create call as the client sees it (admin, dry run: the whole admission chain "
        "including the webhook, nothing stored); the labelled pods point at a Ready DatabaseMigration, "
        "so each webhook call reads it from the API and lets the pod through ungated"
    )
    return fig
