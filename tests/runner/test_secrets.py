"""Passwords full of special characters never leave the runner, in any representation, at any log level."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from dbmigrate_runner.report import Outcome
from localcluster.postgres import PostgresServer
from tests.runner.conftest import SHOP, Result, copy_shop, finish, runner_env, start

pytestmark = pytest.mark.postgres

# Every character that breaks naive quoting: " \ @ / % : ' and a space.
PASSWORD = "Kx\"9\\Qm@Vz/Jp%Yt:Wq'Hb Nc"


def leaks(password: str) -> set[str]:
    """Every form in which the password (or a telling piece of it) could show up."""
    forms = {
        password,
        quote(password, safe=""),
        quote(password),
        quote_plus(password),
        json.dumps(password)[1:-1],
        json.dumps(password, ensure_ascii=True)[1:-1],
        repr(password)[1:-1],
        password[: len(password) // 3],  # what Tortoise's own star_password leaves visible
        password[-(len(password) // 3) :],
    }
    forms |= {password[i : i + 4] for i in range(len(password) - 3)}
    return forms


def assert_no_leak(result: Result, password: str) -> None:
    for where, text in (("stdout", result.stdout), ("stderr", result.stderr), ("report", result.report_text)):
        found = sorted(form for form in leaks(password) if form in text)
        assert not found, f"password fragments {found} in {where}"


def make_role(postgres: PostgresServer, database: str, password: str) -> str:
    """A login role with ``password`` that owns ``database`` (so it can migrate it)."""
    role = f"r_{uuid.uuid4().hex[:10]}"
    literal = password.replace("'", "''")
    postgres.psql(database, f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{literal}'")
    postgres.psql(database, f'ALTER DATABASE "{database}" OWNER TO "{role}"')
    return role


def credentials(
    form: str, postgres: PostgresServer, database: str, role: str, password: str
) -> dict[str, str]:
    if form == "url":
        return {"DATABASE_URL": postgres.url(database, user=role, password=quote(password, safe=""))}
    return {
        "DB_HOST": postgres.host,
        "DB_PORT": str(postgres.port),
        "DB_NAME": database,
        "DB_USER": role,
        "DB_PASS": password,
    }


def run(env: dict[str, str], report: Path, password: str, *args: str, timeout: float = 120) -> Result:
    return finish(start(list(args), env, SHOP), report, password, timeout=timeout)


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error"])
@pytest.mark.parametrize("form", ["url", "split"])
def test_special_password_never_shows(
    postgres: PostgresServer, database: str, tmp_path: Path, tool: str, form: str, level: str
) -> None:
    role = make_role(postgres, database, PASSWORD)
    report = tmp_path / "r.json"
    env = runner_env(None, report, DBMIGRATE_TOOL=tool, DBMIGRATE_LOG_LEVEL=level,
                     **credentials(form, postgres, database, role, PASSWORD))  # fmt: skip
    result = run(env, report, PASSWORD, "upgrade")
    assert result.rc == 0, result.stdout + result.stderr
    assert result.report.apps["models"].count == 3
    assert_no_leak(result, PASSWORD)
    if level == "debug":
        assert any(rec["level"] == "debug" for rec in result.logs())  # debug output was really on


@pytest.mark.parametrize("form", ["url", "split"])
def test_special_password_never_shows_when_it_is_wrong(
    postgres: PostgresServer, database: str, tmp_path: Path, form: str
) -> None:
    role = make_role(postgres, database, "s0mething-else")
    report = tmp_path / "r.json"
    env = runner_env(None, report, DBMIGRATE_LOG_LEVEL="debug",
                     **credentials(form, postgres, database, role, PASSWORD))  # fmt: skip
    result = run(env, report, PASSWORD, "upgrade")
    assert result.rc == Outcome.CONFIG_ERROR.exit_code, result.stdout
    assert_no_leak(result, PASSWORD)


CARELESS_CONFIG = """

import logging

# A config that logs what it was given, the way apps sometimes do.
logging.getLogger("shop.config").warning("db password is %s", os.environ.get("DB_PASS"))
logging.getLogger("shop.config").warning("db settings: %r", {"password": os.environ.get("DB_PASS")})
"""


def test_password_logged_by_the_app_config_is_masked_before_json_escaping(
    postgres: PostgresServer, database: str, tmp_path: Path
) -> None:
    project = copy_shop(tmp_path / "shop")
    with (project / "shop" / "config.py").open("a") as config:
        config.write(CARELESS_CONFIG)
    role = make_role(postgres, database, PASSWORD)
    report = tmp_path / "r.json"
    env = runner_env(None, report, **credentials("split", postgres, database, role, PASSWORD))
    result = finish(start(["upgrade"], env, project), report, PASSWORD)
    assert result.rc == 0, result.stdout
    lines = [rec["msg"] for rec in result.logs() if rec.get("logger") == "shop.config"]
    assert lines == ["db password is ***", "db settings: {'password': '***'}"]
    assert_no_leak(result, PASSWORD)


@pytest.mark.parametrize("password", ["Qz8@tXv3k9Lm", PASSWORD])
def test_unencoded_password_in_url_fails_fast_without_echoing_it(
    postgres: PostgresServer, database: str, tmp_path: Path, password: str
) -> None:
    role = make_role(postgres, database, password)
    report = tmp_path / "r.json"
    url = f"postgres://{role}:{password}@{postgres.host}:{postgres.port}/{database}"
    env = runner_env(url, report, DBMIGRATE_WAIT_TIMEOUT="300")
    started = time.monotonic()
    result = run(env, report, password, "upgrade", timeout=60)
    assert time.monotonic() - started < 30  # not the wait timeout
    assert result.rc == Outcome.CONFIG_ERROR.exit_code, result.stdout
    assert result.report.error is not None
    assert "percent-encode" in result.report.error.message
    assert "%40" in result.report.error.message
    assert_no_leak(result, password)


def test_db_pass_with_a_trailing_newline_works(
    postgres: PostgresServer, database: str, tmp_path: Path
) -> None:
    """A Secret written with `echo pass > file` carries a newline; it is stripped like DB_HOST's."""
    password = "n3wline-Secret"
    role = make_role(postgres, database, password)
    report = tmp_path / "r.json"
    env = runner_env(None, report, **credentials("split", postgres, database, role, password + "\n"))
    result = run(env, report, password, "upgrade", "--tool", "tortoise")
    assert result.rc == 0, result.stdout
    assert result.report.apps["models"].count == 3
    assert_no_leak(result, password)


ENV_PRINTING_CONFIG = """

import logging
import sys as _sys

# A config that echoes the libpq-style variables it found, straight to stderr and through logging.
print("PGPASSWORD=" + os.environ.get("PGPASSWORD", ""), file=_sys.stderr)
logging.getLogger("shop.config").warning("fallback password %s", os.environ.get("DB_PASSWORD"))
"""


def test_pgpassword_and_db_password_are_masked_too(
    postgres: PostgresServer, database: str, tmp_path: Path
) -> None:
    """docs/runner.md names DB_PASSWORD and PGPASSWORD among the masked variables (spec.job.env may
    set them, from any Secret)."""
    project = copy_shop(tmp_path / "shop")
    with (project / "shop" / "config.py").open("a") as config:
        config.write(ENV_PRINTING_CONFIG)
    pg_password, db_password = "Vq7Rt2Lk9X-pg", "Hm3Zw8Np4-db"
    report = tmp_path / "r.json"
    env = runner_env(postgres.url(database), report, PGPASSWORD=pg_password, DB_PASSWORD=db_password)
    result = finish(start(["upgrade"], env, project), report, postgres.password)
    assert result.rc == 0, result.stdout + result.stderr
    assert "PGPASSWORD=***" in result.stderr
    assert [rec["msg"] for rec in result.logs() if rec.get("logger") == "shop.config"] == [
        "fallback password ***"
    ]
    assert_no_leak(result, pg_password)
    assert_no_leak(result, db_password)
