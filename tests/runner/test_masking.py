"""The masker against what libraries really print of a database URL or a credential: pydantic's
shortened inputs, SQLAlchemy's URL renderings and errors, asyncpg's and psycopg's errors from a real
server, Tortoise's own "masking". Not a piece of a Secret value MIN_FRAGMENT long gets through."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import asyncpg
import pydantic
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from dbmigrate_runner.masking import MASK, MIN_FRAGMENT, Masker, secret_values
from localcluster.postgres import PostgresServer

# 24 characters, like the password whose 15 characters went through (issue 19).
PASSWORD = "Kq7ZmXl6cb3aYUL4nLQnTw9R"
KEY = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"


def pieces(value: str) -> set[str]:
    return {value[i : i + MIN_FRAGMENT] for i in range(len(value) - MIN_FRAGMENT + 1)}


def assert_clean(masked: str, *values: str) -> None:
    for value in values:
        found = sorted(p for p in pieces(value) if p in masked)
        assert not found, f"pieces {found} of {value!r} in: {masked}"


def error_text(exc: BaseException) -> list[str]:
    """The ways an error reaches an output: str, repr, and the runner's "Kind: text"."""
    return [str(exc), repr(exc), f"{type(exc).__name__}: {exc}"]


class AppSettings(pydantic.BaseModel):
    """What an env.py or a config module does with pydantic settings."""

    database_url: pydantic.PostgresDsn
    port: int = 5432


def test_pydantic_shortened_url_with_a_bad_host() -> None:
    """A trailing space in a host setting: pydantic refuses the URL and prints it cut in the
    middle, a run of the password after its ``...``."""
    env = {"DB_HOST": "a b", "DB_PORT": "1", "DB_NAME": "x", "DB_USER": "postgres", "DB_PASS": PASSWORD}
    mask = Masker(secret_values(env))
    with pytest.raises(pydantic.ValidationError) as info:
        AppSettings(database_url=f"postgresql+psycopg://postgres:{PASSWORD}@a b:1/x")  # type: ignore[arg-type]
    shown = str(info.value)
    assert "..." in shown  # what pydantic really prints: the URL cut, a piece of the password left
    assert PASSWORD[-8:] in shown
    for rendered in [*error_text(info.value), info.value.json()]:
        assert_clean(mask(rendered), PASSWORD)


@pytest.mark.parametrize(
    ("user_len", "db_len"), [(1, 1), (1, 6), (1, 11), (1, 16), (12, 1), (12, 9), (30, 3)]
)
def test_pydantic_cuts_anywhere_in_the_password(user_len: int, db_len: int) -> None:
    """pydantic keeps the start and the end of a long input: with a longer user name or database
    name the cut moves through the password, and what is left of it (with or without the ``:``
    before it) is masked."""
    url = f"postgresql://{'u' * user_len}:{PASSWORD}@a b:1/{'d' * db_len}"
    mask = Masker(secret_values({"DATABASE_URL": url}))
    with pytest.raises(pydantic.ValidationError) as info:
        AppSettings(database_url=url)  # type: ignore[arg-type]
    assert any(p in str(info.value) for p in pieces(PASSWORD))  # what pydantic prints holds a part
    for rendered in [*error_text(info.value), info.value.json()]:
        assert_clean(mask(rendered), PASSWORD)


@pytest.mark.parametrize("key", ["DB_PORT", "DB_HOST", "DB_USER", "DB_NAME", "DB_PASS"])
def test_pydantic_echo_of_any_key(key: str) -> None:
    """A value routed through any key, refused by pydantic as a port or inside a URL it shortens."""
    env = {"DB_HOST": "h.example", "DB_PORT": "5432", "DB_NAME": "app", "DB_USER": "app", "DB_PASS": "pw-x"}
    env[key] = KEY
    mask = Masker(secret_values(env))
    url = (
        f"postgresql://{env['DB_USER']}:{env['DB_PASS']}@{env['DB_HOST']} :{env['DB_PORT']}/{env['DB_NAME']}"
    )
    with pytest.raises(pydantic.ValidationError) as info:
        AppSettings(database_url=url, port=env["DB_PORT"])  # type: ignore[arg-type]
    assert any(p in str(info.value) for p in pieces(KEY))
    for rendered in [*error_text(info.value), info.value.json()]:
        assert_clean(mask(rendered), KEY)


def test_sqlalchemy_url_renderings_and_errors() -> None:
    url = f"postgresql+psycopg://{KEY}:{quote(PASSWORD)}@db.example:5432/app"
    mask = Masker(secret_values({"DATABASE_URL": url}))
    parsed = make_url(url)
    renderings = [repr(parsed), str(parsed), parsed.render_as_string(hide_password=False)]
    renderings.append(repr(parsed.set(password=PASSWORD + "/@:%")))  # SQLAlchemy's own quoting
    with pytest.raises(ValueError, match="invalid literal") as info:
        make_url(f"postgresql+psycopg://app:{PASSWORD}@db.example:{KEY}/app")
    renderings += error_text(info.value)
    for rendered in renderings:
        assert_clean(mask(rendered), PASSWORD, KEY)
    mask_port = Masker(secret_values({"DATABASE_URL": f"postgresql+psycopg://app:pw@db.example:{KEY}/app"}))
    for rendered in error_text(info.value):
        assert_clean(mask_port(rendered), KEY)


@pytest.mark.postgres
def test_sqlalchemy_and_psycopg_errors_from_a_real_server(postgres: PostgresServer, database: str) -> None:
    """A refused login through SQLAlchemy (psycopg): the error names the user and carries the URL's
    pieces in its "background" text."""
    url = f"postgresql+psycopg://{KEY}:{PASSWORD}@{postgres.host}:{postgres.port}/{database}"
    mask = Masker(secret_values({"DATABASE_URL": url}))
    engine = create_engine(url, poolclass=NullPool)
    with (
        pytest.raises(OperationalError, match="password authentication failed") as info,
        engine.connect() as conn,
    ):
        conn.execute(text("SELECT 1"))
    assert KEY in str(info.value)  # the server's own words quote the user
    for rendered in error_text(info.value):
        masked = mask(rendered)
        assert_clean(masked, PASSWORD, KEY)
        assert MASK in masked


@pytest.mark.postgres
def test_asyncpg_errors_from_a_real_server(postgres: PostgresServer, database: str) -> None:
    async def errors() -> list[BaseException]:
        found: list[BaseException] = []
        attempts = [
            {"user": KEY, "password": PASSWORD, "database": database},  # unknown role
            {"user": postgres.user, "password": KEY, "database": database},  # wrong password
            {"user": postgres.user, "password": postgres.password, "database": KEY},  # unknown database
        ]
        for kwargs in attempts:
            try:
                await asyncpg.connect(host=postgres.host, port=postgres.port, timeout=10, **kwargs)
            except Exception as exc:
                found.append(exc)
        for dsn in (
            f"postgresql://app:{PASSWORD}@{postgres.host}:{KEY}/app",  # a port that is no number
            f"postgresql://app:{PASSWORD}@{postgres.host}:{postgres.port}/app?sslmode={KEY}",
        ):
            try:
                await asyncpg.connect(dsn, timeout=10)
            except Exception as exc:
                found.append(exc)
        return found

    found = asyncio.run(errors())
    assert len(found) == 5
    assert any(KEY in str(exc) for exc in found)  # asyncpg does echo the values
    env = {
        "DB_HOST": postgres.host,
        "DB_PORT": KEY,
        "DB_NAME": KEY,
        "DB_USER": KEY,
        "DB_PASS": PASSWORD,
        "DATABASE_URL": f"postgresql://app:{PASSWORD}@{postgres.host}:{KEY}/app?sslmode={KEY}",
    }
    mask = Masker(secret_values(env))
    for exc in found:
        for rendered in error_text(exc):
            assert_clean(mask(rendered), PASSWORD, KEY)


def test_tortoise_star_password_shows_a_third() -> None:
    from tortoise import Tortoise

    config = {"default": f"postgres://app:{PASSWORD}@db.example:5432/app"}
    shown = Tortoise.star_password(config)
    assert PASSWORD[: len(PASSWORD) // 3] in shown  # Tortoise's own "masking"
    assert_clean(Masker(secret_values({"DB_PASS": PASSWORD}))(shown), PASSWORD)


def test_innocent_text_stays() -> None:
    """Values that are not secret-looking mask only where they stand as words of their own: a
    table named after the database, a URL scheme that starts like the user name stay readable."""
    env = {
        "DB_HOST": "postgres",
        "DB_NAME": "shop",
        "DB_USER": "postgres",
        "DB_PORT": "5432",
        "DB_PASS": PASSWORD,
    }
    mask = Masker(secret_values(env))
    line = 'CREATE TABLE "shop_order" (id int); postgresql+asyncpg://; duration_ms 15432; user "postgres"'
    assert (
        mask(line)
        == 'CREATE TABLE "shop_order" (id int); postgresql+asyncpg://; duration_ms 15432; user "***"'
    )
    # A piece of the password standing alone is masked; glued inside a longer word it is text.
    assert mask("posts, Kq7Z, xKq7Zy") == "posts, ***, xKq7Zy"


def test_a_value_written_in_pieces_to_stdout_is_still_masked() -> None:
    """print() writes its arguments one by one; the stream masks whole lines."""
    import io

    from dbmigrate_runner.log import MaskedStream

    target = io.StringIO()
    stream = MaskedStream(target, Masker([PASSWORD]))
    for piece in ("url: ", PASSWORD[:10], PASSWORD[10:], "\nunfinished ", PASSWORD[:12]):
        stream.write(piece)
    assert target.getvalue() == "url: ***\n"  # the unfinished line waits for its end (or a flush)
    stream.flush()
    assert target.getvalue() == "url: ***\nunfinished ***"


def test_a_log_line_is_withheld_rather_than_broken() -> None:
    """A password ending in a backslash matches an escaped quote of innocent text in the JSON line."""
    import io
    import json

    from dbmigrate_runner.log import JsonLogger

    out = io.StringIO()
    logger = JsonLogger(out, mask=Masker(["Zq\\"]))
    logger.info("x.event", 'value Zq" here', field="Zq\\ too")
    record = json.loads(out.getvalue())
    assert record["event"] == "x.event"
    assert "Zq" not in out.getvalue()
