"""Failures before any migration runs: database unreachable, wrong credentials, bad configuration."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest

from dbmigrate_runner.report import Outcome
from localcluster.postgres import PostgresServer, lock_held_elsewhere
from tests.runner.conftest import REPO, SHOP, Result, finish, runner_env, start

pytestmark = pytest.mark.postgres

WRONG = "Wr0ng-Secret-Value"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(
    env: dict[str, str], args: list[str], cwd: Path, report: Path, secret: str, timeout: float = 60
) -> Result:
    return finish(start(args, env, cwd), report, secret, timeout=timeout)


def test_unreachable_database_fails_after_the_wait_deadline(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    url = f"postgres://app:{WRONG}@127.0.0.1:{_closed_port()}/shop"
    result = run(runner_env(url, report), ["upgrade", "--wait-timeout", "1.5"], SHOP, report, WRONG)
    assert result.rc == Outcome.DATABASE_UNREACHABLE.exit_code == 3
    assert result.report.outcome is Outcome.DATABASE_UNREACHABLE
    assert result.report.error is not None
    assert "not reachable within 1.5s" in result.report.error.message
    assert result.report.apps == {}  # not read: unknown, not "nothing applied"
    assert result.events("database.waiting")


def test_wrong_password_fails_fast_as_config_error(
    postgres: PostgresServer, database: str, tmp_path: Path
) -> None:
    report = tmp_path / "r.json"
    env = runner_env(postgres.url(database, password=WRONG), report, DBMIGRATE_WAIT_TIMEOUT="300")
    # A retry loop would run into the 300 s wait deadline; the 30 s subprocess timeout catches that.
    result = run(env, ["upgrade"], SHOP, report, WRONG, timeout=30)
    assert result.rc == Outcome.CONFIG_ERROR.exit_code == 2
    assert result.report.error is not None
    assert result.report.error.kind == "InvalidPasswordError"
    assert "password authentication failed" in result.report.error.message
    assert postgres.password not in result.stdout + result.report_text


def test_unknown_database_is_a_config_error(postgres: PostgresServer, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    result = run(runner_env(postgres.url("no_such_db"), report), ["upgrade"], SHOP, report, postgres.password)
    assert result.rc == Outcome.CONFIG_ERROR.exit_code
    assert result.report.error is not None
    assert result.report.error.kind == "InvalidCatalogNameError"


def test_split_credentials_work_and_the_password_never_shows(
    postgres: PostgresServer, database: str, tmp_path: Path
) -> None:
    report = tmp_path / "r.json"
    env = runner_env(
        None,
        report,
        DB_HOST=postgres.host,
        DB_PORT=str(postgres.port),
        DB_NAME=database,
        DB_USER=postgres.user,
        DB_PASS=postgres.password,
        DBMIGRATE_LOG_LEVEL="debug",
    )
    result = run(env, ["upgrade", "--tool", "tortoise"], SHOP, report, postgres.password)
    assert result.rc == 0, result.stdout
    assert result.report.apps["models"].count == 3


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["upgrade", "--config", "nosuch.module.TORTOISE_ORM"], "cannot import"),
        (["upgrade", "--config", "shop.config.NOT_THERE"], "has no attribute"),
        (["upgrade", "--config", "TORTOISE_ORM"], "not an import path"),
        (["upgrade", "--tool", "flyway"], "invalid choice"),
        (["upgrade", "--app", "nosuchapp"], "unknown app"),
        (["upgrade", "--target", "models:42_nope"], "matches no migration"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_configuration_exits_with_config_error(
    postgres: PostgresServer, database: str, tmp_path: Path, args: list[str], fragment: str
) -> None:
    report = tmp_path / "r.json"
    result = run(runner_env(postgres.url(database), report), args, SHOP, report, postgres.password)
    assert result.rc == Outcome.CONFIG_ERROR.exit_code, result.stdout
    assert result.report.outcome is Outcome.CONFIG_ERROR
    assert result.report.error is not None
    assert fragment in result.report.error.message


def test_no_config_anywhere(postgres: PostgresServer, database: str, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    result = run(runner_env(postgres.url(database), report), ["upgrade"], tmp_path, report, postgres.password)
    assert result.rc == Outcome.CONFIG_ERROR.exit_code
    assert result.report.error is not None
    assert "no Tortoise config" in result.report.error.message


def test_missing_credentials(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    result = run(runner_env(None, report), ["upgrade"], SHOP, report, "unused-secret")
    assert result.rc == Outcome.CONFIG_ERROR.exit_code
    assert result.report.error is not None
    assert "DATABASE_URL" in result.report.error.message


def test_lock_timeout_when_another_session_holds_the_lock(
    postgres: PostgresServer, database: str, tmp_path: Path
) -> None:
    with lock_held_elsewhere(postgres, database):
        report = tmp_path / "r.json"
        env = runner_env(postgres.url(database), report, DBMIGRATE_LOCK_TIMEOUT="1")
        result = run(env, ["upgrade"], SHOP, report, postgres.password)
    assert result.rc == Outcome.LOCK_TIMEOUT.exit_code == 4
    assert result.report.outcome is Outcome.LOCK_TIMEOUT
    assert result.events("lock.waiting")
    assert result.report.apps["models"].count == 0  # read without the lock: fresh database
    assert postgres.psql(database, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == "0"


def test_sigterm_still_writes_a_report(postgres: PostgresServer, database: str, tmp_path: Path) -> None:
    with lock_held_elsewhere(postgres, database):
        report = tmp_path / "r.json"
        proc = start(
            ["upgrade"], runner_env(postgres.url(database), report, DBMIGRATE_LOCK_TIMEOUT="60"), SHOP
        )
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if '"lock.waiting"' in line:
                break
        proc.send_signal(signal.SIGTERM)
        result = finish(proc, report, postgres.password, timeout=30)
    assert result.rc == Outcome.INTERNAL_ERROR.exit_code, "".join(seen) + result.stdout
    assert result.report.error is not None
    assert result.report.error.kind == "Interrupted"


@pytest.mark.parametrize(
    ("args", "credentials", "tool"),
    [
        (["upgrade", "--tool", "tortoise"], False, "tortoise"),  # no credentials at all
        (["downgrade", "--tool", "alembic"], True, "alembic"),  # downgrade without --target
        (["downgrade"], True, "aerich"),  # the tool as the run would have used it: the default
    ],
)
def test_report_path_flag_is_honoured_on_early_config_errors(
    postgres: PostgresServer, database: str, tmp_path: Path, args: list[str], credentials: bool, tool: str
) -> None:
    """Issue 19: these failed before the settings were built, and the report went to the
    environment's path with ``"tool": ""``."""
    env_report, flag_report = tmp_path / "env.json", tmp_path / "flag.json"
    env = runner_env(postgres.url(database) if credentials else None, env_report)
    result = run(env, [*args, "--report-path", str(flag_report)], SHOP, flag_report, postgres.password)
    assert result.rc == Outcome.CONFIG_ERROR.exit_code, result.stdout
    assert not env_report.exists()
    assert result.report.outcome is Outcome.CONFIG_ERROR
    assert (result.report.tool, result.report.command) == (tool, args[0])
    assert result.report.error is not None
    assert ("--target" if args[0] == "downgrade" else "DATABASE_URL") in result.report.error.message


def test_usage_error_report_goes_to_the_flags_path(
    postgres: PostgresServer, database: str, tmp_path: Path
) -> None:
    """Even when the flags themselves are wrong, a --report-path among them is where the report goes."""
    env_report, flag_report = tmp_path / "env.json", tmp_path / "flag.json"
    env = runner_env(postgres.url(database), env_report, DBMIGRATE_TOOL="tortoise")
    args = ["upgrade", "--no-such-flag", "--report-path", str(flag_report)]
    result = run(env, args, SHOP, flag_report, postgres.password)
    assert result.rc == Outcome.CONFIG_ERROR.exit_code, result.stdout
    assert not env_report.exists()
    assert (result.report.tool, result.report.command) == ("tortoise", "upgrade")
    assert result.report.error is not None
    assert "--no-such-flag" in result.report.error.message


@pytest.mark.parametrize("tool", ["aerich", "tortoise", "alembic"])
def test_status_takes_no_lock_and_creates_nothing(
    postgres: PostgresServer, database: str, tmp_path: Path, tool: str
) -> None:
    """docs/runner.md: ``status`` is read-only, no lock, no writes. The operator's database check
    Jobs run it while a migration may hold the lock; it must answer at once, and on a fresh database
    leave no tracking table behind (Alembic's run_migrations creates its version table unless told
    not to mutate)."""
    report = tmp_path / "r.json"
    env = runner_env(postgres.url(database), report, DBMIGRATE_TOOL=tool, DBMIGRATE_LOCK_TIMEOUT="1")
    cwd, args = (
        (REPO / "examples" / "alembic-shop", ["status", "--config", "alembic.ini"])
        if tool == "alembic"
        else (SHOP, ["status"])
    )
    with lock_held_elsewhere(postgres, database):
        result = run(env, args, cwd, report, postgres.password)
    assert result.rc == 0, result.stdout + result.stderr
    assert not result.events("lock.waiting")
    assert result.report.outcome is Outcome.SUCCEEDED
    assert result.report.database is not None  # what the database check reads
    assert postgres.psql(database, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == "0"
