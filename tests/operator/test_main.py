"""Settings from the environment, and what ``dbmigrate-operator`` hands to kopf."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import kopf
import pytest

from dbmigrate_operator import __main__ as entry
from dbmigrate_operator import metrics
from dbmigrate_operator.settings import Settings


@pytest.fixture(autouse=True)
def served(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """main() would serve metrics on :8000 in the test process: record the port instead."""
    ports: list[int] = []
    monkeypatch.setattr(metrics, "serve", lambda port, addr="0.0.0.0": bool(ports.append(port)))
    return ports


def test_settings_defaults_and_environment() -> None:
    assert Settings.from_env({}) == Settings()
    s = Settings.from_env(
        {
            "DBMIGRATE_NAMESPACES": " shop, billing ,,",
            "DBMIGRATE_RESYNC_SECONDS": "60",
            "DBMIGRATE_STANDALONE": "false",
            "DBMIGRATE_LIVENESS_ENDPOINT": "",
            "DBMIGRATE_LOG_FORMAT": "JSON",
            "DBMIGRATE_PEERING_NAME": "dbm",
            "DBMIGRATE_OPERATOR_NAMESPACE": "ops",
            "DBMIGRATE_LEASE_SECONDS": "20",
            "DBMIGRATE_APPLIED_VERSIONS_CAP": "10",
            "DBMIGRATE_WORKERS": "8",
        }
    )
    assert s.namespaces == ("shop", "billing")
    assert s.resync_seconds == 60
    assert s.standalone is False
    assert s.liveness_endpoint is None
    assert s.log_format == "json"
    assert s.lease_name == "dbm"  # the chart's variable still names the Lease
    assert s.lease_namespace == "ops"
    assert s.lease_seconds == 20
    assert Settings.from_env({"DBMIGRATE_LEASE_NAME": "x", "DBMIGRATE_PEERING_NAME": "y"}).lease_name == "x"
    assert s.applied_versions_cap == 10
    assert s.workers == 8


@pytest.mark.parametrize("value", ["soon", "1"])
def test_bad_resync_interval_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="DBMIGRATE_RESYNC_SECONDS"):
        Settings.from_env({"DBMIGRATE_RESYNC_SECONDS": value})


@pytest.mark.parametrize(
    ("value", "says"), [("0", "at least 1"), ("2.5", "whole number"), ("many", "number")]
)
def test_bad_worker_count_is_refused(value: str, says: str) -> None:
    with pytest.raises(ValueError, match=f"DBMIGRATE_WORKERS must be .*{says}"):
        Settings.from_env({"DBMIGRATE_WORKERS": value})


def test_main_runs_kopf_with_both_parts_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(kopf, "run", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(kopf, "configure", lambda **kwargs: None)
    monkeypatch.setenv("DBMIGRATE_NAMESPACES", "shop")
    monkeypatch.setenv("DBMIGRATE_STANDALONE", "false")
    entry.main()
    (kwargs,) = calls
    assert kwargs["namespaces"] == ("shop",)
    assert kwargs["clusterwide"] is False
    assert kwargs["standalone"] is True  # kopf never peers: our Lease decides who writes
    assert kwargs["liveness_endpoint"] == "http://0.0.0.0:8080/healthz"
    registry = kopf.get_default_registry()
    ids = {h.id for h in registry._watching.get_all_handlers()}
    assert {"dbmigrate-migration", "dbmigrate-job", "dbmigrate-pod"} <= ids
    assert "release-gated-pods" in ids  # the gating part is wired in too


def test_main_serves_metrics_on_their_own_port(monkeypatch: pytest.MonkeyPatch, served: list[int]) -> None:
    monkeypatch.setattr(kopf, "run", lambda **kwargs: None)
    monkeypatch.setattr(kopf, "configure", lambda **kwargs: None)
    monkeypatch.setenv("DBMIGRATE_METRICS_PORT", "9100")
    entry.main([])
    assert served == [9100]


@pytest.mark.parametrize("standalone", ["true", "false"])
def test_kopf_never_gets_peering_arguments(monkeypatch: pytest.MonkeyPatch, standalone: str) -> None:
    # kopf reads any peering_name as "peering is mandatory" and then pauses every watch until its
    # peering resources exist; and kopf's pause stops only kopf's handlers, never our own tasks.
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(kopf, "run", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(kopf, "configure", lambda **kwargs: None)
    monkeypatch.setenv("DBMIGRATE_STANDALONE", standalone)
    entry.main([])
    (kwargs,) = calls
    assert kwargs["standalone"] is True
    assert "peering_name" not in kwargs
    assert "priority" not in kwargs


@pytest.mark.parametrize("standalone", [True, False])
async def test_kopf_itself_reads_our_arguments_as_meant(standalone: bool) -> None:
    """Hand the arguments to kopf's own setup and read back its peering decision (no cluster needed)."""
    settings = dataclasses.replace(Settings(), standalone=standalone, liveness_endpoint=None)
    kopf_settings = kopf.OperatorSettings()
    tasks = await kopf.spawn_tasks(
        settings=kopf_settings, registry=kopf.OperatorRegistry(), **entry.kopf_run_kwargs(settings)
    )
    for task in tasks:  # spawned but never run: stop them before they touch anything
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert kopf_settings.peering.standalone is True  # never paused by kopf: every replica watches
    assert kopf_settings.peering.mandatory is False


def test_help_prints_usage_and_the_environment(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        entry.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: dbmigrate-operator")
    assert "DBMIGRATE_RESYNC_SECONDS" in out
