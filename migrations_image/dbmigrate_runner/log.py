"""Structured logs: one JSON object per line on stdout, every line passed through the masker.

Library loggers (tortoise, aerich, asyncpg) are routed through the same path, so a secret they
might print is masked too; whatever bypasses logging (``print``, a thread's traceback, warnings
written straight to the stream) goes through :class:`MaskedStream` on stdout and stderr.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import time
from typing import Any, Protocol, TextIO

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class Mask(Protocol):
    """What the logger needs of :class:`dbmigrate_runner.settings.Masker`."""

    def __call__(self, text: str) -> str: ...

    def value(self, value: Any) -> Any: ...

    def passwords(self, text: str) -> str: ...

    def names(self, value: Any) -> Any: ...


class _NoMask:
    def __call__(self, text: str) -> str:
        return text

    def value(self, value: Any) -> Any:
        return value

    def passwords(self, text: str) -> str:
        return text

    def names(self, value: Any) -> Any:
        return value


class JsonLogger:
    """The runner's own logger: ``log.info("event.name", "message", key=value)``."""

    def __init__(self, stream: TextIO | None = None, level: str = "info", mask: Mask | None = None) -> None:
        self.stream = stream or sys.stdout
        self.level = LEVELS.get(level, logging.INFO)
        self.mask: Mask = mask or _NoMask()

    def emit(self, level: int, event: str, msg: str, **fields: Any) -> None:
        if level < self.level:
            return
        now = time.time()
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
        head = {"ts": ts, "level": logging.getLevelName(level).lower(), "event": event}
        # Mask the values first (JSON escaping would hide a secret with " or \\ in it); the field
        # names and the head are the code's own. A password still in the serialised line is either one
        # of those words (kept: the line must stay readable, the operator reads its event and fields)
        # or written by the escaping of a value, which then goes.
        record = {**head, **{k: self.mask.value(v) for k, v in {"msg": msg, **fields}.items()}}
        line = json.dumps(record, default=str, ensure_ascii=False)
        if self.mask.passwords(line) != line:
            record = {**head, **{k: self.mask.names(v) for k, v in record.items() if k not in head}}
            line = json.dumps(record, default=str, ensure_ascii=False)
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # closed pipe: logging must never end the run
            pass

    def debug(self, event: str, msg: str, **fields: Any) -> None:
        self.emit(logging.DEBUG, event, msg, **fields)

    def info(self, event: str, msg: str, **fields: Any) -> None:
        self.emit(logging.INFO, event, msg, **fields)

    def warning(self, event: str, msg: str, **fields: Any) -> None:
        self.emit(logging.WARNING, event, msg, **fields)

    def error(self, event: str, msg: str, **fields: Any) -> None:
        self.emit(logging.ERROR, event, msg, **fields)


class MaskedStream(io.TextIOBase):
    """A text stream that masks what is written to it, a line at a time (a value split over several
    ``write`` calls is still seen whole); :meth:`flush` passes on an unfinished line masked as well."""

    def __init__(self, target: TextIO, mask: Mask) -> None:
        super().__init__()
        self.target = target
        self.mask = mask
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            done, _, self._pending = self._pending.rpartition("\n")
            self._out(done + "\n")
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._out(self._pending)
            self._pending = ""
        with contextlib.suppress(OSError, ValueError):
            self.target.flush()

    def _out(self, text: str) -> None:
        with contextlib.suppress(OSError, ValueError):  # closed pipe: output must never end the run
            self.target.write(self.mask(text))

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.target.isatty()

    def fileno(self) -> int:
        return self.target.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.target, "encoding", "utf-8")


# Library records that print a driver's connection config. Tortoise's startup line "masks" the
# password by showing its first third; the pool line shows it whole. Never logged, at any level.
_DRIVER_CONFIG = ("Tortoise-ORM startup", "Created connection pool", "Closed connection pool")


def _prints_driver_config(record: logging.LogRecord) -> bool:
    return isinstance(record.msg, str) and record.msg.startswith(_DRIVER_CONFIG)


class _Bridge(logging.Handler):
    def __init__(self, target: JsonLogger) -> None:
        super().__init__()
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        if _prints_driver_config(record):
            return
        try:
            msg = record.getMessage()
        except Exception:  # a library's broken format string
            msg = str(record.msg)
        fields: dict[str, Any] = {"logger": record.name}
        if record.exc_info and record.exc_info[1] is not None:
            fields["exc"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        self.target.emit(record.levelno, "library", msg, **fields)


def route_stdlib_logging(target: JsonLogger) -> None:
    """Send every stdlib log record (and warnings) through ``target``; SQL debug noise stays off."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_Bridge(target))
    root.setLevel(target.level)
    # Tortoise logs every SQL statement at debug level; keep that out even with --log-level debug.
    for noisy in ("tortoise.db_client", "asyncio"):
        logging.getLogger(noisy).setLevel(max(target.level, logging.WARNING))
    logging.captureWarnings(True)


log = JsonLogger()
