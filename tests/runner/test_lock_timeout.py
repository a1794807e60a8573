"""A long transaction holds a lock the migration needs: the app never queues behind the migration
for much longer than ``lock_timeout``; the migration is retried until it gets through, or gives up
with LockNotAvailable (exit 7) and nothing applied. Real PostgreSQL, each tool."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from dbmigrate_runner.lockwait_line import latest_lock_wait
from dbmigrate_runner.report import Outcome
from localcluster.postgres import PostgresServer
from tests.runner.conftest import REPO, Result, Runner, finish, wait_for_event
from tests.support.migrations_gen import generate

pytestmark = pytest.mark.postgres

ALTER = 'ALTER TABLE "item" ADD COLUMN "note" TEXT;'
TIMEOUT_S = 1.0
ALEMBIC_SHOP = REPO / "examples" / "alembic-shop"
ALEMBIC_CASCADE, ALEMBIC_BIO = "9a2d1282dd17", "c4d5e6f7a8b9"


@dataclass
class Holder:
    """A psql session in an open transaction that read the table (ACCESS SHARE, as a report would)."""

    proc: subprocess.Popen[str]
    pid: int

    def end(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("ROLLBACK;\n\\q\n")
        self.proc.stdin.flush()
        self.proc.wait(30)


@contextmanager
def long_transaction(postgres: PostgresServer, database: str, table: str) -> Iterator[Holder]:
    proc = subprocess.Popen(
        [str(postgres.bindir / "psql"), "-X", "-q", "-A", "-t", "-h", str(postgres.socket_dir),
         "-p", str(postgres.port), "-U", postgres.user, "-d", database],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write(
        "SET application_name = 'reporting';\nBEGIN;\n"
        f"SELECT count(*) FROM {table};\nSELECT 'pid=' || pg_backend_pid();\n"
    )
    proc.stdin.flush()
    pid = 0
    while not pid:
        line = proc.stdout.readline()
        assert line, "psql ended"
        if line.startswith("pid="):
            pid = int(line.strip().removeprefix("pid="))
    try:
        yield Holder(proc, pid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_for_waiter(postgres: PostgresServer, database: str, table: str, limit: float = 60) -> None:
    """Until pg_locks shows a session queued for a lock on ``table`` (the migration)."""
    deadline = time.monotonic() + limit
    sql = f"SELECT count(*) FROM pg_locks WHERE relation = '{table}'::regclass AND NOT granted"
    while postgres.psql(database, sql) == "0":
        assert time.monotonic() < deadline, "the migration never queued for the lock"
        time.sleep(0.05)


def read_while_waiting(postgres: PostgresServer, database: str, table: str) -> float:
    """A reader from a third connection, started while the migration waits: seconds it took.
    (Without a lock_timeout it would queue until the long transaction ends: statement_timeout.)"""
    started = time.monotonic()
    postgres.psql(database, f"SET statement_timeout = '20s'; SELECT count(*) FROM {table}")
    return time.monotonic() - started


def locking_env(timeout: str = f"{TIMEOUT_S:g}s", retries: str = "50", budget: str = "5m") -> dict[str, str]:
    return {
        "DBMIGRATE_LOCKING_TIMEOUT": timeout,
        "DBMIGRATE_LOCKING_RETRIES": retries,
        "DBMIGRATE_LOCKING_BUDGET": budget,
    }


@dataclass
class Case:
    runner: Runner
    table: str
    column: str
    migration: str  # the label of the migration that alters the table
    first: list[str]  # arguments of the run that prepares the database
    applied: Callable[[], list[str]]  # what the tracking table records
    config: str | None = None  # alembic.ini or alembic-async.ini


def _tortoise_case(postgres: PostgresServer, database: str, tmp_path: Path, tool: str) -> Case:
    project = generate(tmp_path / "gen", 2, tool)
    folder = project.root / ("migrations/models" if tool == "aerich" else "genapp/migrations")
    second = folder / f"{project.versions[1]}.py"
    create, drop = 'CREATE TABLE "gen_1" ("id" SERIAL PRIMARY KEY);', 'DROP TABLE "gen_1";'
    undo = 'ALTER TABLE "item" DROP COLUMN "note";'
    text = second.read_text()
    if tool == "aerich":
        text = text.replace(create, ALTER).replace(drop, undo)
    else:
        text = text.replace(repr(create), repr(ALTER)).replace(repr(drop), repr(undo))
    second.write_text(text)
    runner = Runner(postgres, database, project.root, tmp_path, tool)
    return Case(
        runner,
        "item",
        "note",
        f"models:{project.versions[1]}",
        ["upgrade", "--target", project.versions[0]],
        runner.applied,
    )


def _alembic_case(postgres: PostgresServer, database: str, tmp_path: Path, ini: str) -> Case:
    runner = Runner(postgres, database, ALEMBIC_SHOP, tmp_path, "alembic")
    table = "shop_alembic_version" if ini == "alembic.ini" else "alembic_version"

    def heads() -> list[str]:
        return sorted(postgres.psql(database, f"SELECT version_num FROM {table}").split())

    return Case(
        runner,
        "users",
        "bio",
        f"alembic:{ALEMBIC_BIO}",
        ["upgrade", "--config", ini, "--target", ALEMBIC_CASCADE],
        heads,
        ini,
    )


@pytest.fixture(params=["aerich", "tortoise", "alembic-sync", "alembic-async"])
def case(request: pytest.FixtureRequest, postgres: PostgresServer, database: str, tmp_path: Path) -> Case:
    name = str(request.param)
    if name.startswith("alembic"):
        return _alembic_case(
            postgres, database, tmp_path, "alembic.ini" if name == "alembic-sync" else "alembic-async.ini"
        )
    return _tortoise_case(postgres, database, tmp_path, name)


def _upgrade_args(case: Case) -> list[str]:
    return ["upgrade", "--config", case.config] if case.config else ["upgrade"]


def test_the_app_waits_at_most_the_timeout_and_the_migration_gets_through(case: Case) -> None:
    runner, postgres, database = case.runner, case.runner.postgres, case.runner.database
    prepared = runner(*case.first)
    assert prepared.rc == 0, prepared.stdout + prepared.stderr
    before = case.applied()
    assert case.column not in runner.columns(case.table)

    with long_transaction(postgres, database, case.table) as holder:
        proc, report = runner.start(*_upgrade_args(case), **locking_env())
        seen: list[str] = []
        try:
            wait_for_waiter(postgres, database, case.table)
            took = read_while_waiting(postgres, database, case.table)
            # A correctness bound, not a benchmark: without lock_timeout the reader queues behind the
            # migration until the long transaction ends (here: its statement_timeout fails the test).
            assert took < TIMEOUT_S * 3, f"the reader waited {took:.1f}s"
            wait_for_event(proc, "lock.timeout", seen)
            assert case.column not in runner.columns(case.table)  # rolled back each time
            # What the operator shows while the run waits: the same line, read by the operator's parser.
            live = latest_lock_wait("".join(seen))
            assert live is not None, "".join(seen)
            assert live.migration == case.migration
            assert live.blocker_pid == holder.pid
            assert live.blocker is not None
            assert f"pid {holder.pid}" in live.blocker
            assert (live.attempt, live.retries, live.lock_timeout_ms) == (1, 50, int(TIMEOUT_S * 1000))
            assert live.budget_left_s is not None
            assert 0 < live.budget_left_s < 300
        finally:
            holder.end()
        result = finish(proc, report, postgres.password)
    stdout = "".join(seen) + result.stdout
    assert result.rc == 0, stdout + result.stderr
    assert case.column in runner.columns(case.table)
    assert case.applied() != before
    waits = result.report.locking
    assert waits is not None, result.report_text
    assert waits.timeouts >= 1
    assert waits.attempts >= 1
    assert waits.timeout_ms == int(TIMEOUT_S * 1000)
    assert waits.migration == case.migration
    assert waits.blocker is not None
    assert f"pid {holder.pid}" in waits.blocker
    assert f".{case.table}" in waits.blocker
    assert "'reporting'" in waits.blocker
    assert "idle in transaction" in waits.blocker
    assert '"event": "lock.timeout"' in stdout
    assert f"pid {holder.pid}" in stdout
    assert latest_lock_wait(stdout) is None  # the run moved past the wait: nothing shown any more


def test_the_budget_spent_gives_lock_not_available_with_nothing_applied(case: Case) -> None:
    runner, postgres, database = case.runner, case.runner.postgres, case.runner.database
    prepared = runner(*case.first)
    assert prepared.rc == 0, prepared.stdout + prepared.stderr
    before = case.applied()

    with long_transaction(postgres, database, case.table) as holder:
        result: Result = runner(*_upgrade_args(case), **locking_env("300ms", "3", "5m"))
        holder.end()
    assert result.rc == 7, result.stdout + result.stderr
    report = result.report
    assert report.outcome is Outcome.LOCK_NOT_AVAILABLE
    assert report.error is not None
    assert report.error.kind == "LockNotAvailable"
    assert report.error.migration == case.migration
    assert f"pid {holder.pid}" in report.error.message
    assert "nothing of" in report.error.message
    assert report.locking is not None
    assert report.locking.timeouts == 3
    assert report.locking.attempts == 3
    assert report.applied == []
    assert case.applied() == before
    assert case.column not in runner.columns(case.table)


def test_timeout_zero_turns_it_off(postgres: PostgresServer, database: str, tmp_path: Path) -> None:
    """``timeout: "0"``: no lock_timeout; the migration waits as long as it takes (the old way)."""
    case = _tortoise_case(postgres, database, tmp_path, "aerich")
    runner = case.runner
    assert runner(*case.first).rc == 0
    with long_transaction(postgres, database, "item") as holder:
        proc, report = runner.start("upgrade", **locking_env("0", "1", "1s"))
        wait_for_waiter(postgres, database, "item")
        time.sleep(1.5)  # longer than the budget: nothing gives up while it waits
        assert proc.poll() is None
        holder.end()
        result = finish(proc, report, postgres.password)
    assert result.rc == 0, result.stdout
    assert result.report.locking is None
    assert "note" in runner.columns("item")


def test_a_concurrent_index_build_that_timed_out_is_reported_not_retried_over(
    postgres: PostgresServer, database: str, tmp_path: Path
) -> None:
    """A non-atomic migration (CREATE INDEX CONCURRENTLY) runs with the timeout too; timed out, it is
    not retried (part of it stays), and the INVALID index it left is named, then and on the rerun."""
    project = generate(tmp_path / "gen", 2, "aerich")
    second = project.root / "migrations" / "models" / f"{project.versions[1]}.py"
    text = second.read_text().replace("RUN_IN_TRANSACTION = True", "RUN_IN_TRANSACTION = False")
    text = text.replace(
        'CREATE TABLE "gen_1" ("id" SERIAL PRIMARY KEY);',
        'CREATE INDEX CONCURRENTLY "ix_item_name" ON "item" ("name");',
    )
    second.write_text(text)
    runner = Runner(postgres, database, project.root, tmp_path, "aerich")
    assert runner("upgrade", "--target", project.versions[0]).rc == 0
    # A writer's open transaction: the concurrent build creates its (invalid) index, then waits for it.
    with long_transaction(postgres, database, "item") as holder:
        assert holder.proc.stdin is not None
        assert holder.proc.stdout is not None
        holder.proc.stdin.write("INSERT INTO item (name) VALUES ('x');\n\\echo inserted\n")
        holder.proc.stdin.flush()
        while holder.proc.stdout.readline().strip() != "inserted":
            pass
        proc, report = runner.start("upgrade", **locking_env("500ms", "5", "5m"))
        result = finish(proc, report, postgres.password, timeout=60)
        holder.end()
    assert result.rc == 7, result.stdout + result.stderr
    assert result.report.error is not None
    assert "not atomic" in result.report.error.message
    waits = result.report.locking
    assert waits is not None
    assert waits.timeouts == 1  # not retried
    assert waits.note is not None
    assert "left INVALID index(es) public.ix_item_name" in waits.note
    assert runner.applied() == project.versions[:1]

    again = runner("upgrade", **locking_env("500ms", "5", "5m"))
    assert again.rc != 0  # the build does not silently run over the invalid index
    assert again.report.locking is not None
    assert again.report.locking.note is not None
    assert "INVALID index(es) public.ix_item_name existed before" in again.report.locking.note
