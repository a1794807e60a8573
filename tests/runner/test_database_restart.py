"""PostgreSQL restarted (fast shutdown: every session ended) at each point of a run, on a server of
the test's own: while the runner waits for the advisory lock and between two migrations it
reconnects, takes the lock again and finishes; inside a migration the run stops with
DatabaseUnreachable (exit 3, the Job's retry resumes it) and nothing of that migration committed."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dbmigrate_runner.report import Outcome
from localcluster.postgres import PASSWORD, Instance, PostgresServer, lock_held_elsewhere, start_instance
from tests.runner.conftest import REPO, Runner, finish, wait_for_event
from tests.support.migrations_gen import generate

pytestmark = pytest.mark.postgres

ALEMBIC_SHOP = REPO / "examples" / "alembic-shop"
# The test migrations' statement that waits for the test's "go on", while it runs.
SLEEPING = (
    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%' AND state = 'active'"
)


@pytest.fixture
def instance() -> Iterator[Instance]:
    """A server of this test's own: restarting the session's would end other tests' sessions."""
    own = start_instance(PASSWORD, prefix="dbmigrate-pg-restart-")
    try:
        yield own
    finally:
        own.stop()


@pytest.fixture
def server(instance: Instance) -> PostgresServer:
    return instance.server()


def _runner(server: PostgresServer, tmp_path: Path, tool: str, n: int = 3) -> tuple[Runner, list[str]]:
    project = generate(tmp_path / "gen", n, tool)
    return Runner(server, server.create_database(), project.root, tmp_path, tool), project.versions


def test_restart_while_waiting_for_the_lock(
    instance: Instance, server: PostgresServer, tmp_path: Path, tool: str
) -> None:
    runner, versions = _runner(server, tmp_path, tool)
    with lock_held_elsewhere(server, runner.database):
        proc, report = runner.start("upgrade", DBMIGRATE_WAIT_TIMEOUT="60", DBMIGRATE_LOCK_TIMEOUT="120")
        seen: list[str] = []
        wait_for_event(proc, "lock.waiting", seen)
        instance.restart()  # the holder's session ends too: the lock is free once the runner is back
        result = finish(proc, report, server.password)
    out = "".join(seen) + result.stdout
    assert result.rc == 0, out + result.stderr
    assert '"event": "database.lost"' in out
    assert runner.applied() == versions
    assert result.report.applied == [f"models:{v}" for v in versions]


def test_restart_between_migrations_resumes_in_the_runner(
    instance: Instance, server: PostgresServer, tmp_path: Path, tool: str
) -> None:
    runner, versions = _runner(server, tmp_path, tool)
    pause = tmp_path / "pause"
    pause.mkdir()
    proc, report = runner.start(
        "upgrade",
        faults=True,
        FAULT_PAUSE_BEFORE=f"models:{versions[1]}",
        FAULT_PAUSE_DIR=str(pause),
        DBMIGRATE_WAIT_TIMEOUT="60",
    )
    deadline = time.monotonic() + 60
    while not (pause / "paused").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert runner.applied() == versions[:1]  # the first one committed, the second not started
    instance.restart()
    (pause / "resume").write_text("")
    result = finish(proc, report, server.password)
    assert result.rc == 0, result.stdout + result.stderr
    assert result.events("database.lost")
    assert runner.applied() == versions  # each once: a second row would be a second application
    assert result.report.applied == [f"models:{v}" for v in versions]
    assert result.report.outcome is Outcome.SUCCEEDED


def test_restart_inside_a_migration_stops_with_nothing_of_it_applied(
    instance: Instance, server: PostgresServer, tmp_path: Path, tool: str
) -> None:
    runner, versions = _runner(server, tmp_path, tool)
    folder = runner.cwd / ("migrations/models" if tool == "aerich" else "genapp/migrations")
    second = folder / f"{versions[1]}.py"
    create = 'CREATE TABLE "gen_1" ("id" SERIAL PRIMARY KEY);'
    # It sleeps until the test says "go on" (a table), so it is surely running when the server restarts.
    slow = f"SELECT pg_sleep(60) WHERE to_regclass('go_on') IS NULL; {create}"
    text = second.read_text()
    second.write_text(
        text.replace(create, slow) if tool == "aerich" else text.replace(repr(create), repr(slow))
    )

    proc, report = runner.start("upgrade", DBMIGRATE_WAIT_TIMEOUT="60")
    deadline = time.monotonic() + 60
    while server.psql(runner.database, SLEEPING) == "0":
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    instance.restart()
    result = finish(proc, report, server.password)
    assert result.rc == Outcome.DATABASE_UNREACHABLE.exit_code, result.stdout + result.stderr
    error = result.report.error
    assert error is not None
    assert error.kind == "ConnectionLost"
    assert error.migration == f"models:{versions[1]}"
    assert "nothing of" in error.message
    assert runner.applied() == versions[:1]
    assert "gen_1" not in runner.tables()
    assert result.report.applied == [f"models:{versions[0]}"]

    server.psql(runner.database, "CREATE TABLE go_on ()")
    again = runner("upgrade")  # what the Job's retry does
    assert again.rc == 0, again.stdout + again.stderr
    assert runner.applied() == versions


@pytest.mark.parametrize("ini", ["alembic.ini", "alembic-async.ini"])
def test_alembic_restart_while_waiting_and_inside_a_migration(
    instance: Instance, server: PostgresServer, tmp_path: Path, ini: str
) -> None:
    """Alembic: a restart while waiting for the lock is resumed in the run; one during env.py's run
    stops it with DatabaseUnreachable (kind ConnectionLost), nothing of the running revision committed."""
    project = tmp_path / "alembic-shop"
    shutil.copytree(ALEMBIC_SHOP, project, ignore=shutil.ignore_patterns("__pycache__"))
    bio = project / "migrations" / "versions" / "c4d5e6f7a8b9_add_user_bio.py"
    text = bio.read_text()
    add = "    op.add_column('users', sa.Column('bio', sa.Text(), nullable=True))"
    assert add in text
    sleep = "    op.execute(\"SELECT pg_sleep(60) WHERE to_regclass('go_on') IS NULL\")\n"
    bio.write_text(text.replace(add, sleep + add, 1))
    runner = Runner(server, server.create_database(), project, tmp_path, "alembic")
    first = runner("upgrade", "--config", ini, "--target", "9a2d1282dd17")
    assert first.rc == 0, first.stdout + first.stderr

    with lock_held_elsewhere(server, runner.database):
        proc, report = runner.start("upgrade", "--config", ini, DBMIGRATE_WAIT_TIMEOUT="60")
        seen: list[str] = []
        wait_for_event(proc, "lock.waiting", seen)
        instance.restart()
        deadline = time.monotonic() + 60
        while server.psql(runner.database, SLEEPING) == "0":
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        instance.restart()
        result = finish(proc, report, server.password)
    out = "".join(seen) + result.stdout
    assert '"event": "database.lost"' in out
    assert result.rc == Outcome.DATABASE_UNREACHABLE.exit_code, out + result.stderr
    error = result.report.error
    assert error is not None
    assert error.kind == "ConnectionLost"
    assert error.migration == "alembic:c4d5e6f7a8b9"
    assert "bio" not in runner.columns("users")

    server.psql(runner.database, "CREATE TABLE go_on ()")
    again = runner("upgrade", "--config", ini)  # what the Job's retry does
    assert again.rc == 0, again.stdout + again.stderr
    assert "bio" in runner.columns("users")
