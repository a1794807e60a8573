"""``dbmigrate-runner``: arguments, the run, the termination-message report, the exit code.

Every path out of :func:`main` writes a report (when the report path is writable) and returns
``Outcome.exit_code``; nothing that leaves the process carries a value from the Secret: the log,
the report and whatever else reaches stdout or stderr pass through one
:class:`~dbmigrate_runner.masking.Masker`, fed with every credential variable before anything is
parsed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from dbmigrate_runner.errors import ConfigError, RunnerError
from dbmigrate_runner.log import JsonLogger, MaskedStream, log, route_stdlib_logging
from dbmigrate_runner.masking import Masker, secret_values
from dbmigrate_runner.report import DEFAULT_PATH, INTERRUPTED, Report, encode
from dbmigrate_runner.settings import COMMANDS, TOOLS, Settings, build_settings


class _Parser(argparse.ArgumentParser):
    """Usage errors become ConfigError so they get a report like any other bad configuration."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{self.prog}: {message}")

    def _get_formatter(self) -> argparse.HelpFormatter:
        """A fixed width: argparse would otherwise import shutil and ask for the terminal's size at
        each of the ~50 add_argument calls of every run (a Job has no terminal anyway)."""
        return argparse.HelpFormatter(self.prog, width=100)


def make_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Every command, with its options; with ``only`` (the command being run, so known to be valid)
    just that one: building the other parsers and their ~50 options costs a no-op run as much as
    its own decision."""
    parser = _Parser(
        prog="dbmigrate-runner",
        description="Apply database migrations (aerich, tortoise.migrations or Alembic) safely.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    helps = {
        "upgrade": "apply pending migrations up to --target (default: latest); never rolls back",
        "downgrade": "revert applied migrations above --target ('zero': all of them)",
        "status": "read-only: show applied and pending versions",
        "plan": "read-only, no lock: the SQL each pending migration would run, destructive changes "
        "found in it, and the plan's hash (what an approval names)",
    }
    for name in COMMANDS:
        if only not in (None, name):
            continue
        p = sub.add_parser(name, help=helps[name], description=helps[name])
        p.add_argument("--tool", choices=TOOLS, help="migration tool [env DBMIGRATE_TOOL, default aerich]")
        p.add_argument(
            "--config",
            help="import path of the Tortoise config, e.g. app.config.TORTOISE_ORM "
            "[env DBMIGRATE_CONFIG, default: tortoise_orm from pyproject.toml]",
        )
        p.add_argument(
            "--app",
            action="append",
            help="app label, repeatable [env DBMIGRATE_APPS, comma list; default: every app with migrations]",
        )
        p.add_argument(
            "--target", help="version to stop at: app:version, version or its number [env DBMIGRATE_TARGET]"
        )
        p.add_argument(
            "--baseline",
            help="adopt an existing schema: record migrations up to this version as applied without "
            "running them, when the tracking table records none yet [env DBMIGRATE_BASELINE]",
        )
        p.add_argument(
            "--project-dir",
            help="where pyproject.toml and the migrations are "
            "[env DBMIGRATE_PROJECT_DIR, default: current directory]",
        )
        p.add_argument(
            "--location",
            help="aerich migrations location [env DBMIGRATE_LOCATION, "
            "default: from pyproject.toml or ./migrations]",
        )
        p.add_argument(
            "--wait-timeout",
            type=str,
            help="seconds to wait for the database [env DBMIGRATE_WAIT_TIMEOUT, default 60]",
        )
        p.add_argument(
            "--lock-timeout",
            type=str,
            help="seconds to wait for the migration lock [env DBMIGRATE_LOCK_TIMEOUT, default 300]",
        )
        p.add_argument(
            "--report-path",
            help=f"termination message file [env DBMIGRATE_REPORT_PATH, default {DEFAULT_PATH}]",
        )
        p.add_argument(
            "--log-level",
            choices=("debug", "info", "warning", "error"),
            help="[env DBMIGRATE_LOG_LEVEL, default info]",
        )
        if name in ("upgrade", "plan"):
            p.add_argument(
                "--lint-ignore",
                action="append",
                help="plan: leave out findings of this lint rule (repeat, or comma-separated); part of "
                "the plan's hash, so an approved run needs the same [env DBMIGRATE_LINT_IGNORE]",
            )
        if name == "upgrade":
            p.add_argument(
                "--expect-plan",
                help="apply only if the pending migrations' plan has this hash (an approved plan); "
                "else change nothing [env DBMIGRATE_EXPECT_PLAN]",
            )
        if name == "plan":
            p.add_argument("--plan-file", help="write the plan document (JSON) there as well")
            p.add_argument("--sql-file", help="write the plan as a readable SQL script there")
    return parser


# What the runner's own code writes in a report: every field name (but the app labels under
# ``apps``) and these values. None of it comes from a Secret, and masking it (a password that happens
# to be ``outcome`` or ``Succeeded``) would hand the operator a report it cannot read.
_OWN_VALUES = frozenset({"outcome", "tool", "command", "v"})


def report_text(report: Report, mask: Masker) -> str:
    """The report's JSON with secrets masked: in its free text (the error) every Secret value, then
    the passwords in every name it carries (app labels, versions, the plan, the lock's blocker),
    value by value on the encoded document, so that its structure stays readable whatever the
    password (``***`` is never longer than what it replaces: the size cap holds). A value whose JSON
    escaping would still spell a password (one ending in a backslash next to a quote) is withheld.
    A packed version list is an encoding, not text, and stays as it is."""
    if report.error is not None:
        report.error.message = mask.names(mask(report.error.message), withheld=_WITHHELD)
        report.error.kind = mask(report.error.kind)
    text = encode(report)
    if mask.passwords(text) == text:  # the usual case, one pass (the forms include JSON's escapes)
        return text
    data = json.loads(text)
    masked = {key: value if key in _OWN_VALUES else mask.names(value, _PACKED) for key, value in data.items()}
    if isinstance(data.get("apps"), dict):
        masked["apps"] = {mask.names(app): mask.names(state, _PACKED) for app, state in data["apps"].items()}
    return json.dumps(masked, separators=(",", ":"), ensure_ascii=False)


_WITHHELD = "(message withheld: it contained a secret)"
_PACKED = ("packed",)  # a packed version list is an encoding, not text


def write_report(report: Report, path: Path, mask: Masker) -> None:
    text = report_text(report, mask)
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        log.warning("report.unwritable", f"cannot write the report to {path}: {exc.strerror}", path=str(path))


def _on_sigterm(signum: int, frame: object) -> None:
    """Kubernetes stops a Job with SIGTERM: unwind like Ctrl-C: lock released, report written."""
    raise KeyboardInterrupt


def early_settings(argv: Sequence[str], env: Mapping[str, str]) -> Settings:
    """What the report of a run that stops before its settings are valid needs (command, tool,
    report path), read leniently from the same flags and variables: ``--report-path`` is honoured
    whatever else is wrong."""
    parser = _Parser(prog="dbmigrate-runner", add_help=False)
    parser.add_argument("command", nargs="?")
    parser.add_argument("--tool")
    parser.add_argument("--report-path")
    try:
        args, _unknown = parser.parse_known_args(list(argv))
    except ConfigError:
        args = argparse.Namespace(command=None, tool=None, report_path=None)
    tool = (args.tool or env.get("DBMIGRATE_TOOL") or "aerich").strip().lower()
    return Settings(
        command=args.command or "?",
        tool=tool if tool in TOOLS else "",
        db=None,  # type: ignore[arg-type]
        report_path=Path(args.report_path or env.get("DBMIGRATE_REPORT_PATH") or DEFAULT_PATH),
    )


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    mask = Masker(secret_values(env))
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = MaskedStream(stdout, mask), MaskedStream(stderr, mask)
    try:
        return _main(sys.argv[1:] if argv is None else argv, env, mask)
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        sys.stdout, sys.stderr = stdout, stderr


def _main(argv: Sequence[str], env: Mapping[str, str], mask: Masker) -> int:
    from dbmigrate_runner import runner

    started = time.monotonic()
    log.mask = mask
    log.level = JsonLogger(level=(env.get("DBMIGRATE_LOG_LEVEL") or "info").lower()).level
    route_stdlib_logging(log)
    signal.signal(signal.SIGTERM, _on_sigterm)

    settings: Settings | None = None
    state = runner.RunState()
    error: RunnerError | None = None
    try:
        args = make_parser(only=argv[0] if argv and argv[0] in COMMANDS else None).parse_args(argv)
        settings = build_settings(vars(args), env)
        if args.log_level:
            log.level = JsonLogger(level=settings.log_level).level
            route_stdlib_logging(log)
        asyncio.run(runner.run(settings, state))
    except RunnerError as exc:
        error = exc
    except KeyboardInterrupt:
        error = RunnerError("interrupted by SIGTERM/SIGINT", kind=INTERRUPTED)
    except BaseException as exc:  # the report must still be written
        if isinstance(exc, SystemExit) and exc.code in (0, None):  # --help
            return 0
        error = RunnerError(f"{type(exc).__name__}: {exc}", kind=type(exc).__name__)
        log.error("run.crash", "unexpected error", error=f"{type(exc).__name__}: {exc}")

    if settings is None:  # stopped before its settings were valid: read what the report needs leniently
        settings = early_settings(argv, env)
    report = runner.build_report(settings, state, started, error)
    write_report(report, settings.report_path, mask)
    fields: dict[str, Any] = {
        "outcome": report.outcome.value,
        "exit_code": report.outcome.exit_code,
        "applied": report.applied,
        "current": report.current_version(),
        "duration_ms": report.duration_ms,
    }
    if error is not None:
        fields["error"] = {"kind": error.kind, "message": error.message, "migration": error.migration}
        log.error("run.end", f"{report.command} failed: {error.message}", **fields)
    else:
        log.info("run.end", f"{report.command} succeeded", **fields)
    return report.outcome.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
