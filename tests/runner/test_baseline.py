"""--baseline: adopt a database whose schema already holds the first migration(s), aerich and tortoise
(Alembic: tests/runner/test_alembic.py)."""

from __future__ import annotations

import pytest

from tests.runner.conftest import SHOP_TABLE, SHOP_VERSIONS, Runner

pytestmark = pytest.mark.postgres


def schema_without_records(runner: Runner, upto: str) -> None:
    """The first migrations' schema, but no tracking table: what a hand-made database looks like."""
    assert runner("upgrade", "--target", upto).rc == 0
    runner.postgres.psql(runner.database, f"DROP TABLE {SHOP_TABLE[runner.tool]}")
    assert runner.applied() == []


def test_baseline_adopts_existing_schema(shop: Runner) -> None:
    versions = SHOP_VERSIONS[shop.tool]
    # Two migrations: aerich's init creates its tables IF NOT EXISTS, the second one fails.
    schema_without_records(shop, versions[1])

    plain = shop("upgrade")
    assert plain.rc == 5, plain.stdout
    assert plain.report.error is not None
    assert "already exists" in plain.report.error.message
    # aerich committed its (IF NOT EXISTS) init before failing: back to "no records".
    shop.postgres.psql(shop.database, f"DROP TABLE IF EXISTS {SHOP_TABLE[shop.tool]}")

    adopted = shop("upgrade", "--baseline", versions[1])
    assert adopted.rc == 0, adopted.stdout + adopted.stderr
    assert adopted.report.applied == [f"models:{v}" for v in versions[2:]]
    assert adopted.report.apps["models"].versions == versions
    assert shop.applied() == versions
    assert adopted.events("baseline.recorded")

    # The spec keeps its baseline: later runs find it recorded and go on.
    again = shop("upgrade", "--baseline", versions[1])
    assert again.rc == 0, again.stdout
    assert again.report.applied == []


def test_baseline_refused_when_table_records_other_migrations(shop: Runner) -> None:
    versions = SHOP_VERSIONS[shop.tool]
    assert shop("upgrade", "--target", versions[0]).rc == 0
    refused = shop("upgrade", "--baseline", versions[1])
    assert refused.rc == 2, refused.stdout
    assert refused.report.error is not None
    assert refused.report.error.message.startswith(
        f"baseline refused: {SHOP_TABLE[shop.tool]} already records 1 migrations"
    )
    assert shop.applied() == versions[:1]


def test_baseline_up_to_head_runs_nothing(shop: Runner) -> None:
    versions = SHOP_VERSIONS[shop.tool]
    schema_without_records(shop, versions[-1])
    adopted = shop("upgrade", "--baseline", versions[-1])
    assert adopted.rc == 0, adopted.stdout + adopted.stderr
    assert adopted.report.applied == []
    assert shop.applied() == versions
