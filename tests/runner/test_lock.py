"""The advisory lock's connection dies mid-run: the run stops before committing anything more."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbmigrate_runner.database import LOCK_KEY
from dbmigrate_runner.report import Outcome
from localcluster.postgres import PostgresServer
from tests.runner.conftest import Runner
from tests.support.migrations_gen import generate

pytestmark = pytest.mark.postgres

# Test fixture only: a migration that terminates the backend holding the runner's advisory lock
# (and waits until it is gone), then creates its table. Nothing like it ships in the product.
CLASSID, OBJID = (LOCK_KEY >> 32) & 0xFFFFFFFF, LOCK_KEY & 0xFFFFFFFF
TERMINATE = (
    "SELECT pg_terminate_backend(pid, 5000) FROM pg_locks WHERE locktype = 'advisory' AND granted "
    f"AND classid = {CLASSID} AND objid = {OBJID} AND objsubid = 1;"
)


def test_lock_connection_killed_mid_run_stops_before_the_next_commit(
    postgres: PostgresServer, database: str, tmp_path: Path, tool: str
) -> None:
    project = generate(tmp_path / "gen", 4, tool)
    folder = project.root / ("migrations/models" if tool == "aerich" else "genapp/migrations")
    killer = folder / f"{project.versions[1]}.py"
    create = 'CREATE TABLE "gen_1" ("id" SERIAL PRIMARY KEY);'
    sql, new_sql = (
        (create, f"{TERMINATE} {create}")
        if tool == "aerich"
        else (repr(create), repr(f"{TERMINATE} {create}"))
    )
    text = killer.read_text()
    assert sql in text
    killer.write_text(text.replace(sql, new_sql))

    runner = Runner(postgres, database, project.root, tmp_path, tool)
    result = runner("upgrade")
    assert result.rc == Outcome.MIGRATION_FAILED.exit_code, result.stdout + result.stderr
    error = result.report.error
    assert error is not None
    assert error.kind == "LockLost"
    assert error.migration == f"models:{project.versions[1]}"
    assert "lock" in error.message
    assert result.report.applied == [f"models:{project.versions[0]}"]
    # Neither the migration that ran when the lock went, nor any later one, committed.
    assert runner.applied() == project.versions[:1]
    assert not {"gen_1", "gen_2", "gen_3"} & set(runner.tables())
    assert result.report.apps["models"].versions == project.versions[:1]  # read back all the same

    rerun = runner("upgrade")  # the killer migration terminates the new lock holder again
    assert rerun.rc == Outcome.MIGRATION_FAILED.exit_code
    assert runner.applied() == project.versions[:1]


async def test_runner_connection_has_tcp_keepalives(postgres: PostgresServer, database: str) -> None:
    """The lock's session idles through every migration; the server probes it (seconds, not hours)."""
    from dbmigrate_runner.database import KEEPALIVES, connect
    from dbmigrate_runner.settings import parse_database_url

    conn = await connect(parse_database_url(postgres.url(database)), 10)
    try:
        shown = {name: await conn.fetchval(f"SELECT current_setting('{name}')") for name in KEEPALIVES}
        assert shown == KEEPALIVES  # as the server applies them, not its defaults (0 = the kernel's)
    finally:
        await conn.close()
