"""The Prometheus metrics: what counts a run (once), bounded series, the port setting, the server."""

from __future__ import annotations

import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from dbmigrate_operator import metrics
from dbmigrate_operator.settings import Settings
from localcluster.cluster import free_port


def value(sample: str, /, **labels: str) -> float:
    return REGISTRY.get_sample_value(sample, labels) or 0.0


def status(job: str, outcome: str, reason: str, started: str = "", completed: str = "") -> dict[str, Any]:
    run: dict[str, Any] = {"job": job, "outcome": outcome}
    if started:
        run["startedAt"] = started
    if completed:
        run["completedAt"] = completed
    return {"lastRun": run, "conditions": [{"type": "Ready", "status": "True", "reason": reason}]}


def test_a_finished_run_is_counted_once_with_outcome_reason_and_duration() -> None:
    runs = ("dbmigrate_runs_total", {"outcome": "MigrationFailed", "reason": "MigrationFailed"})
    before, durations = (
        value(runs[0], **runs[1]),
        value("dbmigrate_run_duration_seconds_count", outcome="MigrationFailed"),
    )
    running = status("m-1", "Running", "JobRunning", started="2026-01-01T00:00:00Z")
    failed = status(
        "m-1", "MigrationFailed", "MigrationFailed", "2026-01-01T00:00:00Z", "2026-01-01T00:00:42Z"
    )
    metrics.status_written("ns", "m", {}, running)  # started: nothing finished yet
    assert value(runs[0], **runs[1]) == before
    metrics.status_written("ns", "m", running, failed)
    metrics.status_written("ns", "m", failed, failed)  # the next write of the same run
    assert value(runs[0], **runs[1]) == before + 1
    assert value("dbmigrate_run_duration_seconds_count", outcome="MigrationFailed") == durations + 1
    assert value("dbmigrate_last_success_timestamp_seconds", namespace="ns", name="m") == 0  # never succeeded


def test_last_success_follows_the_newest_success_and_goes_with_the_resource() -> None:
    t1 = datetime(2026, 1, 1, tzinfo=UTC)
    t2 = t1 + timedelta(hours=1)
    ok1 = status("a-1", "Succeeded", "Applied", completed=t1.isoformat())
    ok2 = status("a-2", "Succeeded", "Applied", completed=t2.isoformat())
    metrics.status_written("shop", "a", {}, ok2)
    metrics.status_seen("shop", "a", ok1)  # an older status read late never moves it back
    assert value("dbmigrate_last_success_timestamp_seconds", namespace="shop", name="a") == t2.timestamp()
    metrics.forget("shop", "a")
    assert (
        REGISTRY.get_sample_value(
            "dbmigrate_last_success_timestamp_seconds", {"namespace": "shop", "name": "a"}
        )
        is None
    )
    metrics.forget("shop", "a")  # twice: harmless


def test_reconcile_pass_counts_errors_and_time() -> None:
    total, errors = value("dbmigrate_reconcile_total"), value("dbmigrate_reconcile_errors_total")
    with metrics.reconcile_pass():
        pass
    with pytest.raises(RuntimeError), metrics.reconcile_pass():
        raise RuntimeError("boom")
    with pytest.raises(LookupError), metrics.reconcile_pass(benign=(LookupError,)):
        raise KeyError("not an error of the pass")
    assert value("dbmigrate_reconcile_total") == total + 3
    assert value("dbmigrate_reconcile_errors_total") == errors + 1


def test_held_pods_and_the_oldest_wait() -> None:
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    pods = [{"metadata": {"creationTimestamp": (now - timedelta(seconds=s)).isoformat()}} for s in (5, 90)]
    metrics.held_pods(pods, now)
    assert value("dbmigrate_gated_pods") == 2
    assert value("dbmigrate_gated_pod_oldest_wait_seconds") == 90
    metrics.held_pods([], now)
    assert value("dbmigrate_gated_pods") == 0
    assert value("dbmigrate_gated_pod_oldest_wait_seconds") == 0


def test_metrics_port_setting() -> None:
    assert Settings().metrics_port == 8000
    assert Settings.from_env({"DBMIGRATE_METRICS_PORT": "0"}).metrics_port == 0
    assert Settings.from_env({"DBMIGRATE_METRICS_PORT": "9100"}).metrics_port == 9100
    for bad in ("-1", "http", "70000", "80.5"):
        with pytest.raises(ValueError, match="DBMIGRATE_METRICS_PORT"):
            Settings.from_env({"DBMIGRATE_METRICS_PORT": bad})


def test_serve_exposes_metrics_and_zero_disables() -> None:
    assert metrics.serve(0) is False
    port = free_port()
    assert metrics.serve(port, "127.0.0.1") is True
    metrics.admission("gated", 0.01)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    assert 'dbmigrate_webhook_admissions_total{decision="gated"}' in text
    assert "dbmigrate_webhook_admission_duration_seconds_bucket" in text
