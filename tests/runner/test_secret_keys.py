"""Any entry of any Secret may be named by any key of ``database.secretRef``: whatever value lands in
DB_HOST, DB_PORT, DB_NAME, DB_USER, DB_PASS or DATABASE_URL (or a part of it), neither the value nor
a piece of it shows in the log, stderr or the report — errors name the variable instead."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from urllib.parse import quote

import pydantic
import pytest

from dbmigrate_runner.masking import MIN_FRAGMENT
from dbmigrate_runner.report import Outcome
from localcluster.postgres import PostgresServer
from tests.runner.conftest import REPO, SHOP, Result, finish, runner_env, start

pytestmark = pytest.mark.postgres

ALEMBIC_SHOP = REPO / "examples" / "alembic-shop"
# What a misrouted key hands the runner on a real cluster: an API key of another Secret entry.
SECRET = "sk_live_51Qm7ZtXl6cb3aYUL4nLQnTw9R"
SECRET_USER = "sk_live_9vQw2RrT6mJh4KxZ"
SECRET_DB = "sk_live_3fGp8LsY1cNd7VbX"


def fragments(value: str) -> set[str]:
    """The value and every piece of it MIN_FRAGMENT characters long (a longer piece holds one)."""
    return {value} | {value[i : i + MIN_FRAGMENT] for i in range(len(value) - MIN_FRAGMENT + 1)}


def assert_never_shown(result: Result, *values: str) -> None:
    for where, text in (("stdout", result.stdout), ("stderr", result.stderr), ("report", result.report_text)):
        for value in values:
            found = sorted(piece for piece in fragments(value) if piece in text)
            assert not found, f"pieces {found} of a Secret value in {where}:\n{text}"


def run(env: dict[str, str], report: Path, *args: str, cwd: Path = SHOP, timeout: float = 120) -> Result:
    return finish(start(list(args), env, cwd), report, SECRET, timeout=timeout)


def split_env(postgres: PostgresServer, database: str, **override: str) -> dict[str, str]:
    env = {
        "DB_HOST": postgres.host,
        "DB_PORT": str(postgres.port),
        "DB_NAME": database,
        "DB_USER": postgres.user,
        "DB_PASS": postgres.password,
    }
    return {**env, **override}


def url_env(postgres: PostgresServer, database: str, part: str) -> dict[str, str]:
    parts = {
        "user": postgres.user,
        "password": quote(postgres.password, safe=""),
        "host": postgres.host,
        "port": str(postgres.port),
        "db": database,
    }
    parts[part] = SECRET
    url = f"postgresql+asyncpg://{parts['user']}:{parts['password']}@{parts['host']}:{parts['port']}/{parts['db']}"
    return {"DATABASE_URL": url}


# (how the value is routed, the outcome it leads to)
ROUTES = {
    "DB_PORT": Outcome.CONFIG_ERROR,
    "DB_HOST": Outcome.DATABASE_UNREACHABLE,
    "DB_NAME": Outcome.CONFIG_ERROR,
    "DB_USER": Outcome.CONFIG_ERROR,
    "DB_PASS": Outcome.CONFIG_ERROR,
    "DATABASE_URL": Outcome.CONFIG_ERROR,
    "DATABASE_URL user": Outcome.CONFIG_ERROR,
    "DATABASE_URL password": Outcome.CONFIG_ERROR,
    "DATABASE_URL host": Outcome.DATABASE_UNREACHABLE,
    "DATABASE_URL port": Outcome.CONFIG_ERROR,
    "DATABASE_URL db": Outcome.CONFIG_ERROR,
}


@pytest.mark.parametrize("route", list(ROUTES))
def test_a_secret_routed_through_any_key_never_shows(
    postgres: PostgresServer, database: str, tmp_path: Path, route: str
) -> None:
    if route == "DATABASE_URL":
        credentials = {"DATABASE_URL": SECRET}
    elif route.startswith("DATABASE_URL "):
        credentials = url_env(postgres, database, route.split()[1])
    else:
        credentials = split_env(postgres, database, **{route: SECRET})
    report = tmp_path / "r.json"
    env = runner_env(None, report, DBMIGRATE_LOG_LEVEL="debug", DBMIGRATE_WAIT_TIMEOUT="1", **credentials)
    result = run(env, report, "upgrade")
    assert result.rc == ROUTES[route].exit_code, result.stdout + result.stderr
    assert result.report.outcome is ROUTES[route]
    assert result.report.tool == "aerich"
    assert_never_shown(result, SECRET)
    error = result.report.error
    assert error is not None
    assert "***" in error.message or route.split()[0] in error.message  # the key is named
    if route == "DB_PORT":
        assert error.message.startswith("DB_PORT (from the Secret) must be a port number")
        assert error.kind == "ConfigError"


@pytest.mark.parametrize("form", ["url", "split"])
@pytest.mark.parametrize("tool", ["aerich", "tortoise", "alembic"])
def test_secret_looking_user_password_and_database_never_show_on_a_successful_run(
    postgres: PostgresServer, tmp_path: Path, tool: str, form: str
) -> None:
    """A run that works with such values (a role and a database named like keys) says nothing of
    them either, at debug level, whatever the tool prints."""
    database = postgres.create_database(f"{SECRET_DB}_{uuid.uuid4().hex[:6]}")
    postgres.psql(database, f"CREATE ROLE \"{SECRET_USER}\" LOGIN PASSWORD '{SECRET}'")
    postgres.psql(database, f'ALTER DATABASE "{database}" OWNER TO "{SECRET_USER}"')
    try:
        if form == "url":
            credentials = {
                "DATABASE_URL": f"postgresql+asyncpg://{SECRET_USER}:{SECRET}@{postgres.host}:{postgres.port}/{database}"
            }
        else:
            credentials = split_env(postgres, database, DB_USER=SECRET_USER, DB_PASS=SECRET)
        report = tmp_path / "r.json"
        env = runner_env(None, report, DBMIGRATE_TOOL=tool, DBMIGRATE_LOG_LEVEL="debug", **credentials)
        args = ["upgrade", "--config", "alembic.ini"] if tool == "alembic" else ["upgrade"]
        result = run(env, report, *args, cwd=ALEMBIC_SHOP if tool == "alembic" else SHOP)
        assert result.rc == 0, result.stdout + result.stderr
        assert result.report.applied
        assert any(rec["level"] == "debug" for rec in result.logs())
        assert_never_shown(result, SECRET, SECRET_USER, database)
    finally:
        postgres.psql("postgres", f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        postgres.psql("postgres", f'DROP ROLE IF EXISTS "{SECRET_USER}"')


# An app's own settings building its URL with pydantic from its own variables; a space in its host
# setting is enough to make pydantic refuse it, and print it shortened: "postgresql+psycopg://r_1...
# <the password's last 15 characters>@a b:1/x".
PYDANTIC_SETTINGS = """
import os as _os

import pydantic as _pydantic


class _AppDatabase(_pydantic.BaseModel):
    url: _pydantic.PostgresDsn


_AppDatabase(url=f"postgresql+psycopg://{_os.environ['DB_USER']}:{_os.environ['DB_PASS']}@a b:1/x")
"""


@pytest.mark.parametrize("tool", ["aerich", "alembic"])
def test_what_pydantic_prints_of_the_password_never_shows(
    postgres: PostgresServer, database: str, tmp_path: Path, tool: str
) -> None:
    """Issue 19: pydantic cut the URL in the middle (``pos...Xl6cb3aYUL4nLQn@``) and the masker took
    the piece for a user name; here the app's config (aerich) or env.py (alembic) does it."""
    if tool == "aerich":
        project = shutil.copytree(SHOP, tmp_path / "shop", ignore=shutil.ignore_patterns("__pycache__"))
        target, args = project / "shop" / "config.py", ["upgrade"]
    else:
        project = shutil.copytree(
            ALEMBIC_SHOP, tmp_path / "app", ignore=shutil.ignore_patterns("__pycache__")
        )
        target, args = project / "migrations" / "env.py", ["upgrade", "--config", "alembic.ini"]
    source = target.read_text()
    at = source.index("if context.is_offline_mode()") if tool == "alembic" else len(source)
    target.write_text(source[:at] + PYDANTIC_SETTINGS + "\n\n" + source[at:])
    role = f"r_{uuid.uuid4().hex[:10]}"  # a role that really has the password: env.py runs
    postgres.psql(database, f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{SECRET}'")
    postgres.psql(database, f'ALTER DATABASE "{database}" OWNER TO "{role}"')
    report = tmp_path / "r.json"
    env = runner_env(
        None, report, DBMIGRATE_TOOL=tool, **split_env(postgres, database, DB_USER=role, DB_PASS=SECRET)
    )
    with pytest.raises(pydantic.ValidationError) as pydantic_says:  # the same, in this process
        pydantic.TypeAdapter(pydantic.PostgresDsn).validate_python(
            f"postgresql+psycopg://{role}:{SECRET}@a b:1/x"
        )
    assert SECRET[-12:] in str(pydantic_says.value)  # pydantic prints a piece of the password
    result = finish(start(args, env, project), report, SECRET)
    assert result.rc != 0, result.stdout
    assert result.report.error is not None
    assert "url" in result.report.error.message  # pydantic's error, masked, is there
    assert_never_shown(result, SECRET)
