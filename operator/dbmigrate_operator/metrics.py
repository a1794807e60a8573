"""Prometheus metrics, served on a port of their own (``DBMIGRATE_METRICS_PORT``, default 8000; 0: off).

Label values are bounded: outcomes and reasons come from fixed enums, webhook decisions from a fixed
set; a DatabaseMigration's namespace and name appear only on the last-success gauge, which is removed
when the DatabaseMigration is. No Job or Pod names, ever. See docs/operations.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import prometheus_client
from prometheus_client import Counter, Gauge, Histogram

from dbmigrate_operator.jobstate import parse_time
from dbmigrate_runner.report import Outcome

logger = logging.getLogger("dbmigrate_operator")
RUNNING = "Running"  # status.lastRun.outcome while the Job runs (jobstate.RUNNING)

RECONCILES = Counter("dbmigrate_reconcile", "Reconcile passes of a DatabaseMigration.")
RECONCILE_ERRORS = Counter("dbmigrate_reconcile_errors", "Reconcile passes that failed with an error.")
RECONCILE_SECONDS = Histogram(
    "dbmigrate_reconcile_duration_seconds",
    "Duration of a reconcile pass (reads, decision, writes).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RUNS = Counter(
    "dbmigrate_runs",
    "Finished migration runs, by outcome (status.lastRun.outcome) and reason (the condition's).",
    ["outcome", "reason"],
)
RUN_SECONDS = Histogram(
    "dbmigrate_run_duration_seconds",
    "Duration of a finished migration run (Job start to completion).",
    ["outcome"],
    buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600),
)
LAST_SUCCESS = Gauge(
    "dbmigrate_last_success_timestamp_seconds",
    "Completion time of the last successful run of a DatabaseMigration (Unix seconds).",
    ["namespace", "name"],
)
GATED_PODS = Gauge("dbmigrate_gated_pods", "Pods held by the scheduling gate (as of the last sweep).")
GATED_OLDEST = Gauge(
    "dbmigrate_gated_pod_oldest_wait_seconds",
    "How long the oldest pod held by the scheduling gate has waited (as of the last sweep; 0: none).",
)
ADMISSIONS = Counter("dbmigrate_webhook_admissions", "Pod admissions by the gating webhook.", ["decision"])
ADMISSION_SECONDS = Histogram(
    "dbmigrate_webhook_admission_duration_seconds",
    "Time the gating webhook took to decide on a pod.",
    ["decision"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
QUEUE_DEPTH = Gauge(
    "dbmigrate_workqueue_depth", "DatabaseMigrations waiting for a reconcile pass (not yet started)."
)
WATCH_EVENTS = Counter(
    "dbmigrate_watch_events", "Watch events the operator received, by resource.", ["resource"]
)
DECISIONS = ("admitted", "gated", "denied", "failed_closed")
_last_success: dict[tuple[str, str], float] = {}  # what LAST_SUCCESS holds, per DatabaseMigration


def serve(port: int, addr: str = "0.0.0.0") -> bool:
    """Serve ``/metrics`` on ``port`` in a thread of its own; 0 disables. True when serving."""
    if port <= 0:
        return False
    prometheus_client.start_http_server(port, addr=addr)
    logger.info("serving Prometheus metrics on %s:%d/metrics", addr, port)
    return True


@contextmanager
def reconcile_pass(benign: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """Count and time one reconcile pass; an exception counts as an error unless ``benign`` (re-raised)."""
    RECONCILES.inc()
    start = time.monotonic()
    try:
        yield
    except benign:
        raise
    except Exception:
        RECONCILE_ERRORS.inc()
        raise
    finally:
        RECONCILE_SECONDS.observe(time.monotonic() - start)


def _true_reason(status: Mapping[str, Any]) -> str:
    for cond in status.get("conditions") or []:
        if isinstance(cond, Mapping) and cond.get("status") == "True":
            return str(cond.get("reason") or "")
    return ""


def status_seen(namespace: str, name: str, status: Mapping[str, Any]) -> None:
    """A DatabaseMigration's status as read or written: keep its last-success gauge current."""
    run = status.get("lastRun") or {}
    if run.get("outcome") != Outcome.SUCCEEDED.value:
        return
    completed = parse_time(run.get("completedAt"))
    if completed is None:
        return
    key = (namespace, name)
    if completed.timestamp() > _last_success.get(key, 0.0):  # never move back to an older run
        _last_success[key] = completed.timestamp()
        LAST_SUCCESS.labels(namespace, name).set(completed.timestamp())


def status_written(namespace: str, name: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """A status write succeeded: count the run it finished, if it finished one (once per Job)."""
    status_seen(namespace, name, new)
    before, after = old.get("lastRun") or {}, new.get("lastRun") or {}
    outcome = str(after.get("outcome") or "")
    if not outcome or outcome == RUNNING:
        return
    if (before.get("job"), before.get("outcome")) == (after.get("job"), outcome):
        return  # already recorded by an earlier write (this replica or another)
    RUNS.labels(outcome, _true_reason(new) or "Unknown").inc()
    started, completed = parse_time(after.get("startedAt")), parse_time(after.get("completedAt"))
    if started is not None and completed is not None and completed >= started:
        RUN_SECONDS.labels(outcome).observe((completed - started).total_seconds())


def forget(namespace: str, name: str) -> None:
    """The DatabaseMigration is gone: drop its series (bounded cardinality)."""
    if _last_success.pop((namespace, name), None) is not None:
        LAST_SUCCESS.remove(namespace, name)


def held_pods(pods: Iterable[Mapping[str, Any]], now: datetime | None = None) -> None:
    """The pods still held after a sweep: their number and the oldest one's wait."""
    now = now or datetime.now(UTC)
    held = list(pods)
    created = [t for p in held if (t := parse_time((p.get("metadata") or {}).get("creationTimestamp")))]
    GATED_PODS.set(len(held))
    GATED_OLDEST.set(max(((now - t).total_seconds() for t in created), default=0.0))


def admission(decision: str, seconds: float) -> None:
    ADMISSIONS.labels(decision).inc()
    ADMISSION_SECONDS.labels(decision).observe(seconds)


def watch_event(resource: str) -> None:
    WATCH_EVENTS.labels(resource).inc()
