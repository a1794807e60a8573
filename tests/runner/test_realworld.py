"""The runner migrates the database it locked, on projects shaped like public ones (real PostgreSQL).

Two databases of one server count as different. Projects: tests/runner/realworld_projects.py.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from dbmigrate_runner.report import Outcome
from localcluster.postgres import PostgresServer
from tests.runner.conftest import SHOP, Runner, finish, start
from tests.runner.realworld_projects import (
    HIDDEN_SETUP,
    NO_RUN_ENV,
    ONLINE_ONLY_ENV,
    OWN_URL_ENV,
    PLUGIN_DIRS_ENV,
    SEARCH_PATH_SETUP,
    Rev,
    add_revision,
    session_env,
    write_dialect_project,
    write_project,
)
from tests.runner.test_alembic import ALEMBIC_SHOP

pytestmark = pytest.mark.postgres

R1, R2 = "1a0000000001", "2b0000000002"
LINEAR = [Rev(R1, None, "account"), Rev(R2, R1, "item")]


def postgres_settings(pg: PostgresServer, dbname: str) -> dict[str, str]:
    """What the app's own settings read (POSTGRES_*), naming ``dbname``."""
    return {
        "POSTGRES_SERVER": pg.host,
        "POSTGRES_PORT": str(pg.port),
        "POSTGRES_USER": pg.user,
        "POSTGRES_PASSWORD": pg.password,
        "POSTGRES_DB": dbname,
    }


def tables(pg: PostgresServer, dbname: str, schema: str = "public") -> list[str]:
    out = pg.psql(dbname, f"SELECT tablename FROM pg_tables WHERE schemaname = '{schema}' ORDER BY 1")
    return out.splitlines()


def expected_fingerprint(pg: PostgresServer, dbname: str) -> str:
    system = pg.psql(dbname, "SELECT system_identifier FROM pg_control_system()")
    return hashlib.sha256(f"{system}/{dbname}".encode()).hexdigest()[:16]


@pytest.fixture
def own_url(postgres: PostgresServer, database: str, tmp_path: Path) -> Runner:
    project = write_project(tmp_path / "fastapi-like", OWN_URL_ENV, LINEAR)
    return Runner(postgres, database, project, tmp_path, "alembic")


def test_env_py_with_its_own_url_elsewhere_applies_nothing_anywhere(own_url: Runner) -> None:
    pg, locked = own_url.postgres, own_url.database
    other = pg.create_database()  # same server, another database: the one env.py's settings name
    result = own_url("upgrade", **postgres_settings(pg, other))
    assert result.rc == Outcome.CONFIG_ERROR.exit_code, result.stdout + result.stderr
    error = result.report.error
    assert error is not None
    assert error.kind == "DatabaseMismatch"
    assert "ignores DATABASE_URL" in error.message
    assert 'config.attributes["connection"]' in error.message
    assert "sqlalchemy.url" in error.message
    assert f"database {other!r}" in error.message
    assert f"fingerprint {expected_fingerprint(pg, locked)}" in error.message
    assert locked not in error.message  # the locked database's name is the Secret's
    assert tables(pg, other) == []  # not even the version table
    assert tables(pg, locked) == []
    assert result.report.applied == []
    assert result.report.database == {"fingerprint": expected_fingerprint(pg, locked)}
    # The plan refuses too: it would describe another database than the one named.
    plan = own_url("plan", **postgres_settings(pg, other))
    assert plan.rc == Outcome.CONFIG_ERROR.exit_code, plan.stdout
    assert plan.report.error is not None
    assert plan.report.error.kind == "DatabaseMismatch"


def test_a_noop_with_env_py_on_another_database_is_no_success(own_url: Runner) -> None:
    """The locked database at head, env.py's settings now naming another one (a stale variable):
    the no-op must not read the locked database's version table and say "nothing to do"."""
    pg, locked = own_url.postgres, own_url.database
    assert own_url("upgrade", **postgres_settings(pg, locked)).rc == 0
    other = pg.create_database()
    result = own_url("upgrade", **postgres_settings(pg, other))
    assert result.rc == Outcome.CONFIG_ERROR.exit_code, result.stdout + result.stderr
    assert result.report.error is not None
    assert result.report.error.kind == "DatabaseMismatch"
    assert result.events("plan.source")[0]["reason"] == "env.py: sets ['sqlalchemy.url']"
    assert not result.events("plan.noop")
    assert tables(pg, other) == []
    # On the locked database, the full path finds nothing to do (env.py ran: not read from the source).
    again = own_url("upgrade", **postgres_settings(pg, locked))
    assert again.rc == 0, again.stdout + again.stderr
    assert again.report.applied == []
    assert again.events("plan.noop")
    assert again.events("plan.noop")[0].get("read") != "source"


def test_env_py_with_its_own_url_on_the_locked_database_works(own_url: Runner) -> None:
    pg, locked = own_url.postgres, own_url.database
    result = own_url("upgrade", **postgres_settings(pg, locked))
    assert result.rc == 0, result.stdout + result.stderr
    assert result.report.applied == [f"alembic:{R1}", f"alembic:{R2}"]
    assert result.report.current_version() == f"alembic:{R2}"
    assert tables(pg, locked) == ["account", "alembic_version", "item"]
    assert result.report.database == {"fingerprint": expected_fingerprint(pg, locked)}


def _tenant_with_stale_public_table(runner: Runner) -> None:
    """tenant2 at R1 (env.py's search_path), and a stale public.alembic_version that says R2."""
    pg, db = runner.postgres, runner.database
    pg.psql(db, "CREATE SCHEMA tenant2")
    first = runner("upgrade", "--target", R1, SESSION_SETUP="SET search_path TO tenant2, public")
    assert first.rc == 0, first.stdout + first.stderr
    assert tables(pg, db, "tenant2") == ["account", "alembic_version"]
    pg.psql(
        db,
        f"CREATE TABLE public.alembic_version (version_num varchar(32) PRIMARY KEY); "
        f"INSERT INTO public.alembic_version VALUES ('{R2}')",
    )


def test_search_path_in_env_py_turns_the_fast_path_off(
    postgres: PostgresServer, database: str, tmp_path: Path
) -> None:
    project = write_project(tmp_path / "tenant", session_env(SEARCH_PATH_SETUP), LINEAR)
    runner = Runner(postgres, database, project, tmp_path, "alembic")
    _tenant_with_stale_public_table(runner)
    result = runner("upgrade")  # like `alembic upgrade head`: R2 runs in tenant2
    assert result.rc == 0, result.stdout + result.stderr
    assert result.report.applied == [f"alembic:{R2}"]
    assert tables(postgres, database, "tenant2") == ["account", "alembic_version", "item"]
    assert postgres.psql(database, "SELECT version_num FROM tenant2.alembic_version") == R2
    assert result.report.apps["alembic"].heads == [R2]  # read back from tenant2's table
    (why,) = [e for e in result.events("plan.source") if "reason" in e]
    assert "search_path" in why["reason"]


def test_fast_noop_false_forces_the_full_path(
    postgres: PostgresServer, database: str, tmp_path: Path
) -> None:
    """A search_path switch the source cannot show (from the environment): the shortcut answers from
    public.alembic_version; DBMIGRATE_FAST_NOOP=false lets env.py decide."""
    project = write_project(tmp_path / "hidden", session_env(HIDDEN_SETUP), LINEAR)
    runner = Runner(postgres, database, project, tmp_path, "alembic")
    _tenant_with_stale_public_table(runner)
    setup = "SET search_path TO tenant2, public"
    fast = runner("upgrade", SESSION_SETUP=setup)
    assert fast.rc == 0
    assert fast.report.applied == []
    assert fast.events("plan.noop")[0]["read"] == "source"
    full = runner("upgrade", SESSION_SETUP=setup, DBMIGRATE_FAST_NOOP="false")
    assert full.rc == 0, full.stdout + full.stderr
    assert full.report.applied == [f"alembic:{R2}"]
    assert "item" in tables(postgres, database, "tenant2")
    bad = runner("upgrade", SESSION_SETUP=setup, DBMIGRATE_FAST_NOOP="maybe")
    assert bad.rc == Outcome.CONFIG_ERROR.exit_code


def test_the_lock_is_taken_once_from_the_fast_check_to_the_end(alembic_shop_runner: Runner) -> None:
    result = alembic_shop_runner("upgrade")  # eligible for the shortcut, but there is work
    assert result.rc == 0, result.stdout + result.stderr
    assert len(result.events("lock.acquired")) == 1
    assert len(result.events("run.start")) == 1
    assert result.events("run.start")[0]["async_env"] is False


@pytest.fixture
def alembic_shop_runner(postgres: PostgresServer, database: str, tmp_path: Path) -> Runner:
    return Runner(postgres, database, ALEMBIC_SHOP, tmp_path, "alembic")


def test_project_dir_is_on_sys_path(postgres: PostgresServer, database: str, tmp_path: Path) -> None:
    """No prepend_sys_path in alembic.ini, run from elsewhere: env.py still imports app.core.config."""
    project = write_project(tmp_path / "noprepend", OWN_URL_ENV, LINEAR, prepend_sys_path=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    runner = Runner(postgres, database, elsewhere, tmp_path, "alembic")
    result = runner("upgrade", "--project-dir", str(project), **postgres_settings(postgres, database))
    assert result.rc == 0, result.stdout + result.stderr
    assert result.report.applied == [f"alembic:{R1}", f"alembic:{R2}"]


def test_two_heads_and_a_merge_current_is_the_merge(
    postgres: PostgresServer, database: str, tmp_path: Path
) -> None:
    """root → a, b → merge m; root → z, never merged. The merge's id sorts first, the lone branch last."""
    root, a, b, merge, lone = "5000000000aa", "6000000000bb", "7000000000cc", "1000000000dd", "f000000000ee"
    revisions = [
        Rev(root, None, "t_root"),
        Rev(a, root, "t_a"),
        Rev(b, root, "t_b"),
        Rev(merge, (a, b)),
        Rev(lone, root, "t_lone"),
    ]
    project = write_project(tmp_path / "branches", OWN_URL_ENV, revisions)
    runner = Runner(postgres, database, project, tmp_path, "alembic")
    settings = postgres_settings(postgres, database)
    first = runner("upgrade", "--target", "heads", **settings)
    assert first.rc == 0, first.stdout + first.stderr
    state = first.report.apps["alembic"]
    assert state.heads == sorted([merge, lone])
    assert state.current == merge
    again = runner("upgrade", "--target", "heads", **settings)  # the no-op, read from the source
    assert again.rc == 0
    assert again.report.applied == []
    assert again.report.apps["alembic"].current == merge
    assert again.report.apps["alembic"].versions == state.versions


def test_tortoise_config_with_its_own_url_migrates_the_locked_database(
    postgres: PostgresServer, database: str, tmp_path: Path, tool: str
) -> None:
    """A Tortoise config building its URL from POSTGRES_* (pointing elsewhere): the runner replaces
    every connection with its own, checks it, and reports which database it migrated."""
    project = shutil.copytree(SHOP, tmp_path / "shop", ignore=shutil.ignore_patterns("__pycache__"))
    config = project / "shop" / "config.py"
    text = config.read_text()
    old = 'DATABASE_URL = os.environ.get("DATABASE_URL", "postgres://postgres@localhost:5432/shop")'
    assert old in text
    config.write_text(
        text.replace(
            old,
            'DATABASE_URL = "postgres://{POSTGRES_USER}:{POSTGRES_PASSWORD}@{POSTGRES_SERVER}:'
            '{POSTGRES_PORT}/{POSTGRES_DB}".format(**os.environ)',
        )
    )
    other = postgres.create_database()
    runner = Runner(postgres, database, project, tmp_path, tool)
    result = runner("upgrade", **postgres_settings(postgres, other))
    assert result.rc == 0, result.stdout + result.stderr
    assert tables(postgres, other) == []
    assert runner.applied()
    assert result.report.database == {"fingerprint": expected_fingerprint(postgres, database)}
    assert expected_fingerprint(postgres, other) != expected_fingerprint(postgres, database)


def test_report_names_the_database_on_noop_and_plan_not_when_unreachable(shop: Runner, tool: str) -> None:
    expected = {"fingerprint": expected_fingerprint(shop.postgres, shop.database)}
    assert shop("upgrade").report.database == expected
    noop = shop("upgrade")
    assert noop.report.applied == []
    assert noop.report.database == expected
    assert shop("plan").report.database == expected
    report = shop.report_path()
    env = shop.env(report, DBMIGRATE_WAIT_TIMEOUT="1")
    env["DATABASE_URL"] = shop.postgres.url(shop.database).replace(f":{shop.postgres.port}/", ":1/")
    unreachable = finish(start(["upgrade"], env, shop.cwd), report, shop.postgres.password)
    assert unreachable.rc == Outcome.DATABASE_UNREACHABLE.exit_code
    assert unreachable.report.database is None
    assert '"database"' not in unreachable.report_text


# What a no-op run (database at head) must not import: each costs it time (docs/benchmarks.md, figure 1).
PLANNING_ONLY = {
    "pglast",
    "dbmigrate_runner.plans",
    "dbmigrate_runner.destructive",
    "dbmigrate_runner.sqlplan",
    "dbmigrate_runner.squawk",
}
WITH_WORK_ONLY = {"dbmigrate_runner.locking", "dbmigrate_runner.attempts", "logging.config"}
ALEMBIC_ONLY = {
    "alembic",
    "sqlalchemy",
    "dbmigrate_runner.tools.alembic",
    "dbmigrate_runner.tools.alembic_scan",
}
# The report's optional parts (an error, a plan, lock waits), and any dataclass: creating one costs
# about half a millisecond at import, and the aerich and Tortoise paths used to make 17 of them.
# (Alembic's own path keeps its dataclasses: alembic_scan's and tools/alembic.py's.)
NO_DATACLASSES = {"dataclasses", "dbmigrate_runner.report_parts"}


@pytest.mark.parametrize("which", ["aerich", "tortoise", "alembic"])
def test_noop_imports_nothing_of_planning_retries_or_other_tools(
    postgres: PostgresServer, database: str, tmp_path: Path, which: str
) -> None:
    """pglast (the lint) and the plan modules are imported only when planning, the lock-timeout
    retries only when there is work, Alembic's modules only for Alembic; the masker always; no
    dataclass on the aerich and Tortoise paths."""
    cwd = SHOP if which != "alembic" else ALEMBIC_SHOP
    runner = Runner(postgres, database, cwd, tmp_path, which)
    assert runner("upgrade").rc == 0
    report = runner.report_path()
    proc = start(["upgrade"], runner.env(report), cwd, python_flags=("-X", "importtime"))
    result = finish(proc, report, postgres.password)
    assert result.rc == 0, result.stdout + result.stderr
    assert result.report.applied == []
    assert result.events("plan.noop")
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert not (PLANNING_ONLY | WITH_WORK_ONLY) & imported
    if which != "alembic":
        assert not NO_DATACLASSES & imported
    assert {"asyncpg", "dbmigrate_runner.masking", "dbmigrate_runner.lock_policy"} <= imported
    others = ALEMBIC_ONLY if which != "alembic" else {"alembic", "sqlalchemy"}
    assert not others & imported


def test_fast_noop_false_opens_the_tortoise_tools_too(shop: Runner, tool: str) -> None:
    assert shop("upgrade").rc == 0
    full = shop("upgrade", DBMIGRATE_FAST_NOOP="false")
    assert full.rc == 0, full.stdout + full.stderr
    assert full.report.applied == []
    assert full.events("plan.full")  # Tortoise.init with the app's config, the identity checked
    assert full.events("migrations.done")[0]["count"] == 0


PG_REVS = [Rev("a10000000001", None, "flow"), Rev("a20000000002", "a10000000001", "flow_run")]
PG_REVS += [Rev("a30000000003", "a20000000002", "task_run")]
LITE_REVS = [Rev("b10000000001", None, "lite_flow")]


def test_version_locations_set_by_env_py_are_the_ones_used(
    postgres: PostgresServer, database: str, tmp_path: Path
) -> None:
    """env.py picks versions/postgresql at run time (context.script.version_locations): the runner
    must read the revisions after env.py ran, as `alembic upgrade head` does; reading them before
    said "nothing to do" (Succeeded, current null) on an empty database."""
    project = write_dialect_project(tmp_path / "dialect-dirs", PG_REVS, LITE_REVS)
    runner = Runner(postgres, database, project, tmp_path, "alembic")
    a1, a2, a3 = (f"alembic:{r.rev}" for r in PG_REVS)

    plan = runner("plan")
    assert plan.rc == 0, plan.stdout + plan.stderr
    assert plan.report.plan is not None
    assert plan.report.plan.pending == [a1, a2, a3]

    first = runner("upgrade", "--target", PG_REVS[1].rev[:4])  # a prefix, resolved from env.py's dirs
    assert first.rc == 0, first.stdout + first.stderr
    assert first.report.applied == [a1, a2]
    result = runner("upgrade")
    assert result.rc == 0, result.stdout + result.stderr
    assert result.report.applied == [a3]
    assert result.report.apps["alembic"].current == PG_REVS[2].rev
    assert tables(postgres, database) == ["alembic_version", "flow", "flow_run", "task_run"]
    assert postgres.psql(database, "SELECT version_num FROM alembic_version") == PG_REVS[2].rev

    down = runner("downgrade", "--target", PG_REVS[0].rev)
    assert down.rc == 0, down.stdout + down.stderr
    assert down.report.applied == [a3, a2]
    assert tables(postgres, database) == ["alembic_version", "flow"]
    status = runner("status")
    assert status.rc == 0, status.stdout + status.stderr
    assert status.report.apps["alembic"].current == PG_REVS[0].rev


def test_a_plugin_directory_added_by_env_py_is_no_fast_noop(
    postgres: PostgresServer, database: str, tmp_path: Path
) -> None:
    """env.py adds a plugin's versions directory at run time: the database at the head of
    migrations/versions is not at head, and the no-op read from the source must not say it is."""
    project = write_project(tmp_path / "plugins", PLUGIN_DIRS_ENV, LINEAR)
    (project / "migrations" / "plugin_versions").mkdir()
    runner = Runner(postgres, database, project, tmp_path, "alembic")
    first = runner("upgrade")
    assert first.rc == 0, first.stdout + first.stderr
    assert first.report.applied == [f"alembic:{R1}", f"alembic:{R2}"]

    plugin = Rev("3c0000000003", R2, "plugin_table")
    add_revision(project / "migrations" / "plugin_versions", plugin)
    result = runner("upgrade")
    assert result.rc == 0, result.stdout + result.stderr
    assert result.report.applied == [f"alembic:{plugin.rev}"]
    assert "plugin_table" in tables(postgres, database)
    assert postgres.psql(database, "SELECT version_num FROM alembic_version") == plugin.rev
    (why,) = [e["reason"] for e in result.events("plan.source")]
    assert why == "env.py: script.version_locations"


def test_an_env_py_that_runs_nothing_offline_plans_revisions_as_not_sql(
    postgres: PostgresServer, database: str, tmp_path: Path
) -> None:
    """`alembic upgrade head --sql` prints no SQL for such an env.py and succeeds; the plan said
    ConfigError ("alembic's offline SQL runs nothing") and could not be approved at all."""
    project = write_project(tmp_path / "online-only", ONLINE_ONLY_ENV, LINEAR)
    runner = Runner(postgres, database, project, tmp_path, "alembic")
    planned = runner("plan")
    assert planned.rc == 0, planned.stdout + planned.stderr
    summary = planned.report.plan
    assert summary is not None
    assert summary.pending == [f"alembic:{R1}", f"alembic:{R2}"]
    assert summary.opaque == summary.pending
    assert "offline mode is not supported" in planned.stdout  # env.py's print, passed on (masked)
    (line,) = [x for x in planned.stdout.splitlines() if '"event": "plan.document"' in x]
    reasons = [step["opaque"] for step in json.loads(line)["plan"]["steps"]]
    assert all("runs no migrations in offline mode" in why[0] for why in reasons)
    applied = runner("upgrade", "--expect-plan", summary.hash)
    assert applied.rc == 0, applied.stdout + applied.stderr
    assert applied.report.applied == summary.pending


def test_an_env_py_that_never_runs_migrations_is_no_success(
    postgres: PostgresServer, database: str, tmp_path: Path
) -> None:
    """env.py never calls context.run_migrations(): upgrade said Succeeded with nothing applied
    and status "0 applied" whatever the database held; now neither claims anything."""
    project = write_project(tmp_path / "no-run", NO_RUN_ENV, LINEAR)
    runner = Runner(postgres, database, project, tmp_path, "alembic")
    postgres.psql(database, "CREATE TABLE alembic_version (version_num varchar(32))")
    postgres.psql(database, f"INSERT INTO alembic_version VALUES ('{R1}')")
    for command in (["upgrade"], ["status"], ["plan"], ["downgrade", "--target", "base"]):
        result = runner(*command)
        assert result.rc == Outcome.CONFIG_ERROR.exit_code, result.stdout + result.stderr
        assert result.report.error is not None
        assert result.report.error.kind == "NoMigrationsRun", command
        assert "context.run_migrations()" in result.report.error.message
    assert tables(postgres, database) == ["alembic_version"]
