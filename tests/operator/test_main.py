"""Settings from the environment, and what ``dbmigrate-operator`` hands to kopf."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import kopf
import pytest

from dbmigrate_operator import __main__ as entry
from dbmigrate_operator.settings import Settings


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
            "DBMIGRATE_APPLIED_VERSIONS_CAP": "10",
        }
    )
    assert s.namespaces == ("shop", "billing")
    assert s.resync_seconds == 60
    assert s.standalone is False
    assert s.liveness_endpoint is None
    assert s.log_format == "json"
    assert s.peering_name == "dbm"
    assert s.applied_versions_cap == 10


@pytest.mark.parametrize("value", ["soon", "1"])
def test_bad_resync_interval_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="DBMIGRATE_RESYNC_SECONDS"):
        Settings.from_env({"DBMIGRATE_RESYNC_SECONDS": value})


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
    assert kwargs["standalone"] is False
    assert kwargs["liveness_endpoint"] == "http://0.0.0.0:8080/healthz"
    registry = kopf.get_default_registry()
    ids = {h.id for h in registry._watching.get_all_handlers()}
    assert {"dbmigrate-migration", "dbmigrate-job", "dbmigrate-pod"} <= ids
    assert "release-gated-pods" in ids  # the gating part is wired in too


def test_replicas_get_distinct_peering_priorities_unless_one_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(kopf, "run", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(kopf, "configure", lambda **kwargs: None)
    monkeypatch.setenv("DBMIGRATE_STANDALONE", "false")
    entry.main([])
    entry.main([])
    assert calls[0]["peering_name"] == "dbmigrate-operator"
    assert calls[0]["priority"] != calls[1]["priority"]
    monkeypatch.setenv("DBMIGRATE_PEERING_PRIORITY", "7")
    entry.main([])
    assert calls[2]["priority"] == 7


def test_standalone_passes_no_peering_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    # kopf reads any peering_name as "peering is mandatory" and then pauses every watch until its
    # peering resources exist, even with standalone=True: the default one-replica operator never reacted.
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(kopf, "run", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(kopf, "configure", lambda **kwargs: None)
    monkeypatch.delenv("DBMIGRATE_STANDALONE", raising=False)
    monkeypatch.setenv("DBMIGRATE_PEERING_PRIORITY", "7")
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
    assert kopf_settings.peering.standalone is standalone
    assert kopf_settings.peering.mandatory is (not standalone)  # mandatory + standalone = paused forever
    if not standalone:
        assert kopf_settings.peering.name == "dbmigrate-operator"


def test_help_prints_usage_and_the_environment(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        entry.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: dbmigrate-operator")
    assert "DBMIGRATE_RESYNC_SECONDS" in out
