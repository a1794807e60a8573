"""Alembic projects shaped like public ones (written here, not copied): an env.py that builds its
own URL from its own settings (``POSTGRES_SERVER``, ``POSTGRES_DB``… through a pydantic model, as
FastAPI templates do), a ``search_path`` switch, branched histories with merges."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

INI = """\
[alembic]
script_location = migrations
{prepend}
sqlalchemy.url = postgresql+psycopg://nobody@localhost/unused
"""

# The app's settings: a pydantic model filled from POSTGRES_* variables, the URL computed from them.
SETTINGS = """\
import os

from pydantic import BaseModel, computed_field


class Settings(BaseModel):
    POSTGRES_SERVER: str
    POSTGRES_PORT: int = 5432
    POSTGRES_USER: str
    POSTGRES_PASSWORD: str = ""
    POSTGRES_DB: str = ""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def SQLALCHEMY_DATABASE_URI(self) -> str:
        return (
            f"postgresql+psycopg://{self.POSTGRES_USER}:{self.POSTGRES_PASSWORD}"
            f"@{self.POSTGRES_SERVER}:{self.POSTGRES_PORT}/{self.POSTGRES_DB}"
        )


settings = Settings(**{k: v for k, v in os.environ.items() if k.startswith("POSTGRES_")})
"""

# env.py that ignores sqlalchemy.url and DATABASE_URL: its URL comes from the app's settings.
OWN_URL_ENV = """\
from alembic import context
from sqlalchemy import engine_from_config, pool

from app.core.config import settings

config = context.config
target_metadata = None


def get_url():
    return str(settings.SQLALCHEMY_DATABASE_URI)


def run_migrations_offline():
    context.configure(url=get_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    configuration = config.get_section(config.config_ini_section) or {}
    configuration["sqlalchemy.url"] = get_url()
    connectable = engine_from_config(configuration, prefix="sqlalchemy.", poolclass=pool.NullPool)
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
"""

# env.py on the runner's URL whose session first runs SETUP_SQL (a search_path switch, say).
SESSION_ENV = """\
import os

from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config


def run_migrations_online():
    connectable = engine_from_config(
        config.get_section(config.config_ini_section) or {}, prefix="sqlalchemy.", poolclass=pool.NullPool
    )
    with connectable.connect() as connection:
        {setup}
        connection.commit()
        context.configure(connection=connection, target_metadata=None)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
"""
SEARCH_PATH_SETUP = 'connection.exec_driver_sql("SET search_path TO tenant2, public")'
# The same switch where reading the source cannot see it (it comes from the environment).
HIDDEN_SETUP = 'connection.exec_driver_sql(os.environ["SESSION_SETUP"])'

REVISION = '''\
"""{message}"""
from alembic import op

revision = "{rev}"
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade():
    {body}


def downgrade():
    pass
'''


@dataclass(frozen=True)
class Rev:
    rev: str
    down: str | tuple[str, ...] | None
    table: str | None = None  # the table it creates (None: a merge, nothing to do)


def write_project(
    root: Path, env_py: str, revisions: Sequence[Rev], *, prepend_sys_path: bool = True
) -> Path:
    (root / "migrations" / "versions").mkdir(parents=True)
    (root / "app" / "core").mkdir(parents=True)
    (root / "app" / "__init__.py").write_text("")
    (root / "app" / "core" / "__init__.py").write_text("")
    (root / "app" / "core" / "config.py").write_text(SETTINGS)
    (root / "alembic.ini").write_text(INI.format(prepend="prepend_sys_path = ." if prepend_sys_path else ""))
    (root / "migrations" / "env.py").write_text(env_py)
    for r in revisions:
        body = f'op.execute("CREATE TABLE {r.table} (id int PRIMARY KEY)")' if r.table else "pass"
        down = r.down if not isinstance(r.down, tuple) else tuple(r.down)
        (root / "migrations" / "versions" / f"{r.rev}_step.py").write_text(
            REVISION.format(message=f"step {r.rev}", rev=r.rev, down=down, body=body)
        )
    return root


def session_env(setup: str) -> str:
    return SESSION_ENV.replace("{setup}", setup)


# env.py that says at run time where the revisions are: one versions directory per dialect, chosen
# from the URL, as projects supporting PostgreSQL and SQLite keep them (prefect's shape). Its async
# engine runs in a thread of its own, with one transaction per revision.
DIALECT_DIRS_ENV = """\
import asyncio
import os
import threading

from alembic import context
from sqlalchemy.ext.asyncio import async_engine_from_config

config = context.config
url = config.get_main_option("sqlalchemy.url")
flavour = "postgresql" if url.startswith("postgresql") else "sqlite"
here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "versions", flavour)


def migrate(connection):
    context.configure(connection=connection, include_schemas=True, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


async def online():
    context.script.version_locations = [here]
    section = config.get_section(config.config_ini_section) or {}
    engine = async_engine_from_config(section, prefix="sqlalchemy.")
    async with engine.connect() as connection:
        await connection.run_sync(migrate)
    await engine.dispose()


def offline():
    context.script.version_locations = [here]
    context.configure(url=url, literal_binds=True, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


def in_a_thread():
    failed = []

    def work():
        try:
            asyncio.run(online())
        except BaseException as exc:
            failed.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    if failed:
        raise failed[0]


if context.is_offline_mode():
    offline()
else:
    in_a_thread()
"""


def write_dialect_project(root: Path, postgresql: Sequence[Rev], sqlite: Sequence[Rev]) -> Path:
    """A project whose revisions are under versions/postgresql and versions/sqlite (two histories,
    nothing in versions/ itself), env.py choosing between them (:data:`DIALECT_DIRS_ENV`)."""
    write_project(root, DIALECT_DIRS_ENV, [])
    for flavour, revisions in (("postgresql", postgresql), ("sqlite", sqlite)):
        folder = root / "migrations" / "versions" / flavour
        folder.mkdir()
        for r in revisions:
            body = f'op.execute("CREATE TABLE {r.table} (id int PRIMARY KEY)")'
            (folder / f"{r.rev}_step.py").write_text(
                REVISION.format(message=f"step {r.rev}", rev=r.rev, down=r.down, body=body).replace(
                    "def downgrade():\n    pass", f'def downgrade():\n    op.execute("DROP TABLE {r.table}")'
                )
            )
    return root


# env.py on the runner's URL that adds a plugin's revisions directory to the one alembic.ini implies
# (migrations/versions): what it runs is more than the source's literals tell.
PLUGIN_DIRS_ENV = """\
import os

from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config
here = os.path.dirname(os.path.abspath(__file__))
locations = [os.path.join(here, "versions"), os.path.join(here, "plugin_versions")]
context.script.version_locations = locations

section = config.get_section(config.config_ini_section) or {}
engine = engine_from_config(section, prefix="sqlalchemy.", poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
"""


def add_revision(folder: Path, r: Rev) -> None:
    """One more revision file creating ``r.table`` (folder created when missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    body = f'op.execute("CREATE TABLE {r.table} (id int PRIMARY KEY)")'
    (folder / f"{r.rev}_step.py").write_text(
        REVISION.format(message=f"step {r.rev}", rev=r.rev, down=r.down, body=body)
    )


# env.py that runs online only: offline (`--sql`) it prints a line and runs no migrations, as
# projects whose migrations need a live connection do.
ONLINE_ONLY_ENV = """\
from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config


def run_migrations_online():
    section = config.get_section(config.config_ini_section) or {}
    connectable = engine_from_config(section, prefix="sqlalchemy.", poolclass=pool.NullPool)
    print("migrating the core schema")
    with connectable.connect() as connection:
        context.configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    print("offline mode is not supported")
else:
    run_migrations_online()
"""


# env.py that configures a connection but never calls run_migrations() (a tenant env.py used only
# for autogenerate, its migrations run by the project's own command): `alembic upgrade` does nothing.
NO_RUN_ENV = """\
from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config
section = config.get_section(config.config_ini_section) or {}
connectable = engine_from_config(section, prefix="sqlalchemy.", poolclass=pool.NullPool)
with connectable.connect() as connection:
    context.configure(connection=connection, include_schemas=True)
"""
