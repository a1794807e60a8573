"""Flags and environment → one frozen :class:`Settings`; database parameters; secret masking.

Flags win over environment variables. Database credentials come only from the environment
(``DATABASE_URL`` or ``DB_HOST``/``DB_PORT``/``DB_NAME``/``DB_USER``/``DB_PASS``), so they never
appear in the Pod spec's arguments.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, quote_plus, unquote, urlsplit

from dbmigrate_runner.errors import ConfigError
from dbmigrate_runner.report import DEFAULT_PATH

TOOLS = ("aerich", "tortoise", "alembic")
COMMANDS = ("upgrade", "downgrade", "status", "plan")
URL_SCHEMES = ("postgres", "postgresql", "asyncpg")
DEFAULT_WAIT_TIMEOUT = 60.0
DEFAULT_LOCK_TIMEOUT = 300.0
MASK = "***"


@dataclass(frozen=True)
class DbParams:
    """Where the runner connects; ``password`` must never be logged (see :class:`Masker`)."""

    host: str
    port: int
    database: str
    user: str
    password: str | None = field(default=None, repr=False)
    ssl: str | None = None
    # Every session the runner opens sets default_transaction_read_only (the plan command).
    read_only: bool = False

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
        query = f"?sslmode={quote(self.ssl)}" if self.ssl else ""
        return f"postgres://{auth}@{self.host}:{self.port}/{quote(self.database, safe='')}{query}"

    def describe(self) -> str:
        """Safe for logs: no password."""
        return f"{self.user}@{self.host}:{self.port}/{self.database}"


@dataclass(frozen=True)
class Settings:
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
    if parts.scheme not in URL_SCHEMES:
        raise ConfigError(
            f"DATABASE_URL scheme must be one of {', '.join(URL_SCHEMES)}, got {parts.scheme!r}"
        )
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    host = query.get("host") or parts.hostname
    database = unquote(parts.path.lstrip("/")) or query.get("dbname", "")
    user = unquote(parts.username) if parts.username else query.get("user", "")
    password = unquote(parts.password) if parts.password is not None else query.get("password")
    missing = [name for name, value in (("host", host), ("database", database), ("user", user)) if not value]
    if missing:
        raise ConfigError(f"DATABASE_URL lacks {', '.join(missing)}")
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
    try:
        port = int(split["DB_PORT"] or 5432)
    except ValueError:
        raise ConfigError(f"DB_PORT must be a number, got {split['DB_PORT']!r}") from None
    return DbParams(
        host=split["DB_HOST"],
        port=port,
        database=split["DB_NAME"],
        user=split["DB_USER"],
        # Stripped like the other fields: a Secret made with `echo` ends in a newline.
        password=(env.get("DB_PASS") or env.get("DB_PASSWORD") or "").strip() or None,
        ssl=env.get("DB_SSLMODE", "").strip() or None,
    )


_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*)(?::[^@/\s]*)?@")


def mask_urls(text: str) -> str:
    """Hide the password part of every ``scheme://user:password@`` in ``text``."""
    return _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)


def secret_forms(secret: str) -> set[str]:
    """Every way a secret can be written out: raw, trimmed, percent-encoded or -decoded, and escaped
    by ``json.dumps`` or ``repr`` (a library printing a dict), so masking holds whatever the quoting."""
    forms: set[str] = set()
    for base in {secret, secret.strip(), unquote(secret)}:
        forms |= {base, quote(base, safe=""), quote(base), quote_plus(base, safe="")}
    escaped = set()
    for form in forms:
        escaped |= {json.dumps(form)[1:-1], json.dumps(form, ensure_ascii=False)[1:-1], repr(form)[1:-1]}
        escaped.add(json.dumps(repr(form)[1:-1], ensure_ascii=False)[1:-1])  # a repr inside a JSON string
    return {form for form in forms | escaped if len(form) >= 3}


class Masker:
    """Removes known secret values and URL passwords from any text before it leaves the process."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._secrets: list[str] = []
        self.add(*secrets)

    def add(self, *secrets: str | None) -> None:
        for secret in secrets:
            # Short values would mask innocent text and are no secret worth the damage.
            if not secret or len(secret.strip()) < 3:
                continue
            for form in secret_forms(secret):
                if form not in self._secrets:
                    self._secrets.append(form)
        self._secrets.sort(key=len, reverse=True)

    def __call__(self, text: str) -> str:
        text = mask_urls(text)
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def value(self, value: Any) -> Any:
        """Mask every string inside a JSON-able value, before it is serialised (escaping would hide
        a secret from a mask applied to the serialised text)."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {self(str(k)): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set):
            return [self.value(v) for v in value]
        if value is None or isinstance(value, bool | int | float):
            return value
        return self(str(value))


def secrets_from_env(env: Mapping[str, str]) -> list[str]:
    """Every password-ish value the environment holds, even if it turns out invalid."""
    found: list[str] = []
    for name in ("DB_PASS", "DB_PASSWORD", "PGPASSWORD"):
        if env.get(name):
            found.append(env[name])
    url = env.get("DATABASE_URL", "")
    # The password runs to the first '@' when encoded, possibly to the last one when it is not.
    for pattern in (r"^[^:]+://[^:/@]*:(?P<pw>[^@]*)@", r"^[^:]+://[^:/@]*:(?P<pw>.*)@"):
        match = re.match(pattern, url.strip())
        if match and match["pw"]:
            found += [match["pw"], unquote(match["pw"])]
    return found


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
        db=replace(db, read_only=True) if command == "plan" else db,
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
        fast_noop=_bool(env.get("DBMIGRATE_FAST_NOOP"), "DBMIGRATE_FAST_NOOP", default=True),
    )


def _bool(value: str | None, name: str, default: bool) -> bool:
    text = (value or "").strip().lower()
    if not text:
        return default
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {text!r}")
