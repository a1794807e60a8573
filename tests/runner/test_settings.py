"""Settings from flags and environment, database URLs, and masking of secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbmigrate_runner.errors import ConfigError
from dbmigrate_runner.masking import Masker, mask_urls, secret_values
from dbmigrate_runner.settings import build_settings, db_params_from_env, parse_database_url
from dbmigrate_runner.tools.base import with_runner_connection


def test_url_with_encoded_password_and_sslmode() -> None:
    db = parse_database_url("postgresql://app%40x:p%40ss%2Fw@db.example:6543/shop?sslmode=require")
    assert (db.user, db.password, db.host, db.port, db.database, db.ssl) == (
        "app@x",
        "p@ss/w",
        "db.example",
        6543,
        "shop",
        "require",
    )
    assert "p@ss" not in repr(db)
    assert "p@ss" not in db.describe()


@pytest.mark.parametrize(
    "url", ["mysql://u:p@h/db", "postgres://u:p@/db", "postgres://u:p@h/", "postgres://h:x/db"]
)
def test_bad_urls_are_config_errors_without_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_database_url(url)
    assert ":p@" not in str(info.value)


def test_split_form_and_defaults() -> None:
    db = db_params_from_env({"DB_HOST": "h", "DB_NAME": "n", "DB_USER": "u", "DB_PASS": "pw"})
    assert (db.host, db.port, db.database, db.user, db.password) == ("h", 5432, "n", "u", "pw")
    with pytest.raises(ConfigError, match="DB_NAME"):
        db_params_from_env({"DB_HOST": "h", "DB_USER": "u"})
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        db_params_from_env({})


def test_url_wins_over_split_form() -> None:
    db = db_params_from_env(
        {"DATABASE_URL": "postgres://a:b@c/d", "DB_HOST": "other", "DB_NAME": "x", "DB_USER": "y"}
    )
    assert db.host == "c"


def test_flags_override_env() -> None:
    env = {
        "DATABASE_URL": "postgres://a:b@c/d",
        "DBMIGRATE_TOOL": "tortoise",
        "DBMIGRATE_APPS": "a, b,a",
        "DBMIGRATE_TARGET": "3",
        "DBMIGRATE_WAIT_TIMEOUT": "5",
        "DBMIGRATE_REPORT_PATH": "/tmp/x",
    }
    s = build_settings({"command": "upgrade"}, env)
    assert (s.tool, s.apps, s.target, s.wait_timeout, s.report_path) == (
        "tortoise",
        ("a", "b"),
        "3",
        5.0,
        Path("/tmp/x"),
    )
    s = build_settings({"command": "upgrade", "tool": "aerich", "app": ["c"], "wait_timeout": "7"}, env)
    assert (s.tool, s.apps, s.wait_timeout) == ("aerich", ("c",), 7.0)
    with pytest.raises(ConfigError, match="seconds"):
        build_settings({"command": "upgrade", "lock_timeout": "soon"}, env)


def test_masker_hides_values_encodings_and_url_userinfo() -> None:
    env = {"DATABASE_URL": "postgres://app:s%40cret-pw@h/db", "DB_PASS": "other-secret"}
    mask = Masker(secret_values(env))
    text = mask("failed: postgres://app:s%40cret-pw@h/db s@cret-pw other-secret asyncpg://u:zz@h")
    for secret in ("s%40cret-pw", "s@cret-pw", "other-secret", ":zz@"):
        assert secret not in text
    assert "postgres://***:***@h/db" in text  # the user is from the Secret as well
    assert "asyncpg://u:***@h" in text
    assert mask_urls("no url here") == "no url here"


def test_runner_connection_replaces_every_configured_connection() -> None:
    db = parse_database_url("postgres://u:p@h:1/d")
    config = {"connections": {"default": "postgres://x:y@old/db", "other": {"engine": "x"}}, "apps": {}}
    out = with_runner_connection(config, db)
    assert set(out["connections"]) == {"default", "other"}
    assert all(c["credentials"]["host"] == "h" for c in out["connections"].values())
    assert config["connections"]["default"] == "postgres://x:y@old/db"  # the original is untouched


def test_url_round_trip_with_special_characters() -> None:
    db = db_params_from_env({"DB_HOST": "h", "DB_NAME": "n b", "DB_USER": "u@x", "DB_PASS": "p:w/@?"})
    assert parse_database_url(db.url()) == db


def test_import_config_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dbmigrate_runner.project import import_config

    pkg = tmp_path / "cfgpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "good.py").write_text("class Settings:\n    ORM = {'apps': {'models': {'models': ['x']}}}\n")
    (pkg / "broken.py").write_text("import cfgdep_missing\nORM = {}\n")
    (pkg / "notorm.py").write_text("ORM = {'connections': {}}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_config("cfgpkg.good.Settings.ORM")["apps"] == {"models": {"models": ["x"]}}
    with pytest.raises(ConfigError, match="No module named 'cfgdep_missing'"):
        import_config("cfgpkg.broken.ORM")
    with pytest.raises(ConfigError, match="not a Tortoise config"):
        import_config("cfgpkg.notorm.ORM")
    with pytest.raises(ConfigError, match="cannot import"):
        import_config("cfgpkg.nothere.ORM")


def test_database_error_finds_the_postgres_error_in_a_chain() -> None:
    import asyncpg

    from dbmigrate_runner.tools.base import database_error

    outer = RuntimeError("wrapped")  # like tortoise's OperationalError around asyncpg's error
    outer.__cause__ = asyncpg.exceptions.UndefinedTableError('relation "x" does not exist')
    assert database_error(outer) == ("UndefinedTableError", 'relation "x" does not exist')
    assert database_error(ValueError("plain")) == ("ValueError", "plain")


def test_report_stays_json_when_masking_its_text_would_cut_an_escape() -> None:
    """A password ending in a backslash matches the escaped quote of innocent text in the JSON."""
    import json

    from dbmigrate_runner.cli import report_text
    from dbmigrate_runner.report import ErrorInfo, Outcome, Report, decode

    mask = Masker(["Zq\\"])
    report = Report(outcome=Outcome.MIGRATION_FAILED, error=ErrorInfo(kind="X", message='value Zq" here'))
    assert "***" in mask(json.dumps(report.to_dict()))  # the text-level pass does hit
    decoded = decode(report_text(report, mask))
    assert decoded.outcome is Outcome.MIGRATION_FAILED
    assert decoded.error is not None
    assert "Zq" not in decoded.error.message
