"""Passwords a reviewer would try: the runner's own words, unicode, ``%`` and configparser's
``%(here)s``, regex metacharacters. Each run must succeed, say nothing of the password, and leave a
report the operator can read."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest

from dbmigrate_runner.report import Outcome
from localcluster.postgres import PostgresServer
from tests.runner.conftest import REPO, SHOP, Result, runner_env, start
from tests.runner.test_secrets import assert_no_leak, make_role

pytestmark = pytest.mark.postgres

ALEMBIC_SHOP = REPO / "examples" / "alembic-shop"


def upgrade(
    postgres: PostgresServer, database: str, tmp_path: Path, tool: str, form: str, password: str
) -> Result:
    role = make_role(postgres, database, password)
    if form == "url":
        credentials = {"DATABASE_URL": postgres.url(database, user=role, password=quote(password, safe=""))}
    else:
        credentials = {"DB_HOST": postgres.host, "DB_PORT": str(postgres.port), "DB_NAME": database,
                       "DB_USER": role, "DB_PASS": password}  # fmt: skip
    report = tmp_path / "r.json"
    env = runner_env(None, report, DBMIGRATE_TOOL=tool, DBMIGRATE_LOG_LEVEL="debug", **credentials)
    args, cwd = (
        (["upgrade", "--config", "alembic.ini"], ALEMBIC_SHOP) if tool == "alembic" else (["upgrade"], SHOP)
    )
    proc = start(args, env, cwd)
    stdout, stderr = proc.communicate(timeout=120)
    return Result(proc.returncode, stdout, stderr, report.read_text() if report.exists() else "")


# The runner's own words: a report's field name, an outcome, a log line's key or event. Before, the
# password pass over the encoded report masked them too: {"***":"Succeeded",...} — a run that
# succeeded, read by the operator as a runner that crashed without a report; and log lines lost
# their "event" key, which the operator's lock-wait reader goes by.
@pytest.mark.parametrize("password", ["outcome", "Succeeded", "applied_count", "event", "migration"])
@pytest.mark.parametrize("tool", ["aerich", "alembic"])
def test_a_password_that_is_one_of_the_runners_own_words_leaves_report_and_log_readable(
    postgres: PostgresServer, database: str, tmp_path: Path, tool: str, password: str
) -> None:
    result = upgrade(postgres, database, tmp_path, tool, "split", password)
    assert result.rc == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = result.report  # decodes
    assert report.outcome is Outcome.SUCCEEDED
    assert report.applied_count == len(report.applied) > 0
    assert report.database is not None
    # Nowhere but as the runner's own word (a field name, an event): not in a value, not on stderr.
    assert password not in result.stderr
    records = result.logs()
    assert all({"ts", "level", "event"} <= record.keys() for record in records)  # what the operator reads
    assert [r["event"] for r in records if r["event"] in ("migration.apply", "run.end")][-1] == "run.end"
    for record in records:
        values = [value for key, value in record.items() if key not in ("event", "outcome")]
        assert password not in json.dumps(values, ensure_ascii=False)


@pytest.mark.parametrize("form", ["url", "split"])
@pytest.mark.parametrize(
    "password",
    [
        "pässwörd-Ünï€odé-漢字",  # UTF-8, percent-encoded as UTF-8 in the URL
        "100%(here)s%%x",  # Alembic's Config is a configparser: % must be escaped there
        r".*+?^$[](){}|\1",  # the masker builds regexes from the values
    ],
)
def test_odd_passwords_migrate_with_alembic_and_never_show(
    postgres: PostgresServer, database: str, tmp_path: Path, form: str, password: str
) -> None:
    result = upgrade(postgres, database, tmp_path, "alembic", form, password)
    assert result.rc == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.report.outcome is Outcome.SUCCEEDED
    assert_no_leak(result, password)
