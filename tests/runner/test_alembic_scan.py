"""The Alembic project read from its source alone (no Alembic, nothing executed): pure, fast."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dbmigrate_runner.tools.alembic_scan import oldest_first, scan
from tests.runner.test_alembic import ALEMBIC_SHOP, BASE, BIO, CASCADE, MERGE, ORDERS


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    return shutil.copytree(ALEMBIC_SHOP, tmp_path / "shop", ignore=shutil.ignore_patterns("__pycache__"))


def test_the_example_as_alembic_sees_it(shop: Path) -> None:
    sync = scan(shop / "alembic.ini", shop)
    assert sync is not None
    assert (sync.table, sync.schema, sync.heads) == ("shop_alembic_version", None, (MERGE,))
    assert sync.down == {BASE: (), ORDERS: (BASE,), CASCADE: (ORDERS,), BIO: (BASE,), MERGE: (CASCADE, BIO)}
    assert sync.ancestry((MERGE,)) == [BASE, ORDERS, CASCADE, BIO, MERGE]
    assert sync.ancestry((CASCADE,)) == [BASE, ORDERS, CASCADE]
    assert sync.ancestry((ORDERS,)) == [BASE, ORDERS]
    assert sync.ancestry(()) == []
    assert sync.ancestry(("ffffffffffff",)) is None
    async_ = scan(shop / "alembic-async.ini", shop)
    assert async_ is not None
    assert (async_.table, async_.heads) == ("alembic_version", (MERGE,))  # via version_locations
    assert async_.down == sync.down


def test_the_order_puts_every_revision_after_its_ancestors() -> None:
    down = {"r": (), "a1": ("r",), "a2": ("a1",), "b1": ("r",), "m": ("a2", "b1"), "z": ("m",)}
    order = oldest_first(down, ["z"])
    assert order is not None
    assert sorted(order) == sorted(down)
    assert all(order.index(below) < order.index(rev) for rev, downs in down.items() for below in downs)
    assert order[-1] == "z"
    # Two heads: the one with the longer history last (it is `current`), whatever the ids.
    assert oldest_first(down, ["a2", "b1"]) == ["r", "b1", "a1", "a2"]
    assert oldest_first({"r": (), "z": ("r",), "a": ("r",), "b": ("a",)}, ["z", "b"]) == ["r", "z", "a", "b"]
    assert oldest_first({"a": ("gone",)}, ["a"]) is None


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


MERGE_FILE = f"migrations/versions/{MERGE}_merge_orders_and_bio.py"
ENV = "migrations/env.py"


@pytest.mark.parametrize(
    ("file", "old", "new"),
    [
        # a computed revision id, a computed down revision, dependencies
        (MERGE_FILE, "revision: str = 'd0e1f2a3b4c5'", "revision: str = 'd0e1f2a3b4c5'.upper()"),
        (MERGE_FILE, "= ('9a2d1282dd17', 'c4d5e6f7a8b9')", "= tuple(['9a2d1282dd17', 'c4d5e6f7a8b9'])"),
        (MERGE_FILE, "depends_on: Union[str, Sequence[str], None] = None", "depends_on = 'a1b2c3d4e5f6'"),
        # a version table named at run time, or passed through **options
        (ENV, 'version_table="shop_alembic_version"', 'version_table=os.environ["TABLE"]'),
        (ENV, 'version_table="shop_alembic_version"', '**{"version_table": "x"}'),
        # the ini points elsewhere or adds locations
        ("alembic.ini", "script_location = %(here)s/migrations", "script_location = shop:migrations"),
        ("alembic.ini", "[alembic]", "[alembic]\nversion_locations = shop:more"),
        ("alembic.ini", "[alembic]", "[alembic]\nsourceless = true"),
    ],
)
def test_anything_not_literal_leaves_the_decision_to_alembic(
    shop: Path, file: str, old: str, new: str
) -> None:
    assert scan(shop / "alembic.ini", shop) is not None
    _edit(shop / file, old, new)
    assert scan(shop / "alembic.ini", shop) is None


def test_two_configure_calls_must_agree(shop: Path) -> None:
    env_py = shop / ENV
    text = env_py.read_text()
    assert text.count('version_table="shop_alembic_version"') == 2  # offline and online
    env_py.write_text(text.replace('version_table="shop_alembic_version"', 'version_table="other"', 1))
    assert scan(shop / "alembic.ini", shop) is None


def test_missing_pieces(shop: Path, tmp_path: Path) -> None:
    assert scan(tmp_path / "none.ini", shop) is None
    (shop / "migrations" / "versions" / "junk.py").write_text("x = 1\n")  # no revision: Alembic fails
    assert scan(shop / "alembic.ini", shop) is None


@pytest.mark.parametrize(
    ("where", "text"),
    [
        (ENV, 'connection.exec_driver_sql("SET search_path TO tenant2, public")\n'),
        (ENV, 'connect_args = {"options": "-csearch_path=tenant2"}\n'),
        (ENV, 'connection = connection.execution_options(schema_translate_map={None: "t2"})\n'),
        (ENV, 'connection.execute(text("SET ROLE tenant_owner"))\n'),
        (ENV, "connection.execute(text(\"SELECT set_config('search_path', 'x', false)\"))\n"),
        ("shop_sa/models.py", "SCHEMA_SETUP = \"SET SCHEMA 'tenant2'\"\n"),  # a module env.py imports
        ("shop_sa/__init__.py", "SEARCH_PATH = 'tenant2'\n"),  # the package on the way
    ],
)
def test_what_moves_the_version_table_turns_the_shortcut_off(shop: Path, where: str, text: str) -> None:
    reasons: list[str] = []
    assert scan(shop / "alembic.ini", shop, reasons) is not None
    assert reasons == []
    path = shop / where
    path.write_text(path.read_text() + text)
    assert scan(shop / "alembic.ini", shop, reasons) is None
    assert reasons
    assert reasons[0].startswith(f"{path.name}: ")


def test_modules_outside_the_project_are_not_followed(shop: Path) -> None:
    """env.py imports sqlalchemy and alembic, whose sources mention search_path: not the project's."""
    assert "from sqlalchemy" in (shop / ENV).read_text()
    assert scan(shop / "alembic.ini", shop) is not None


def test_imports_are_followed_through_relative_imports(shop: Path) -> None:
    """env.py → shop_sa.models → (relative) .session, where the engine switches search_path."""
    (shop / "shop_sa" / "session.py").write_text('OPTIONS = {"options": "-c search_path=tenant2"}\n')
    models = shop / "shop_sa" / "models.py"
    assert scan(shop / "alembic.ini", shop) is not None
    models.write_text("from .session import (\n    OPTIONS,\n)\n" + models.read_text())
    reasons: list[str] = []
    assert scan(shop / "alembic.ini", shop, reasons) is None
    assert reasons == ["session.py: search_path"]


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        # full-stack-fastapi-template's way: the ini section copied, its URL replaced by the settings'.
        (
            "connectable = engine_from_config(",
            'section = {}\n    section["sqlalchemy.url"] = settings_url()\n'
            "    connectable = engine_from_config(",
            "env.py: sets ['sqlalchemy.url']",
        ),
        (
            "connectable = engine_from_config(",
            'config.set_main_option("sqlalchemy.url", settings_url())\n    connectable = engine_from_config(',
            "env.py: set_main_option('sqlalchemy.url', ...)",
        ),
        (
            "connectable = engine_from_config(",
            'engine_from_config({"sqlalchemy.url": settings_url()})\n    connectable = engine_from_config(',
            "env.py: a dict with 'sqlalchemy.url'",
        ),
        (
            "connectable = engine_from_config(",
            "connectable = create_engine(settings_url())\n    unused = engine_from_config(",
            "env.py: create_engine()",
        ),
    ],
)
def test_an_env_py_with_its_own_url_turns_the_shortcut_off(
    shop: Path, old: str, new: str, reason: str
) -> None:
    """The shortcut reads the runner's database; an env.py that may connect elsewhere leaves the
    decision to the full path, whose identity check runs env.py (test_realworld.py)."""
    _edit(shop / ENV, old, new)
    reasons: list[str] = []
    assert scan(shop / "alembic.ini", shop, reasons) is None
    assert reasons == [reason]


def test_an_env_py_whose_engine_comes_from_elsewhere_turns_the_shortcut_off(shop: Path) -> None:
    """No engine_from_config() and no config.attributes: the engine is the app's own (imported)."""
    env = shop / ENV
    text = env.read_text()
    text = text.replace("engine_from_config", "app_engine").replace("config.attributes", "config.options")
    env.write_text(text)
    reasons: list[str] = []
    assert scan(shop / "alembic.ini", shop, reasons) is None
    assert reasons == ["env.py: neither engine_from_config() nor config.attributes"]
