"""Settings from the environment, and what ``dbmigrate-operator`` hands to kopf."""

from __future__ import annotations

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
    assert calls[0]["priority"] != calls[1]["priority"]
    monkeypatch.setenv("DBMIGRATE_PEERING_PRIORITY", "7")
    entry.main([])
    assert calls[2]["priority"] == 7


def test_help_prints_usage_and_the_environment(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        entry.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: dbmigrate-operator")
    assert "DBMIGRATE_RESYNC_SECONDS" in out
