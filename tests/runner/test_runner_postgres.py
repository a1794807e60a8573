"""The runner as a subprocess against real PostgreSQL, for both tools, on the example shop app."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest

import dbmigrate_runner
from dbmigrate_runner.report import MAX_BYTES, Outcome
from tests.runner.conftest import FIXTURES, SHOP_VERSIONS, Runner, finish

pytestmark = pytest.mark.postgres


def test_fresh_database_bootstraps_and_upgrades_to_head(shop: Runner, tool: str) -> None:
    versions = SHOP_VERSIONS[tool]
    result = shop("upgrade")
    assert result.rc == 0, result.stdout + result.stderr
    report = result.report
    assert report.outcome is Outcome.SUCCEEDED
    assert report.applied == [f"models:{v}" for v in versions]
    assert report.apps["models"].versions == versions
    assert report.apps["models"].current == versions[-1]
    assert report.apps["models"].count == 3
    assert shop.applied() == versions
    assert "description" in shop.columns("product")
    assert "bio" in shop.columns("customer")
    assert {"order", "review"} <= set(shop.tables())
    assert all(rec["level"] in {"info", "warning", "debug"} for rec in result.logs())


def test_upgrade_to_target_then_head_and_noop(shop: Runner, tool: str) -> None:
    versions = SHOP_VERSIONS[tool]
    first = shop("upgrade", "--target", "1")  # by number: aerich "1_…", tortoise "0001_…"
    expected_first = versions[1:2] if tool == "aerich" else versions[:1]
    assert first.rc == 0, first.stdout
    assert shop.applied() == versions[: versions.index(expected_first[0]) + 1]
    assert first.report.apps["models"].current == expected_first[0]

    second = shop("upgrade", "--target", f"models:{versions[1]}")
    assert second.rc == 0
    assert shop.applied() == versions[:2]

    head = shop("upgrade")
    assert head.rc == 0
    assert head.report.applied == [f"models:{versions[2]}"]

    again = shop("upgrade")
    assert again.rc == 0
    assert again.report.applied == []
    assert again.report.applied_count == 0
    assert again.report.apps == head.report.apps
    assert again.events("plan.noop")
    assert shop.applied() == versions


def test_upgrade_refuses_to_go_below_applied(shop: Runner, tool: str) -> None:
    versions = SHOP_VERSIONS[tool]
    assert shop("upgrade").rc == 0
    result = shop("upgrade", "--target", versions[0])
    assert result.rc == Outcome.DOWNGRADE_REFUSED.exit_code == 6
    assert result.report.outcome is Outcome.DOWNGRADE_REFUSED
    assert shop.applied() == versions
    assert "bio" in shop.columns("customer")


def test_downgrade_to_explicit_target(shop: Runner, tool: str) -> None:
    versions = SHOP_VERSIONS[tool]
    assert shop("upgrade").rc == 0
    result = shop("downgrade", "--target", versions[1])
    assert result.rc == 0, result.stdout
    assert result.report.applied == [f"models:{versions[2]}"]
    assert result.report.apps["models"].current == versions[1]
    assert shop.applied() == versions[:2]
    assert "bio" not in shop.columns("customer")
    assert "review" not in shop.tables()
    # and forward again
    assert shop("upgrade").rc == 0
    assert shop.applied() == versions


def test_downgrade_without_target_is_a_config_error(shop: Runner) -> None:
    result = shop("downgrade")
    assert result.rc == Outcome.CONFIG_ERROR.exit_code
    assert "--target" in result.report.error.message  # type: ignore[union-attr]


def test_failing_migration_keeps_earlier_ones_and_leaves_nothing_behind(shop_copy: Runner, tool: str) -> None:
    src = FIXTURES / "failing" / tool
    dst = shop_copy.cwd / ("migrations/models" if tool == "aerich" else "shop/migrations")
    for file in src.glob("*.py"):
        shutil.copy(file, dst / file.name)
    broken = next(src.glob("*.py")).stem
    result = shop_copy("upgrade")
    assert result.rc == Outcome.MIGRATION_FAILED.exit_code == 5
    report = result.report
    assert report.outcome is Outcome.MIGRATION_FAILED
    assert report.error is not None
    assert report.error.migration == f"models:{broken}"
    assert 'relation "no_such_table" does not exist' in report.error.message
    assert report.error.kind == "UndefinedTableError"
    assert report.applied == [f"models:{v}" for v in SHOP_VERSIONS[tool]]
    assert report.apps["models"].versions == SHOP_VERSIONS[tool]
    assert shop_copy.applied() == SHOP_VERSIONS[tool]
    assert "broken" not in shop_copy.columns("product")


def test_five_runners_at_once_apply_each_migration_exactly_once(shop: Runner, tool: str) -> None:
    started = [shop.start("upgrade", DBMIGRATE_LOCK_TIMEOUT="60") for _ in range(5)]
    results = [finish(proc, report, shop.postgres.password) for proc, report in started]
    assert [r.rc for r in results] == [0] * 5, [r.stdout for r in results if r.rc]
    applied = [entry for r in results for entry in r.report.applied]
    assert sorted(applied) == sorted(f"models:{v}" for v in SHOP_VERSIONS[tool])
    assert shop.applied() == SHOP_VERSIONS[tool]
    assert all(r.report.apps["models"].versions == SHOP_VERSIONS[tool] for r in results)


def test_status_is_read_only(shop: Runner, tool: str) -> None:
    versions = SHOP_VERSIONS[tool]
    fresh = shop("status")
    assert fresh.rc == 0
    assert shop.tables() == []  # no bootstrap, nothing created
    [line] = fresh.events("status")
    assert line["pending"] == versions
    assert line["applied"] == []

    assert shop("upgrade", "--target", versions[0]).rc == 0
    before = shop.postgres.psql(
        shop.database, f"SELECT * FROM {'aerich' if tool == 'aerich' else 'tortoise_migrations'}"
    )
    status = shop("status")
    assert status.rc == 0
    [line] = status.events("status")
    assert line["applied"] == versions[:1]
    assert line["pending"] == versions[1:]
    assert status.report.apps["models"].current == versions[0]
    after = shop.postgres.psql(
        shop.database, f"SELECT * FROM {'aerich' if tool == 'aerich' else 'tortoise_migrations'}"
    )
    assert before == after


def test_kill_inside_the_transaction_leaves_nothing_of_that_migration(shop: Runner, tool: str) -> None:
    """Killed after a migration's DDL ran, right before its tracking row is written: the DDL and the
    row commit together or not at all. (Upstream ``tortoise migrate`` writes the row after the commit,
    so there the column would survive without its row and the rerun would fail with "already exists".)"""
    versions = SHOP_VERSIONS[tool]
    crashed = shop("upgrade", faults=True, FAULT_KILL_BEFORE_RECORD=f"models:{versions[1]}")
    assert crashed.rc == -signal.SIGKILL, crashed.stdout + crashed.stderr
    assert crashed.events("migration.apply")[-1]["migration"] == f"models:{versions[1]}"
    assert shop.applied() == versions[:1]
    assert "description" not in shop.columns("product")
    assert "order" not in shop.tables()
    rerun = shop("upgrade")
    assert rerun.rc == 0, rerun.stdout
    assert rerun.report.applied == [f"models:{v}" for v in versions[1:]]
    assert shop.applied() == versions
    assert "description" in shop.columns("product")


def test_the_shipped_runner_has_no_test_hooks(shop: Runner, tool: str) -> None:
    """Fault injection lives in tests/runner/faults; the product ignores the old crash variable."""
    versions = SHOP_VERSIONS[tool]
    result = shop("upgrade", DBMIGRATE_TEST_CRASH_AFTER=f"models:{versions[0]}")
    assert result.rc == 0, result.stdout + result.stderr
    assert shop.applied() == versions
    package = Path(dbmigrate_runner.__file__).parent
    hooks = [str(f) for f in package.rglob("*.py") if "DBMIGRATE_TEST" in f.read_text(encoding="utf-8")]
    assert hooks == []


def test_no_op_run_imports_neither_tortoise_nor_aerich(shop: Runner) -> None:
    from tests.runner.conftest import start

    assert shop("upgrade").rc == 0
    report = shop.report_path()
    proc = start(["upgrade"], shop.env(report), shop.cwd, python_flags=("-X", "importtime"))
    result = finish(proc, report, shop.postgres.password)
    assert result.rc == 0
    imported = {
        line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line
    }
    assert "asyncpg" in imported
    assert "tortoise" not in imported
    assert "aerich" not in imported


def test_report_stays_under_the_limit_with_500_migrations(postgres, database, tmp_path, tool: str) -> None:  # type: ignore[no-untyped-def]
    from tests.support.migrations_gen import generate

    project = generate(tmp_path / "gen", 500, tool)
    runner = Runner(postgres, database, project.root, tmp_path, tool)
    result = runner("upgrade")
    assert result.rc == 0, result.stdout[-2000:]
    assert len(result.report_text.encode()) <= MAX_BYTES
    report = result.report
    state = report.apps["models"]
    assert state.count == 500
    assert state.current == project.versions[-1]
    assert state.omitted + len(state.versions) == 500
    assert state.versions == project.versions[-len(state.versions) :]
    assert report.applied_count == 500
    assert len(runner.applied()) == 500


def test_downgrade_to_zero(shop: Runner, tool: str) -> None:
    versions = SHOP_VERSIONS[tool]
    assert shop("upgrade").rc == 0
    result = shop("downgrade", "--target", "zero")
    reverted = [f"models:{v}" for v in reversed(versions)]
    if tool == "tortoise":
        assert result.rc == 0, result.stdout
        assert result.report.applied == reverted
        assert shop.applied() == []
        assert shop.tables() == ["tortoise_migrations"]
    else:
        # `aerich init-db` writes an empty downgrade for the first migration: it cannot be reverted.
        assert result.rc == Outcome.MIGRATION_FAILED.exit_code
        assert result.report.applied == reverted[:2]
        assert result.report.error is not None
        assert result.report.error.migration == reverted[2]
        assert "no downgrade SQL" in result.report.error.message
        assert shop.applied() == versions[:1]
