"""The app's own DATABASE_URL works as it is: SQLAlchemy's ``postgresql+<driver>://`` forms next to
libpq's, asyncpg's and Tortoise's, for every tool (each gets the connection it needs from the parts)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest

from dbmigrate_runner.errors import ConfigError
from dbmigrate_runner.report import Outcome
from dbmigrate_runner.settings import URL_SCHEMES, parse_database_url
from localcluster.postgres import PostgresServer
from tests.runner.conftest import REPO, SHOP, SHOP_VERSIONS, Result, finish, runner_env, start

ALEMBIC_SHOP = REPO / "examples" / "alembic-shop"


@pytest.mark.parametrize(
    "scheme",
    [
        "postgres",
        "postgresql",
        "asyncpg",
        "psycopg",
        "postgresql+asyncpg",
        "postgresql+psycopg",
        "postgresql+psycopg2",
    ],
)
def test_every_postgres_form_parses_to_the_same_connection(scheme: str) -> None:
    db = parse_database_url(f"{scheme}://app:p%40ss@db.example:6543/shop?ssl=require")
    assert (db.user, db.password, db.host, db.port, db.database, db.ssl) == (
        "app",
        "p@ss",
        "db.example",
        6543,
        "shop",
        "require",
    )
    assert scheme in URL_SCHEMES


@pytest.mark.parametrize("url", ["mysql://app:pw@h/db", "postgresql+mysqldb://app:pw@h/db", "sqlite:///x.db"])
def test_other_databases_are_refused_without_quoting_the_url(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_database_url(url)
    assert "postgresql+asyncpg://" in str(info.value)  # the accepted forms are listed
    assert "mysql" not in str(info.value)
    assert "sqlite" not in str(info.value)


def _url(postgres: PostgresServer, database: str, scheme: str) -> str:
    password = quote(postgres.password, safe="")
    return f"{scheme}://{postgres.user}:{password}@{postgres.host}:{postgres.port}/{database}"


@pytest.mark.postgres
@pytest.mark.parametrize("scheme", ["postgresql+asyncpg", "postgresql+psycopg"])
@pytest.mark.parametrize("tool", ["aerich", "tortoise", "alembic", "alembic-async"])
def test_upgrade_with_the_apps_sqlalchemy_url(
    postgres: PostgresServer, database: str, tmp_path: Path, tool: str, scheme: str
) -> None:
    report = tmp_path / "r.json"
    env = runner_env(_url(postgres, database, scheme), report, DBMIGRATE_TOOL=tool.split("-")[0])
    result = _upgrade(tool, env, report, postgres.password)
    assert result.rc == 0, result.stdout + result.stderr
    if tool.startswith("alembic"):
        assert len(result.report.applied) == 5
    else:
        assert result.report.apps["models"].versions == SHOP_VERSIONS[tool]


def _upgrade(tool: str, env: dict[str, str], report: Path, password: str) -> Result:
    """``upgrade`` of the shop (aerich, tortoise) or the Alembic shop (alembic, alembic-async)."""
    if tool.startswith("alembic"):
        ini = "alembic-async.ini" if tool == "alembic-async" else "alembic.ini"
        return finish(start(["upgrade", "--config", ini], env, ALEMBIC_SHOP), report, password)
    return finish(start(["upgrade"], env, SHOP), report, password)


def _socket_credentials(postgres: PostgresServer, database: str, form: str) -> dict[str, str]:
    password = quote(postgres.password, safe="")
    where = str(postgres.socket_dir)
    if form == "url ?host=":  # libpq's form (Cloud SQL's proxy socket is written this way)
        url = f"postgresql://{postgres.user}:{password}@/{database}?host={where}&port={postgres.port}"
    elif form == "url %2F host":
        url = f"postgresql://{postgres.user}:{password}@{quote(where, safe='')}:{postgres.port}/{database}"
    else:
        return {"DB_HOST": where, "DB_PORT": str(postgres.port), "DB_NAME": database,
                "DB_USER": postgres.user, "DB_PASS": postgres.password}  # fmt: skip
    return {"DATABASE_URL": url}


@pytest.mark.postgres
@pytest.mark.parametrize("form", ["url ?host=", "url %2F host", "split"])
@pytest.mark.parametrize("tool", ["aerich", "alembic", "alembic-async"])
def test_upgrade_over_a_unix_socket(
    postgres: PostgresServer, database: str, tmp_path: Path, tool: str, form: str
) -> None:
    """A socket directory as the host, in each form libpq takes. Before, a URL's ``?port=`` was
    ignored (5432's socket file, not found), a ``%2F`` host was looked up in DNS, and Alembic got
    ``postgresql+psycopg://…@/run/sock:5433/db``: no host, a database named after the path."""
    report = tmp_path / "r.json"
    env = runner_env(None, report, DBMIGRATE_TOOL=tool.split("-")[0], DBMIGRATE_WAIT_TIMEOUT="5",
                     **_socket_credentials(postgres, database, form))  # fmt: skip
    result = _upgrade(tool, env, report, postgres.password)
    assert result.rc == 0, result.stdout + result.stderr
    assert result.report.applied
    assert result.report.database is not None
    assert str(postgres.socket_dir) not in result.stdout + result.stderr + result.report_text


@pytest.mark.parametrize(
    "query", ["dbname={other}", "user=someone", "host=127.0.0.2", "port=1", "dbname={other}&user=x"]
)
def test_a_url_naming_a_part_twice_is_refused_without_quoting_it(query: str) -> None:
    """libpq and psycopg take ``?dbname=`` over the path, asyncpg the path: the runner would migrate
    one database while a psycopg app reads the other. Refused, as for an unencoded password."""
    url = f"postgres://app:pw-Kx9@db.internal:5432/shop?{query.format(other='shop_other')}"
    with pytest.raises(ConfigError, match="twice") as refused:
        parse_database_url(url)
    for value in ("shop_other", "someone", "db.internal", "127.0.0.2", "pw-Kx9"):
        assert value not in str(refused.value)


@pytest.mark.postgres
def test_path_and_dbname_disagreeing_migrate_neither_database(
    postgres: PostgresServer, database: str, tmp_path: Path
) -> None:
    """On real PostgreSQL: psql (libpq) connects to the ``?dbname=`` one; the runner used to migrate
    the path's. Now it refuses at once and neither database gets a table."""
    other = postgres.create_database(f"{database}_q")
    try:
        url = f"{postgres.url(database)}?dbname={other}"
        libpq = subprocess.run(
            [str(postgres.bindir / "psql"), url, "-Atc", "SELECT current_database()"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert libpq.stdout.strip() == other  # what libpq reads
        report = tmp_path / "r.json"
        result = finish(start(["upgrade"], runner_env(url, report), SHOP), report, postgres.password)
        assert result.rc == 2, result.stdout + result.stderr
        assert result.report.error is not None
        assert "twice" in result.report.error.message
        assert other not in result.stdout + result.report_text
        for name in (database, other):
            assert postgres.psql(name, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == "0"
    finally:
        postgres.psql("postgres", f'DROP DATABASE IF EXISTS "{other}" WITH (FORCE)')


@pytest.mark.postgres
def test_a_search_path_in_the_urls_options_is_refused_not_ignored(
    postgres: PostgresServer, database: str, tmp_path: Path
) -> None:
    """``?options=-csearch_path=tenant1``: libpq (the app) works in tenant1. The runner used to drop
    the option and migrate public, then report Succeeded; now it refuses, and neither schema gets a
    table. Other options (an app's statement_timeout) are still left out quietly."""
    postgres.psql(database, "CREATE SCHEMA tenant1")
    url = f"{postgres.url(database)}?options=-csearch_path%3Dtenant1"
    libpq = subprocess.run(
        [str(postgres.bindir / "psql"), url, "-Atc", "SELECT current_schema()"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert libpq.stdout.strip() == "tenant1"
    report = tmp_path / "r.json"
    result = finish(start(["upgrade"], runner_env(url, report), SHOP), report, postgres.password)
    assert result.rc == 2, result.stdout + result.stderr
    assert result.report.error is not None
    assert "schema list or role in ?options=" in result.report.error.message
    assert (
        postgres.psql(database, "SELECT count(*) FROM pg_tables WHERE schemaname IN ('public', 'tenant1')")
        == "0"
    )
    timeout_url = f"{postgres.url(database)}?options=-c%20statement_timeout%3D5s"
    assert parse_database_url(timeout_url).database == database


@pytest.mark.postgres
@pytest.mark.parametrize("form", ["url", "split"])
def test_sslmode_require_never_falls_back_to_plain_text(
    postgres: PostgresServer, database: str, tmp_path: Path, form: str
) -> None:
    """docs/runner.md: ``?sslmode=`` (``DB_SSLMODE``) is honoured. The test server has no TLS, so
    ``require`` must fail rather than send the password in clear; ``disable`` connects."""
    for mode, expected in (("require", Outcome.DATABASE_UNREACHABLE), ("disable", Outcome.SUCCEEDED)):
        report = tmp_path / f"{mode}.json"
        if form == "url":
            env = runner_env(f"{postgres.url(database)}?sslmode={mode}", report, DBMIGRATE_WAIT_TIMEOUT="1")
        else:
            env = runner_env(None, report, DBMIGRATE_WAIT_TIMEOUT="1", DB_HOST=postgres.host,
                             DB_PORT=str(postgres.port), DB_NAME=database, DB_USER=postgres.user,
                             DB_PASS=postgres.password, DB_SSLMODE=mode)  # fmt: skip
        result = finish(start(["upgrade"], env, SHOP), report, postgres.password)
        assert result.report.outcome is expected, result.stdout + result.stderr
        if mode == "require":
            assert (
                postgres.psql(database, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == "0"
            )
