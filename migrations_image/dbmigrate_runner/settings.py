"""Flags and environment → one frozen :class:`Settings`; database parameters.

Flags win over environment variables. Database credentials come only from the environment
(``DATABASE_URL`` or ``DB_HOST``/``DB_PORT``/``DB_NAME``/``DB_USER``/``DB_PASS``), so they never
appear in the Pod spec's arguments. Those values come from a Secret: no message here quotes one,
errors name the variable instead (and :mod:`dbmigrate_runner.masking` masks them everywhere).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, quote, unquote, urlsplit

from dbmigrate_runner.errors import ConfigError
from dbmigrate_runner.lock_policy import Policy, policy_from_env
from dbmigrate_runner.report import DEFAULT_PATH

TOOLS = ("aerich", "tortoise", "alembic")
COMMANDS = ("upgrade", "downgrade", "status", "plan")
# libpq's and asyncpg's forms, Tortoise's, and SQLAlchemy's (the app's own URL): the driver named in
# the scheme is ignored, every tool gets the connection it needs from the parsed parts.
URL_SCHEMES = (
    "postgres",
    "postgresql",
    "asyncpg",
    "psycopg",
    "postgresql+asyncpg",
    "postgresql+psycopg",
    "postgresql+psycopg2",
    "postgresql+pg8000",
)
DEFAULT_WAIT_TIMEOUT = 60.0
DEFAULT_LOCK_TIMEOUT = 300.0
# Where each part of the database came from, for messages that must not quote the values.
SPLIT_KEYS = {"host": "DB_HOST", "port": "DB_PORT", "database": "DB_NAME", "user": "DB_USER"}


class DbParams:
    """Where the runner connects; ``password`` must never be logged (see :class:`Masker`): it is
    left out of ``repr``. Immutable; equal when all but ``source`` are.

    Settings and DbParams are not dataclasses: every no-op run (each pod start) imports this
    module, and a dataclass costs about half a millisecond to create (runner.py)."""

    __slots__ = ("database", "host", "password", "port", "read_only", "source", "ssl", "user")
    host: str
    port: int
    database: str
    user: str
    password: str | None
    ssl: str | None
    # Every session the runner opens sets default_transaction_read_only (the plan command).
    read_only: bool
    # "DATABASE_URL" or "DB_*": how messages name the connection without quoting Secret values.
    source: str

    def __init__(
        self,
        host: str,
        port: int,
        database: str,
        user: str,
        password: str | None = None,
        ssl: str | None = None,
        read_only: bool = False,
        source: str = "DATABASE_URL",
    ) -> None:
        for name, value in (
            ("host", host),
            ("port", port),
            ("database", database),
            ("user", user),
            ("password", password),
            ("ssl", ssl),
            ("read_only", read_only),
            ("source", source),
        ):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"DbParams is immutable: cannot set {name}")

    def _key(self) -> tuple[Any, ...]:
        return (self.host, self.port, self.database, self.user, self.password, self.ssl, self.read_only)

    def __eq__(self, other: object) -> bool:
        if type(other) is not DbParams:
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"DbParams(host={self.host!r}, port={self.port!r}, database={self.database!r}, "
            f"user={self.user!r}, ssl={self.ssl!r}, read_only={self.read_only!r}, source={self.source!r})"
        )

    def read_only_copy(self) -> DbParams:
        """The same connection with every session read-only (the plan command)."""
        return DbParams(
            self.host, self.port, self.database, self.user, self.password, self.ssl, True, self.source
        )

    def server_settings(self) -> dict[str, str]:
        return {"default_transaction_read_only": "on"} if self.read_only else {}

    def asyncpg_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "database": self.database,
            "user": self.user,
            "password": self.password,
        }
        if self.ssl:
            kwargs["ssl"] = self.ssl
        return kwargs

    def tortoise_connection(self) -> dict[str, Any]:
        """The Tortoise ``connections`` entry that replaces whatever the app's config had."""
        credentials: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "database": self.database,
            "user": self.user,
            "password": self.password,
            "minsize": 1,
            "maxsize": 2,
        }
        if self.ssl:
            credentials["ssl"] = self.ssl
        if self.read_only:
            credentials["server_settings"] = self.server_settings()
        return {"engine": "tortoise.backends.asyncpg", "credentials": credentials}

    def url(self) -> str:
        """A libpq URL (password percent-encoded): what app configs usually read from DATABASE_URL."""
        auth = quote(self.user, safe="") + (f":{quote(self.password, safe='')}" if self.password else "")
        query = [f"sslmode={quote(self.ssl)}"] if self.ssl else []
        where = f"{self.host}:{self.port}"
        if self.host.startswith("/"):  # a Unix socket's directory: libpq's query form
            where, query = "", [f"host={quote(self.host)}", f"port={self.port}", *query]
        return f"postgres://{auth}@{where}/{quote(self.database, safe='')}" + (
            "?" + "&".join(query) if query else ""
        )

    def describe(self) -> str:
        """The connection named by the variables it came from: every value is from a Secret."""
        if self.source == "DATABASE_URL":
            return "the database in DATABASE_URL"
        return "DB_USER@DB_HOST:DB_PORT/DB_NAME"

    def address(self) -> str:
        """Host and port, named the same way."""
        return "DATABASE_URL's host:port" if self.source == "DATABASE_URL" else "DB_HOST:DB_PORT"


class Settings(NamedTuple):
    command: str
    tool: str
    db: DbParams
    config: str | None = None
    apps: tuple[str, ...] = ()
    target: str | None = None
    baseline: str | None = None
    project_dir: Path = Path(".")
    location: str | None = None
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    report_path: Path = Path(DEFAULT_PATH)
    log_level: str = "info"
    plan_file: Path | None = None  # plan: where to write the plan document (JSON)
    sql_file: Path | None = None  # plan: where to write the readable SQL
    expect_plan: str | None = None  # upgrade: apply only if the plan hashes to this (an approval)
    # plan and upgrade --expect-plan: lint rules silenced (spec.lint.ignore); part of the plan's hash.
    lint_ignore: tuple[str, ...] = ()
    locking: Policy = Policy()  # lock_timeout of migrations and its retries (DBMIGRATE_LOCKING_*)
    # DBMIGRATE_FAST_NOOP=false: decide "nothing to do" through the tool itself, never the shortcut.
    fast_noop: bool = True


_ENCODE_HINT = (
    "percent-encode special characters in the user and password "
    "(@ as %40, / as %2F, : as %3A, # as %23, ? as %3F, % as %25)"
)


def _check_userinfo(url: str) -> None:
    """Refuse, without echoing any of it, a URL whose password is not percent-encoded.

    An unencoded ``@`` (or ``/``, ``?``, ``#`` before the ``@``) moves the host into the password:
    the runner would wait its whole timeout for a host named after the password's tail.
    """
    at_signs = url.count("@")
    if at_signs > 1:
        raise ConfigError(f"DATABASE_URL has {at_signs} '@' signs, one is allowed: {_ENCODE_HINT}")
    if at_signs == 1 and "@" not in urlsplit(url).netloc:
        raise ConfigError(f"DATABASE_URL's user or password holds a '/', '?' or '#': {_ENCODE_HINT}")


def parse_database_url(url: str) -> DbParams:
    """Split a libpq-style URL; percent-encoded user and password are decoded."""
    try:
        _check_userinfo(url)
        parts = urlsplit(url)
        port = parts.port or 5432
    except ValueError:  # its text would quote the URL's pieces, possibly the password
        raise ConfigError(f"DATABASE_URL's host:port is not valid: {_ENCODE_HINT}") from None
    if parts.scheme.lower() not in URL_SCHEMES:
        raise ConfigError(
            f"DATABASE_URL's scheme must be one of {', '.join(s + '://' for s in URL_SCHEMES)} "
            "(the value is not shown: it comes from the Secret)"
        )
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    _check_options(query.get("options", ""))
    named = {"host": parts.hostname, "port": parts.port, "dbname": parts.path.lstrip("/"),
             "user": parts.username, "password": parts.password}  # fmt: skip
    if twice := [name for name, value in named.items() if value and name in query]:
        # libpq and psycopg take the query's value, asyncpg the URL's: the app and the runner could
        # each reach another database (or as another user).
        raise ConfigError(
            f"DATABASE_URL (from the Secret) names its {' and '.join(twice)} twice, in the URL and as "
            f"?{twice[0]}=: drivers disagree on which one counts (libpq the query's, asyncpg the URL's); "
            "keep one (the value is not shown)"
        )
    # libpq's forms of a Unix socket: "@/db?host=/run/sock" or the directory percent-encoded as the
    # host ("@%2Frun%2Fsock/db"); the port may come as "?port=" too (it names the socket's file).
    host = query.get("host") or _netloc_host(parts.netloc)
    if parts.port is None and "port" in query:
        port = _port(query["port"], "DATABASE_URL's port")
    database = unquote(parts.path.lstrip("/")) or query.get("dbname", "")
    user = unquote(parts.username) if parts.username else query.get("user", "")
    password = unquote(parts.password) if parts.password is not None else query.get("password")
    missing = [name for name, value in (("host", host), ("database", database), ("user", user)) if not value]
    if missing:
        raise ConfigError(f"DATABASE_URL (from the Secret) lacks {', '.join(missing)}")
    assert host is not None
    return DbParams(
        host=host,
        port=port,
        database=database,
        user=user,
        password=password,
        ssl=query.get("sslmode") or query.get("ssl"),
    )


def db_params_from_env(env: Mapping[str, str]) -> DbParams:
    if url := env.get("DATABASE_URL", "").strip():
        return parse_database_url(url)
    split = {name: env.get(name, "").strip() for name in ("DB_HOST", "DB_PORT", "DB_NAME", "DB_USER")}
    if not any(split.values()):
        raise ConfigError(
            "no database credentials: set DATABASE_URL, or DB_HOST, DB_PORT, DB_NAME, DB_USER and DB_PASS"
        )
    missing = [name for name in ("DB_HOST", "DB_NAME", "DB_USER") if not split[name]]
    if missing:
        raise ConfigError(f"incomplete database settings: {', '.join(missing)} not set")
    port = _port(split["DB_PORT"])
    return DbParams(
        host=split["DB_HOST"],
        port=port,
        database=split["DB_NAME"],
        user=split["DB_USER"],
        # Stripped like the other fields: a Secret made with `echo` ends in a newline.
        password=(env.get("DB_PASS") or env.get("DB_PASSWORD") or "").strip() or None,
        ssl=env.get("DB_SSLMODE", "").strip() or None,
        source="DB_*",
    )


# Session settings in libpq's ?options= that change where or as whom the app's statements run. The
# runner does not carry options into each tool's sessions, so it would migrate the default schema as
# the login role while the app works elsewhere.
_WHERE_SETTINGS = ("search_path", "role", "session_authorization")


def _check_options(options: str) -> None:
    """Refuse ``?options=-c search_path=…`` (or ``role``): other options are left out (e.g. the
    app's statement_timeout), these would make the runner migrate another schema than the app uses."""
    named = re.findall(r"(?:-c\s*|--)([A-Za-z_.]+)\s*=", options)
    if {name.lower() for name in named} & set(_WHERE_SETTINGS):
        raise ConfigError(
            # Not naming the setting: the query's value is masked, and with it each piece of it.
            "DATABASE_URL (from the Secret) sets the session's schema list or role in ?options=, which the "
            "runner's sessions would not get: it would migrate the login role's default schema, as that "
            "role, while the app works elsewhere; set it on the role instead (ALTER ROLE … SET …)"
        )


def _netloc_host(netloc: str) -> str | None:
    """The host as written (``urlsplit``'s ``hostname`` lowercases it, which a socket path must not
    be), percent-decoded: libpq reads ``%2Frun%2Fsock`` as the socket directory ``/run/sock``."""
    host = netloc.rpartition("@")[2]
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host
    else:
        host = host.partition(":")[0]
    return unquote(host) or None


def _port(value: str, name: str = "DB_PORT") -> int:
    """DB_PORT as a number; the message names the key, never the value (it may be any Secret entry)."""
    if not value:
        return 5432
    if not (value.isascii() and value.isdigit()) or not 0 < int(value) < 65536:
        raise ConfigError(
            f"{name} (from the Secret) must be a port number, 1 to 65535 (its value is not shown)"
        )
    return int(value)


def _float(value: str | float | None, name: str, default: float) -> float:
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {value!r}") from None
    if number < 0:
        raise ConfigError(f"{name} must not be negative")
    return number


def _apps(values: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for value in values:
        out += [a.strip() for a in value.split(",") if a.strip()]
    return tuple(dict.fromkeys(out))


def build_settings(args: Mapping[str, Any], env: Mapping[str, str]) -> Settings:
    """Merge parsed flags (``None`` = not given) over ``DBMIGRATE_*`` environment variables."""

    def pick(flag: str, var: str) -> Any:
        value = args.get(flag)
        return value if value not in (None, "", []) else env.get(var) or None

    command = args["command"]
    tool = (pick("tool", "DBMIGRATE_TOOL") or "aerich").strip().lower()
    if tool not in TOOLS:
        raise ConfigError(f"unknown tool {tool!r}: use one of {', '.join(TOOLS)}")
    apps = _apps(args.get("app") or [env.get("DBMIGRATE_APPS", "")])
    target = pick("target", "DBMIGRATE_TARGET")
    baseline = pick("baseline", "DBMIGRATE_BASELINE")
    if baseline and command != "upgrade":
        raise ConfigError("--baseline applies to upgrade only")
    if command == "downgrade" and not target:
        raise ConfigError("downgrade needs an explicit --target (a version, or 'zero' to revert everything)")
    db = db_params_from_env(env)
    plan_file, sql_file = args.get("plan_file"), args.get("sql_file")
    return Settings(
        command=command,
        tool=tool,
        db=db.read_only_copy() if command == "plan" else db,
        plan_file=Path(plan_file) if plan_file else None,
        sql_file=Path(sql_file) if sql_file else None,
        expect_plan=(pick("expect_plan", "DBMIGRATE_EXPECT_PLAN") or "").strip() or None
        if command == "upgrade"
        else None,
        config=pick("config", "DBMIGRATE_CONFIG"),
        apps=apps,
        target=target.strip() if target else None,
        baseline=baseline.strip() if baseline else None,
        project_dir=Path(pick("project_dir", "DBMIGRATE_PROJECT_DIR") or "."),
        location=pick("location", "DBMIGRATE_LOCATION"),
        wait_timeout=_float(
            pick("wait_timeout", "DBMIGRATE_WAIT_TIMEOUT"), "wait timeout", DEFAULT_WAIT_TIMEOUT
        ),
        lock_timeout=_float(
            pick("lock_timeout", "DBMIGRATE_LOCK_TIMEOUT"), "lock timeout", DEFAULT_LOCK_TIMEOUT
        ),
        report_path=Path(pick("report_path", "DBMIGRATE_REPORT_PATH") or DEFAULT_PATH),
        log_level=(pick("log_level", "DBMIGRATE_LOG_LEVEL") or "info").lower(),
        lint_ignore=lint_rules(pick("lint_ignore", "DBMIGRATE_LINT_IGNORE") or ""),
        locking=policy_from_env(env),
        fast_noop=_bool(env.get("DBMIGRATE_FAST_NOOP"), "DBMIGRATE_FAST_NOOP", default=True),
    )


_RULE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def lint_rules(value: str | list[str]) -> tuple[str, ...]:
    """``DBMIGRATE_LINT_IGNORE``: rule ids separated by commas or spaces, sorted and deduplicated."""
    text = " ".join(value) if isinstance(value, list) else value
    rules = sorted({r for r in re.split(r"[\s,]+", text.strip().lower()) if r})
    bad = [r for r in rules if not _RULE.fullmatch(r)]
    if bad:
        raise ConfigError(f"DBMIGRATE_LINT_IGNORE: not a rule id: {', '.join(bad)} (e.g. ban-drop-index)")
    return tuple(rules)


def _bool(value: str | None, name: str, default: bool) -> bool:
    text = (value or "").strip().lower()
    if not text:
        return default
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {text!r}")
