"""Two apps in one config: app selection, aerich table bootstrap, tortoise cross-app dependencies."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbmigrate_runner.sqlplan import from_dict
from localcluster.postgres import PostgresServer
from tests.runner.conftest import Runner

pytestmark = pytest.mark.postgres

CONFIG = """\
import os

URL = os.environ["DATABASE_URL"]
TORTOISE_ORM = {
    "connections": {"default": URL},
    "apps": {
        "models": {"models": ["multi.models", "aerich.models"]},
        "users": {"models": ["multi.users"]},
    },
}
TORTOISE_ORM_BUILTIN = {
    "connections": {"default": URL},
    "apps": {
        "models": {"models": ["multi.models"], "migrations": "multi.models_migrations"},
        "users": {"models": ["multi.users"], "migrations": "multi.users_migrations"},
    },
}
"""
AERICH = '''\
async def upgrade(db) -> str:
    return """{up}"""


async def downgrade(db) -> str:
    return """{down}"""
'''
TORTOISE = """\
from tortoise import migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = {deps!r}
    operations = [ops.RunSQL({up!r}, reverse_sql={down!r})]
"""
AERICH_TABLE = (
    'CREATE TABLE IF NOT EXISTS "aerich" ("id" SERIAL NOT NULL PRIMARY KEY, "version" VARCHAR(255) NOT NULL, '
    '"app" VARCHAR(100) NOT NULL, "content" JSONB NOT NULL);'
)


def make_project(root: Path) -> None:
    pkg = root / "multi"
    pkg.mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        '[tool.aerich]\ntortoise_orm = "multi.config.TORTOISE_ORM"\nlocation = "./migrations"\n\n'
        '[tool.tortoise]\ntortoise_orm = "multi.config.TORTOISE_ORM_BUILTIN"\n'
    )
    (pkg / "__init__.py").write_text("")
    (pkg / "config.py").write_text(CONFIG)
    model = "from tortoise import fields\nfrom tortoise.models import Model\n\n\nclass {0}(Model):\n"
    model += "    id = fields.IntField(primary_key=True)\n"
    (pkg / "models.py").write_text(model.format("Item"))
    (pkg / "users.py").write_text(model.format("Account"))
    item = ('CREATE TABLE "item" ("id" SERIAL PRIMARY KEY);', 'DROP TABLE "item";')
    account = ('CREATE TABLE "account" ("id" SERIAL PRIMARY KEY);', 'DROP TABLE "account";')
    for app, (up, down) in (("models", item), ("users", account)):
        folder = root / "migrations" / app
        folder.mkdir(parents=True)
        # Like `aerich init-db`: only the app holding aerich.models creates the aerich table.
        sql = up + (AERICH_TABLE if app == "models" else "")
        (folder / "0_20260101000000_init.py").write_text(AERICH.format(up=sql, down=down))
        tpkg = pkg / f"{app}_migrations"
        tpkg.mkdir()
        (tpkg / "__init__.py").write_text("")
        deps = [("models", "0001_init")] if app == "users" else []
        (tpkg / "0001_init.py").write_text(TORTOISE.format(deps=deps, up=up, down=down))


@pytest.fixture
def multi(postgres: PostgresServer, database: str, tmp_path: Path, tool: str) -> Runner:
    make_project(tmp_path / "proj")
    return Runner(postgres, database, tmp_path / "proj", tmp_path, tool)


def test_app_selection_bootstrap_and_dependencies(multi: Runner, tool: str) -> None:
    first = multi("upgrade", "--app", "users")
    assert first.rc == 0, first.stdout
    name = "0_20260101000000_init" if tool == "aerich" else "0001_init"
    if tool == "aerich":
        # users' migration does not create the aerich table: the runner bootstrapped it.
        assert first.report.applied == [f"users:{name}"]
        assert "item" not in multi.tables()
    else:
        # users:0001 depends on models:0001, so the executor applies that first.
        assert first.report.applied == [f"models:{name}", f"users:{name}"]
    assert first.report.apps["users"].versions == [name]

    second = multi("upgrade")
    assert second.rc == 0, second.stdout
    assert set(second.report.apps) == {"models", "users"}
    assert all(state.versions == [name] for state in second.report.apps.values())
    table = "aerich" if tool == "aerich" else "tortoise_migrations"
    assert multi.postgres.psql(multi.database, f"SELECT count(*) FROM {table}") == "2"


def test_split_credentials_satisfy_a_config_that_requires_database_url(
    postgres: PostgresServer, database: str, tmp_path: Path
) -> None:
    from tests.runner.conftest import finish, runner_env, start

    make_project(tmp_path / "proj")
    report = tmp_path / "r.json"
    env = runner_env(None, report, DB_HOST=postgres.host, DB_PORT=str(postgres.port), DB_NAME=database,
                     DB_USER=postgres.user, DB_PASS=postgres.password, DBMIGRATE_TOOL="tortoise")  # fmt: skip
    result = finish(start(["upgrade"], env, tmp_path / "proj"), report, postgres.password)
    assert result.rc == 0, result.stdout
    assert set(result.report.apps) == {"models", "users"}


def test_tortoise_app_whose_newest_migration_another_app_depends_on(
    postgres: PostgresServer, database: str, tmp_path: Path
) -> None:
    """models:0001 is a dependency of users:0001, so it is no leaf of the graph: it must still be applied."""
    make_project(tmp_path / "proj")
    runner = Runner(postgres, database, tmp_path / "proj", tmp_path, "tortoise")
    result = runner("upgrade", "--app", "models")
    assert result.rc == 0, result.stdout
    assert result.report.applied == ["models:0001_init"]
    assert runner.applied() == ["0001_init"]
    assert "item" in runner.tables()
    assert "account" not in runner.tables()


@pytest.mark.parametrize("selection", [(), ("--app", "users")], ids=["all", "users"])
def test_plan_lists_what_the_upgrade_applies_in_its_order(
    multi: Runner, tool: str, selection: tuple[str, ...]
) -> None:
    """Across apps (tortoise: a cross-app dependency comes first), the plan's order is the run's."""
    planned = multi("plan", *selection)
    assert planned.rc == 0, planned.stdout
    (doc,) = planned.events("plan.document")
    plan = from_dict(doc["plan"])
    applied = multi("upgrade", *selection, "--expect-plan", plan.hash)
    assert applied.rc == 0, applied.stdout
    assert applied.report.applied == plan.pending
    assert all(step.statements for step in plan.steps)


# The users app on a connection of its own, from its own variable (a second database in production,
# the same one when the variable is unset), as multi-database Tortoise configs do.
TWO_DATABASES = """
for config in (TORTOISE_ORM, TORTOISE_ORM_BUILTIN):
    config["connections"]["users_db"] = os.environ.get("USERS_DATABASE_URL", URL)
    config["apps"]["users"]["default_connection"] = "users_db"
"""


def test_apps_on_two_databases_are_refused_unless_run_one_database_at_a_time(
    postgres: PostgresServer, database: str, tmp_path: Path, tool: str
) -> None:
    """`aerich upgrade` creates each app's tables in its own connection's database; the runner
    (one lock, one database) created them all in its own, leaving the users database empty."""
    make_project(tmp_path / "proj")
    with (tmp_path / "proj" / "multi" / "config.py").open("a") as config:
        config.write(TWO_DATABASES)
    runner = Runner(postgres, database, tmp_path / "proj", tmp_path, tool)
    users_db = postgres.create_database()
    elsewhere = {"USERS_DATABASE_URL": postgres.url(users_db)}

    both = runner("upgrade", **elsewhere)
    assert both.rc == 2, both.stdout + both.stderr
    assert both.report.error is not None
    assert both.report.error.kind == "SeveralDatabases"
    assert "models (default); users (users_db)" in both.report.error.message
    assert "--app" in both.report.error.message
    assert runner.tables() == []
    assert runner.applied() == []

    # One database at a time: each run names its database and the apps on it.
    name = "0_20260101000000_init" if tool == "aerich" else "0001_init"
    main = runner("upgrade", "--app", "models", **elsewhere)
    assert main.rc == 0, main.stdout + main.stderr
    assert main.report.applied == [f"models:{name}"]
    if tool == "tortoise":
        # users:0001 depends on models:0001, which is in the other database: Tortoise's graph is per
        # connection, so this project can only be run whole, on one database.
        return
    users = Runner(postgres, users_db, tmp_path / "proj", tmp_path, tool)
    second = users("upgrade", "--app", "users", **elsewhere)
    assert second.rc == 0, second.stdout + second.stderr
    assert second.report.applied == [f"users:{name}"]
    assert "account" in users.tables()
    assert "account" not in runner.tables()

    # Two connection names for one database (the variable unset): one database, no refusal.
    same = Runner(postgres, postgres.create_database(), tmp_path / "proj", tmp_path, tool)
    together = same("upgrade")
    assert together.rc == 0, together.stdout + together.stderr
    assert {"item", "account"} <= set(same.tables())
