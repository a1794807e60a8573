"""What reaches stdout and stderr besides the runner's own log lines, and what a log line leaves out."""

from __future__ import annotations

from pathlib import Path

import pytest

from localcluster.postgres import PostgresServer
from tests.runner.conftest import REPO, Runner, copy_shop, finish, runner_env, start

pytestmark = pytest.mark.postgres

ALEMBIC_SHOP = REPO / "examples" / "alembic-shop"

LOUD_CONFIG = """

import sys
import threading

# A config that prints what it was given, bypassing logging: print(), stderr, a thread's traceback.
print("connecting with", os.environ["DATABASE_URL"], "password", os.environ.get("DB_PASS"))
sys.stderr.write("db password: " + str(os.environ.get("DB_PASS")) + "\\n")


def _fail() -> None:
    raise RuntimeError("cannot use " + str(os.environ.get("DB_PASS")))


_thread = threading.Thread(target=_fail)
_thread.start()
_thread.join()
"""


def test_what_an_app_prints_past_the_logger_is_masked(
    postgres: PostgresServer, database: str, tmp_path: Path
) -> None:
    project = copy_shop(tmp_path / "shop")
    with (project / "shop" / "config.py").open("a") as config:
        config.write(LOUD_CONFIG)
    report = tmp_path / "r.json"
    env = runner_env(postgres.url(database), report, DB_PASS=postgres.password)
    result = finish(start(["upgrade"], env, project), report, postgres.password)
    assert result.rc == 0, result.stdout + result.stderr
    # The user is "postgres": from the Secret too, so the word "postgres" goes wherever it stands.
    assert "connecting with ***://***:***@***:***/*** password ***" in result.stdout
    assert "db password: ***" in result.stderr
    assert "RuntimeError: cannot use ***" in result.stderr  # threading's own traceback


def test_run_start_says_nothing_it_does_not_know(alembic_shop_runner: Runner) -> None:
    """Issue 19: on the no-op path Alembic's env.py is not read, and run.start logged
    ``"async_env": null``; the field now appears only when it means something."""
    first = alembic_shop_runner("upgrade")
    assert first.rc == 0, first.stdout
    again = alembic_shop_runner("upgrade")
    assert again.rc == 0, again.stdout
    assert again.events("plan.noop")
    for result in (first, again):
        for start_line in result.events("run.start"):
            assert start_line.get("async_env", False) is not None, start_line
    status = alembic_shop_runner("status")
    (start_line,) = status.events("run.start")
    assert start_line["async_env"] is False  # read from env.py: a sync one


@pytest.fixture
def alembic_shop_runner(postgres: PostgresServer, database: str, tmp_path: Path) -> Runner:
    return Runner(postgres, database, ALEMBIC_SHOP, tmp_path, "alembic")
