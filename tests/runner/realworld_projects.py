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
