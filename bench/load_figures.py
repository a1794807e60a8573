"""Figures 7-10 on the real local control plane: the operator's memory and CPU as the number of
DatabaseMigrations and the rest of the cluster grow (issue #12).

* memory: N DatabaseMigrations (1,000 in 50 namespaces by default) created at once against a freshly
  started operator: its peak RSS (``VmHWM``) and its steady RSS once every one is Ready and the
  event backlog is drained (mean of ``VmRSS`` samples over a window);
* react-loaded: figure 3's reaction times with those N Ready DatabaseMigrations present;
* noise: many Pods and Jobs that are none of the operator's business created and deleted in bulk
  (10,000 + 2,000 by default): the watch events and bytes that reached the operator, and its CPU
  against an idle window as long;
* soak: DatabaseMigrations created, changed (spec.image bumped: a new run) and deleted in a loop
  for ``--soak-minutes``; RSS sampled every ``--soak-sample`` seconds; growth = mean of the last
  window / mean of the first window after the warm-up.

Each figure runs alone (``python -m bench memory``); memory and react-loaded share their N
DatabaseMigrations when run together (the population is created once, by whichever comes first).
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from bench.cluster_figures import reactions
from bench.context import Context
from bench.core import FigureResult
from bench.kube import IMAGE, RUN_LABEL, ByteCounter, Kube, Operator, Watcher, metric_sum, start
from bench.lifecycle import watch_events
from dbmigrate_operator.constants import GROUP, PLURAL, VERSION

MEMORY_TARGET_MIB = 150.0  # issue #12: peak RSS with 1,000 DatabaseMigrations
SOAK_GROWTH_TARGET = 1.10  # issue #12: less than 10 % growth over the soak
NOISE_HOLD_GATE = (
    "bench.dbmigrate.dev/hold"  # keeps the bystander pods Pending: nothing schedules or runs them
)


class RssSampler:
    """``VmRSS`` of the operator every ``every`` seconds, in a thread, as (monotonic time, MiB)."""

    def __init__(self, kube: Kube, every: float) -> None:
        self.kube, self.every = kube, every
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(self.every + 5)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):  # the process is being replaced or is gone
                self.samples.append((time.monotonic(), self.kube.operator.rss_mb()))
            self._stop.wait(self.every)

    def between(self, t0: float, t1: float) -> list[float]:
        return [mb for t, mb in self.samples if t0 <= t < t1]


def growth(samples: list[tuple[float, float]], warmup: float, window: float) -> tuple[float, float, float]:
    """(first-window mean, last-window mean, last / first) of (t, value) samples.

    The first window starts ``warmup`` seconds after the first sample, the last one ends at the last
    sample; both are ``window`` seconds long. Pure, so the smoke tests check it without a cluster.
    """
    if not samples:
        raise ValueError("no samples")
    t_start, t_end = samples[0][0] + warmup, samples[-1][0]
    first = [v for t, v in samples if t_start <= t < t_start + window]
    last = [v for t, v in samples if t_end - window < t <= t_end]
    if not first or not last:
        raise ValueError("not enough samples for two windows")
    a, b = statistics.fmean(first), statistics.fmean(last)
    return a, b, b / a


# -- the population of Ready DatabaseMigrations (memory, react-loaded) ----------------------------


@dataclass
class Population:
    namespaces: list[str]
    keys: list[tuple[str, str]]
    created_s: float = 0.0
    all_jobs_s: float | None = None
    all_ready_s: float | None = None
    ready: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _population_size(ctx: Context) -> tuple[int, int]:
    n = int(ctx.options.get("crs") or (200 if ctx.quick else 1000))
    return n, min(n, 10 if ctx.quick else 50)


def population(ctx: Context, kube: Kube, on_created: Callable[[], None] | None = None) -> Population:
    """N Ready DatabaseMigrations across namespaces, created once per bench run (8 client threads)."""
    existing = ctx.options.get("_population")
    if isinstance(existing, Population):
        return existing
    n, n_ns = _population_size(ctx)
    names = [kube.namespace(f"pop{i}") for i in range(n_ns)]
    keys = [(names[i % n_ns], f"mig-{i}") for i in range(n)]
    pop = Population(names, keys)
    ctx.options["_population"] = pop
    with Watcher(kube, set(names)) as w:
        t0 = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda k: kube.create_migration(*k), keys))
        pop.created_s = time.monotonic() - t0
        if on_created:
            on_created()
        budget = float(ctx.options.get("scale_timeout") or (120 + n * 0.8))
        w.wait(lambda: len(w.ready) >= n, budget, "every CR of the population Ready")
        with w.lock:
            jobs, ready = dict(w.job_created), dict(w.ready)
    pop.ready = len(ready)
    if len(jobs) >= n:
        pop.all_jobs_s = max(jobs.values()) - t0
    if len(ready) >= n:
        pop.all_ready_s = max(ready.values()) - t0
    return pop


ACTIVITY = ("reconcile passes", *(f"watch events ({r})" for r in (PLURAL, "jobs", "pods")))


def _activity(op: Operator) -> tuple[float, ...]:
    """The operator's own counters of :data:`ACTIVITY` (its /metrics)."""
    events = [op.metric("dbmigrate_watch_events_total", {"resource": r}) for r in (PLURAL, "jobs", "pods")]
    return (op.metric("dbmigrate_reconcile_total"), *events)


def _drop_population(ctx: Context, kube: Kube) -> None:
    pop = ctx.options.pop("_population", None)
    if isinstance(pop, Population):
        kube.delete_namespaces(pop.namespaces)


def memory(ctx: Context) -> FigureResult:
    n, n_ns = _population_size(ctx)
    steady_s = 30.0 if ctx.quick else 120.0
    fig = FigureResult("memory", f"Operator memory with {n} DatabaseMigrations across {n_ns} namespaces")
    kube = start(ctx)
    _drop_population(ctx, kube)  # a population made by an earlier figure would not be measured
    fig.extra["settle_before_s"] = round(kube.settle(), 1)
    # A fresh process: VmHWM must be this figure's peak, not an earlier figure's.
    op = kube.restart_operator()
    time.sleep(5)
    idle_rss = op.rss_mb()
    cpu0 = op.cpu_seconds()
    with RssSampler(kube, 1.0) as rss:
        pop = population(ctx, kube)
        settle = kube.settle(timeout=600)
        cpu1 = op.cpu_seconds()
        counts1 = _activity(op)
        t_steady = time.monotonic()
        time.sleep(steady_s)
        steady = rss.between(t_steady, time.monotonic())
        cpu2, steady_elapsed = op.cpu_seconds(), time.monotonic() - t_steady
        counts2 = _activity(op)
        peak = op.peak_rss_mb()
        sampled_max = max((mb for _, mb in rss.samples), default=0.0)
    fig.add("operator RSS at start (no DatabaseMigrations)", "MiB", [idle_rss])
    fig.add("operator peak RSS (VmHWM), start → steady", "MiB", [peak])
    fig.add("operator highest sampled RSS (VmRSS, every 1 s)", "MiB", [sampled_max])
    if steady:
        fig.add(f"operator steady RSS, every one Ready ({steady_s:g} s of samples)", "MiB", steady)
    fig.add("create all CRs (8 client threads)", "s", [pop.created_s])
    if pop.all_ready_s is not None:
        fig.add("create start → every status Ready", "s", [pop.all_ready_s])
    fig.add("operator CPU, create start → quiet", "s", [cpu1 - cpu0])
    fig.add("last status Ready → operator quiet (5 s steps)", "s", [settle])
    # The steady CPU is the resync timer's: one reconcile per CR per period.
    fig.add("operator CPU while steady, per minute", "s", [(cpu2 - cpu1) / steady_elapsed * 60])
    # What the steady CPU is spent on: the timer's passes, and whatever the watches still deliver.
    for what, before, after in zip(ACTIVITY, counts1, counts2, strict=True):
        fig.add(f"  {what} while steady, per minute", "", [(after - before) / steady_elapsed * 60])
    fig.target(f"peak RSS with {n} DatabaseMigrations (MiB)", peak, MEMORY_TARGET_MIB)
    if pop.ready < n:
        fig.notes.append(f"INCOMPLETE: {pop.ready} of {n} DatabaseMigrations Ready")
    fig.extra.update(
        {
            "crs": n,
            "namespaces": n_ns,
            "resync_seconds": op.resync_seconds,
            "rss_samples": [[round(t, 1), round(mb, 1)] for t, mb in rss.samples],
        }
    )
    fig.notes.append(
        "a freshly started operator process; RSS from /proc/<pid>/status; resync timer "
        f"{op.resync_seconds:g} s; Jobs run by the node agent's stand-in runner"
    )
    return fig


def react_loaded(ctx: Context) -> FigureResult:
    n_react = ctx.repetitions(full=100, quick=20)
    pace = float(ctx.options.get("react_pace") or 0.6)
    n, n_ns = _population_size(ctx)
    fig = FigureResult(
        "react-loaded",
        f"Operator reaction times, {n_react} DatabaseMigrations applied {pace:g} s apart, "
        f"{n} other Ready ones present",
    )
    kube = start(ctx)
    pop = population(ctx, kube)
    if pop.ready < n:
        fig.notes.append(f"INCOMPLETE: {pop.ready} of the {n} present DatabaseMigrations Ready")
    fig.extra["settle_s"] = round(kube.settle(timeout=600), 1)
    reactions(kube, fig, n_react, pace, prefix="react-loaded")
    fig.extra.update({"present_crs": n, "namespaces": n_ns, "resync_seconds": kube.operator.resync_seconds})
    fig.notes.append(
        f"{n} Ready DatabaseMigrations in {n_ns} other namespaces, each reconciled by the resync timer "
        f"every {kube.operator.resync_seconds:g} s"
    )
    _drop_population(ctx, kube)
    return fig


# -- noise ----------------------------------------------------------------------------------------


def _apiserver_watch(kube: Kube) -> tuple[float, float]:
    """(events, bytes) the API server sent about Pods and Jobs to all its watchers (controllers...)."""
    text = kube.metrics()
    events = bytes_ = 0.0
    for resource in ("pods", "jobs"):
        events += metric_sum(text, "apiserver_watch_events_total", {"resource": resource})
        bytes_ += metric_sum(text, "apiserver_watch_events_sizes_sum", {"resource": resource})
    return events, bytes_


def _churn(kube: Kube, names: list[str], pods: int, jobs: int) -> dict[str, float]:
    """Create ``pods`` Pods and ``jobs`` Jobs that are none of the operator's business, then delete them.

    The Pods carry a scheduling gate of ours (nothing schedules or runs them: they stay Pending), the
    Jobs are suspended (the Job controller creates no Pods for them): the API server still stores,
    watches and deletes every one, which is all the operator could ever hear of.
    """
    from kubernetes import client

    core: Any = client.CoreV1Api(kube.api)
    batch: Any = client.BatchV1Api(kube.api)
    labels = {RUN_LABEL: kube.run_id, "app": "noise"}
    spec = {
        "containers": [{"name": "app", "image": "bench.dbmigrate.dev/noise:1"}],
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 0,
    }

    def pod(i: int) -> None:
        body = {
            "metadata": {"name": f"noise-{i}", "labels": labels},
            "spec": {**spec, "schedulingGates": [{"name": NOISE_HOLD_GATE}]},
        }
        core.create_namespaced_pod(names[i % len(names)], body, _preload_content=False)

    def job(i: int) -> None:
        body = {
            "metadata": {"name": f"noise-job-{i}", "labels": labels},
            "spec": {
                "suspend": True,
                "backoffLimit": 0,
                "template": {"metadata": {"labels": labels}, "spec": spec},
            },
        }
        batch.create_namespaced_job(names[i % len(names)], body, _preload_content=False)

    t0 = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(pod, range(pods)))
        list(pool.map(job, range(jobs)))
    created = time.monotonic() - t0
    for ns in names:
        batch.delete_collection_namespaced_job(
            ns, label_selector="app=noise", propagation_policy="Background"
        )
        core.delete_collection_namespaced_pod(ns, label_selector="app=noise", grace_period_seconds=0)
    deadline = time.monotonic() + 300 + pods / 20
    while time.monotonic() < deadline:
        left = sum(
            len(core.list_namespaced_pod(ns, label_selector="app=noise", limit=1).items)
            + len(batch.list_namespaced_job(ns, label_selector="app=noise", limit=1).items)
            for ns in names
        )
        if not left:
            break
        time.sleep(1)
    return {"create_s": created, "total_s": time.monotonic() - t0}


def _noise_pass(
    kube: Kube, wire: ByteCounter, bystanders: list[str], pods: int, jobs: int
) -> dict[str, float]:
    """One churn window and an idle window as long right after it, against the running operator."""
    op = kube.operator
    kube.settle()
    ev0, req0, cpu0, rb0 = watch_events(kube), kube.operator_requests(), op.cpu_seconds(), wire.received
    api_ev0, api_bytes0 = _apiserver_watch(kube)
    t0 = time.monotonic()
    churn = _churn(kube, bystanders, pods, jobs)
    churn_s = time.monotonic() - t0
    ev1, req1, cpu1, rb1 = watch_events(kube), kube.operator_requests(), op.cpu_seconds(), wire.received
    api_ev1, api_bytes1 = _apiserver_watch(kube)
    rss1 = op.rss_mb()
    # An idle window as long, right after: what the operator costs when nothing happens.
    time.sleep(churn_s)
    ev2, req2, cpu2, rb2 = watch_events(kube), kube.operator_requests(), op.cpu_seconds(), wire.received
    return {
        "churn_s": churn_s,
        "create_s": churn["create_s"],
        "api_events": api_ev1 - api_ev0,
        "api_mib": (api_bytes1 - api_bytes0) / 2**20,
        "events": (ev1["pods"] - ev0["pods"]) + (ev1["jobs"] - ev0["jobs"]),
        "idle_events": (ev2["pods"] - ev1["pods"]) + (ev2["jobs"] - ev1["jobs"]),
        "read_kib": (rb1 - rb0) / 1024,
        "idle_read_kib": (rb2 - rb1) / 1024,
        "requests": req1 - req0,
        "idle_requests": req2 - req1,
        "cpu": cpu1 - cpu0,
        "idle_cpu": cpu2 - cpu1,
        "rss_after": rss1,
        "peak_rss": op.peak_rss_mb(),
    }


def noise(ctx: Context) -> FigureResult:
    pods = int(ctx.options.get("noise_pods") or (1000 if ctx.quick else 10_000))
    jobs = int(ctx.options.get("noise_jobs") or (200 if ctx.quick else 2_000))
    n_crs = 10
    fig = FigureResult("noise", f"{pods} unrelated Pods and {jobs} unrelated Jobs created and deleted")
    kube = start(ctx)
    fig.extra["settle_before_s"] = round(kube.settle(timeout=600), 1)
    ours = kube.namespace("noise-ours")
    bystanders = [kube.namespace(f"noise{i}") for i in range(10)]
    passes: dict[str, dict[str, float]] = {}
    wire = ByteCounter(ctx.cluster.server)
    counted = wire.kubeconfig(kube.kubeconfig)
    try:
        with Watcher(kube, {ours}) as w:  # a few DatabaseMigrations of its own: the watches are in use
            for i in range(n_crs):
                kube.create_migration(ours, f"mig-{i}")
            w.wait(lambda: len(w.ready) >= n_crs, 120, "the noise figure's own DatabaseMigrations Ready")
        # The same churn against a fresh operator of each design, current one first.
        for variant, selectors in (("now", True), ("before", False)):
            kube.restart_operator(selectors=selectors, kubeconfig=counted)
            passes[variant] = _noise_pass(kube, wire, bystanders, pods, jobs)
    finally:
        kube.restart_operator(selectors=True)
        wire.close()
        kube.delete_namespaces([ours, *bystanders])
    now, before = passes["now"], passes["before"]
    rows = [
        (f"churn window ({pods} Pods + {jobs} Jobs created, then deleted)", "s", "churn_s"),
        ("  of which: creating them (16 client threads)", "s", "create_s"),
        ("Pod + Job watch events the API server sent (all watchers), churn", "events", "api_events"),
        ("  their size", "MiB", "api_mib"),
        ("Pod/Job watch events that reached the operator, churn", "events", "events"),
        ("Pod/Job watch events that reached the operator, idle window", "events", "idle_events"),
        ("bytes the API server sent the operator, churn", "KiB", "read_kib"),
        ("bytes the API server sent the operator, idle window", "KiB", "idle_read_kib"),
        ("operator API requests, churn", "req", "requests"),
        ("operator API requests, idle window", "req", "idle_requests"),
        ("operator CPU, churn", "s", "cpu"),
        ("operator CPU, idle window", "s", "idle_cpu"),
        ("operator RSS after the churn", "MiB", "rss_after"),
        ("operator peak RSS (VmHWM)", "MiB", "peak_rss"),
    ]
    for label, unit, key in rows:
        fig.add(label, unit, [now[key]])
    for label, unit, key in rows:
        if key not in ("churn_s", "create_s", "api_events", "api_mib", "idle_events"):
            fig.add(f"previous design (no server-side selectors): {label.strip()}", unit, [before[key]])
    fig.target("Pod/Job watch events from unrelated churn", now["events"], 0)
    if now["idle_cpu"] > 0:
        # /proc counts CPU in 10 ms ticks and the timer's passes do not fall evenly into two windows:
        # "at its idle level" is read as at most 1.5 × the idle window's CPU.
        fig.target("operator CPU, churn / idle window", now["cpu"] / now["idle_cpu"], 1.5)
    if before["idle_cpu"] > 0:
        fig.target(
            "previous design: operator CPU, churn / idle window", before["cpu"] / before["idle_cpu"], None
        )
    if before["events"] == 0:
        fig.notes.append(
            "the previous design received no churn events either: the bench's switch (kube.PREVIOUS_DESIGN) "
            "no longer reaches the operator's watches, so that comparison is void"
        )
    fig.extra.update(
        {
            "pods": pods,
            "jobs": jobs,
            "own_crs": n_crs,
            "passes": passes,
            "resync_seconds": kube.operator.resync_seconds,
        }
    )
    fig.notes.append(
        f"bystander Pods held Pending by a scheduling gate, Jobs suspended, in 10 namespaces; {n_crs} Ready "
        "DatabaseMigrations of the operator's own meanwhile; watch events from its "
        "dbmigrate_watch_events_total, bytes counted by a TCP relay between the operator and the API server "
        "(TLS included), requests from its FlowSchema; each "
        "design measured against a freshly started operator, the previous one (kopf watching every Pod and "
        "Job, as before a5c7bd0) switched on by the bench alone"
    )
    return fig


# -- soak -----------------------------------------------------------------------------------------


def _ready(obj: dict[str, Any]) -> bool:
    status, meta = obj.get("status") or {}, obj["metadata"]
    return status.get("observedGeneration") == meta.get("generation") and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )


def _converged(custom: Any, names: list[str], timeout: float) -> tuple[int, int]:
    """(DatabaseMigrations present, of which Ready for their current spec), waiting up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        items = [
            o
            for ns in names
            for o in custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
        ]
        ready = sum(1 for o in items if _ready(o))
        if ready == len(items) or time.monotonic() > deadline:
            return len(items), ready
        time.sleep(2)


def soak(ctx: Context) -> FigureResult:
    minutes = float(ctx.options.get("soak_minutes") or (3 if ctx.quick else 30))
    every = float(ctx.options.get("soak_sample") or (5 if ctx.quick else 10))
    slots = 20 if ctx.quick else 40
    step = 1.5  # seconds between two actions: each slot acts every slots × step seconds
    duration = minutes * 60
    warmup, window = 0.2 * duration, 0.2 * duration
    fig = FigureResult(
        "soak", f"Churn soak, {minutes:g} minutes: DatabaseMigrations created, changed, deleted in a loop"
    )
    kube = start(ctx)
    _drop_population(ctx, kube)
    fig.extra["settle_before_s"] = round(kube.settle(timeout=600), 1)
    op = kube.restart_operator()
    from kubernetes import client

    custom: Any = client.CustomObjectsApi(kube.api)
    tags = 16
    for t in range(tags):
        kube.map_runner(f"{IMAGE.rsplit(':', 1)[0]}:soak{t}")
    names = [kube.namespace(f"soak{i}") for i in range(4)]
    # Each slot cycles: create → bump spec.image → bump again → delete (then a new generation).
    phase = [0] * slots
    gen = [0] * slots
    counts = {"create": 0, "bump": 0, "delete": 0, "errors": 0}
    image_no = 0
    cpu0, runs0 = op.cpu_seconds(), op.metric("dbmigrate_runs_total")
    try:
        with RssSampler(kube, every) as rss:
            t0 = time.monotonic()
            i = 0
            while time.monotonic() - t0 < duration:
                s = i % slots
                ns, name = names[s % len(names)], f"soak-{s}-{gen[s]}"
                image_no += 1
                image = f"{IMAGE.rsplit(':', 1)[0]}:soak{image_no % tags}"
                try:
                    if phase[s] == 0:
                        kube.create_migration(ns, name, image)
                        counts["create"] += 1
                    elif phase[s] in (1, 2):
                        custom.patch_namespaced_custom_object(
                            GROUP, VERSION, ns, PLURAL, name, {"spec": {"image": image}}
                        )
                        counts["bump"] += 1
                    else:
                        custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
                        counts["delete"] += 1
                        gen[s] += 1
                except Exception as exc:  # counted, never fatal: the soak measures memory, not luck
                    counts["errors"] += 1
                    fig.extra.setdefault("error_samples", []).append(
                        f"{type(exc).__name__}: {str(exc)[:200]}"
                    )
                phase[s] = (phase[s] + 1) % 4
                i += 1
                time.sleep(max(0.0, t0 + i * step - time.monotonic()))
            elapsed = time.monotonic() - t0
            cpu1, runs1 = op.cpu_seconds(), op.metric("dbmigrate_runs_total")
        first, last, ratio = growth(rss.samples, warmup, window)
        # Whatever is left must still converge: the operator did not fall behind or wedge.
        left, converged = _converged(custom, names, timeout=180)
    finally:
        kube.delete_namespaces(names)
    fig.add("soak duration", "s", [elapsed])
    fig.add("RSS samples", "MiB", [mb for _, mb in rss.samples])
    fig.add(f"RSS, first window after warm-up ({window:g} s after {warmup:g} s)", "MiB", [first])
    fig.add(f"RSS, last window ({window:g} s)", "MiB", [last])
    fig.add("operator peak RSS (VmHWM)", "MiB", [op.peak_rss_mb()])
    fig.add("operator CPU over the soak", "s", [cpu1 - cpu0])
    fig.add("runs finished (dbmigrate_runs_total)", "runs", [runs1 - runs0])
    for what in ("create", "bump", "delete"):
        fig.add(
            f"DatabaseMigrations {what}d" if what != "bump" else "spec.image bumps", "ops", [counts[what]]
        )
    fig.target("RSS growth: last window / first window", ratio, SOAK_GROWTH_TARGET)
    fig.target("DatabaseMigrations left at the end and not Ready within 180 s", left - converged, 0)
    if counts["errors"]:
        fig.notes.append(f"client errors during the loop: {counts['errors']}")
    fig.extra.update(
        {
            "minutes": minutes,
            "sample_every_s": every,
            "slots": slots,
            "step_s": step,
            "counts": counts,
            "left_at_end": left,
            "left_ready": converged,
            "rss_samples": [[round(t - rss.samples[0][0], 1), round(mb, 1)] for t, mb in rss.samples],
            "resync_seconds": op.resync_seconds,
        }
    )
    fig.notes.append(
        f"{slots} slots in 4 namespaces, one action every {step:g} s, each slot cycling create → "
        "image bump → image bump → delete; a freshly started operator; RSS (VmRSS) sampled every "
        f"{every:g} s; warm-up {warmup:g} s excluded"
    )
    return fig
