"""Pure planning logic: what to apply or revert, given disk, applied versions and a target."""

from __future__ import annotations

import pytest

from dbmigrate_runner.errors import ConfigError, DowngradeRefused
from dbmigrate_runner.planning import (
    ZERO,
    AppPlan,
    Target,
    plan_downgrade,
    plan_run,
    plan_upgrade,
    resolve_target,
    resolve_version,
    sort_versions,
    unfulfilled,
)

AER = ["0_20260101_init", "1_20260102_a", "2_20260103_b", "10_20260104_c"]
TOR = ["0001_init", "0002_a", "0003_b"]


def test_versions_sort_by_number_not_text() -> None:
    assert sort_versions(reversed(AER)) == AER
    assert sort_versions(["0002_a", "0001_init", "0003_b"]) == TOR


def test_upgrade_to_head_applies_what_is_missing_including_gaps() -> None:
    assert plan_upgrade("m", AER, [], None).to_apply == tuple(AER)
    assert plan_upgrade("m", AER, AER[:2], None).to_apply == tuple(AER[2:])
    assert plan_upgrade("m", AER, [AER[0], AER[2]], None).to_apply == (AER[1], AER[3])
    assert plan_upgrade("m", AER, AER, None).empty


def test_upgrade_to_target_stops_there() -> None:
    assert plan_upgrade("m", TOR, [], "0002_a").to_apply == ("0001_init", "0002_a")
    assert plan_upgrade("m", TOR, TOR[:2], "0002_a").empty


def test_upgrade_below_applied_is_refused_never_planned_as_rollback() -> None:
    with pytest.raises(DowngradeRefused, match="0003_b"):
        plan_upgrade("m", TOR, TOR, "0001_init")


def test_database_ahead_of_image_is_reported_not_rolled_back() -> None:
    plan = plan_upgrade("m", TOR[:2], TOR, None)
    assert plan.empty
    assert plan.unknown_applied == ("0003_b",)
    with pytest.raises(DowngradeRefused):
        plan_upgrade("m", TOR[:2], TOR, "0002_a")


def test_unknown_target_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        plan_upgrade("m", TOR, [], "0009_x")


def test_downgrade_reverts_newest_first_above_the_target() -> None:
    assert plan_downgrade("m", AER, AER, AER[1]).to_revert == (AER[3], AER[2])
    assert plan_downgrade("m", AER, AER, AER[3]).empty
    assert plan_downgrade("m", TOR, TOR, ZERO).to_revert == tuple(reversed(TOR))


def test_downgrade_to_a_pending_target_or_without_files_is_refused() -> None:
    with pytest.raises(ConfigError, match="not applied"):
        plan_downgrade("m", TOR, TOR[:1], "0003_b")
    with pytest.raises(ConfigError, match="not in this image"):
        plan_downgrade("m", TOR[:1], TOR, "0001_init")


def test_resolve_version_by_name_suffix_or_number() -> None:
    assert resolve_version("2_20260103_b.py", AER) == "2_20260103_b"
    assert resolve_version("10", AER) == "10_20260104_c"
    assert resolve_version("3", TOR) == "0003_b"
    assert resolve_version("7", TOR) is None
    with pytest.raises(ConfigError, match="ambiguous"):
        resolve_version("1", ["1_x", "0001_y"])


def test_resolve_target_forms() -> None:
    apps = {"models": TOR, "users": ["0001_u"]}
    assert resolve_target("models:0002_a", apps, allow_zero=False) == Target("models", "0002_a")
    assert resolve_target("models.0002_a", apps, allow_zero=False) == Target("models", "0002_a")
    assert resolve_target("0002_a", apps, allow_zero=False) == Target("models", "0002_a")
    assert resolve_target("users:zero", apps, allow_zero=True) == Target("users", ZERO)
    with pytest.raises(ConfigError, match="ambiguous"):
        resolve_target("1", apps, allow_zero=False)
    with pytest.raises(ConfigError, match="not among"):
        resolve_target("shop:1", apps, allow_zero=False)
    with pytest.raises(ConfigError, match="needs an app"):
        resolve_target("zero", apps, allow_zero=True)


def test_plan_run_moves_only_the_target_app() -> None:
    disk = {"models": TOR, "users": ["0001_u"]}
    plan = plan_run("upgrade", disk, {}, Target("models", "0001_init"))
    assert plan.apps == (AppPlan("models", to_apply=("0001_init",)), AppPlan("users"))
    assert plan_run("upgrade", disk, {}, None).apps[1].to_apply == ("0001_u",)
    assert plan_run("upgrade", disk, {"models": TOR, "users": ["0001_u"]}, None).empty


def test_unfulfilled_names_what_the_plan_promised_but_did_not_happen() -> None:
    plan = plan_run("upgrade", {"m": TOR, "u": ["0001_init"]}, {"m": ["0001_init"]}, None)
    assert unfulfilled("upgrade", plan, []) == ["m:0002_a", "m:0003_b", "u:0001_init"]
    assert unfulfilled("upgrade", plan, ["m:0002_a", "x:0001_dep", "u:0001_init"]) == ["m:0003_b"]
    assert unfulfilled("upgrade", plan, ["m:0002_a", "m:0003_b", "u:0001_init"]) == []
    back = plan_run("downgrade", {"m": TOR}, {"m": TOR}, Target("m", "0001_init"))
    assert unfulfilled("downgrade", back, ["m:0003_b"]) == ["m:0002_a"]
