"""The runner's report: the one contract between a migration Job and the operator.

The runner writes it to the container's termination message; the operator reads it back from
the Pod status. Kubernetes keeps at most 4096 bytes of that message, so :func:`encode` shrinks
a report until it fits instead of letting the kubelet cut the JSON in half.

Pure standard library on purpose: the operator imports this module without the ORM stack.
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA_VERSION = 1
MAX_BYTES = 4096
DEFAULT_PATH = "/dev/termination-log"
# error.kind of a run stopped by SIGTERM (the Job's deadline, a deleted Job, a drained node).
INTERRUPTED = "Interrupted"
# Longest error text kept before the size fitting starts trimming further.
MAX_MESSAGE_CHARS = 1500


class Outcome(enum.StrEnum):
    """What the run ended with; each failure has its own exit code."""

    SUCCEEDED = "Succeeded"
    CONFIG_ERROR = "ConfigError"
    DATABASE_UNREACHABLE = "DatabaseUnreachable"
    LOCK_TIMEOUT = "LockTimeout"
    MIGRATION_FAILED = "MigrationFailed"
    DOWNGRADE_REFUSED = "DowngradeRefused"
    INTERNAL_ERROR = "InternalError"

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self]

    @classmethod
    def from_exit_code(cls, code: int) -> Outcome:
        for outcome, value in EXIT_CODES.items():
            if value == code:
                return outcome
        return cls.INTERNAL_ERROR


EXIT_CODES: dict[Outcome, int] = {
    Outcome.SUCCEEDED: 0,
    Outcome.INTERNAL_ERROR: 1,
    Outcome.CONFIG_ERROR: 2,
    Outcome.DATABASE_UNREACHABLE: 3,
    Outcome.LOCK_TIMEOUT: 4,
    Outcome.MIGRATION_FAILED: 5,
    Outcome.DOWNGRADE_REFUSED: 6,
}


@dataclass
class AppState:
    """One Tortoise app's migrations as recorded in the tracking table (oldest first)."""

    current: str | None = None
    count: int = 0
    versions: list[str] = field(default_factory=list)
    # How many of the oldest versions were left out of ``versions`` to fit the size limit.
    omitted: int = 0


@dataclass
class ErrorInfo:
    kind: str  # exception class, e.g. "UndefinedColumnError"
    message: str  # the database's own text, credentials already masked
    migration: str | None = None  # "app:version" that failed, when known


@dataclass
class Report:
    outcome: Outcome
    tool: str = ""
    command: str = ""
    apps: dict[str, AppState] = field(default_factory=dict)
    # "app:version" entries applied (or, for downgrade, reverted) by this run, in order.
    applied: list[str] = field(default_factory=list)
    applied_count: int = 0
    duration_ms: int = 0
    error: ErrorInfo | None = None
    v: int = SCHEMA_VERSION

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.SUCCEEDED

    def current_version(self) -> str | None:
        """``app:version`` of the newest migration, for the single-app common case; apps joined by ','."""
        parts = [f"{app}:{state.current}" for app, state in sorted(self.apps.items()) if state.current]
        return ",".join(parts) or None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["outcome"] = self.outcome.value
        if self.error is None:
            del data["error"]
        return data


def _dumps(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def encode(report: Report, limit: int = MAX_BYTES) -> str:
    """Serialize compactly, dropping the least useful detail first until it fits ``limit`` bytes.

    Order of sacrifice: oldest version names (counts stay exact), then the names applied by this
    run (their count stays), then the tail of the error message. Outcome, current versions and
    counts always survive.
    """
    data = report.to_dict()
    if data.get("error"):
        data["error"]["message"] = data["error"]["message"][:MAX_MESSAGE_CHARS]
    raw = _dumps(data)
    while len(raw) > limit:
        apps = data["apps"]
        longest = max(apps.values(), key=lambda a: len(a["versions"]), default=None)
        if longest and len(longest["versions"]) > 1:
            drop = max(1, min(len(longest["versions"]) - 1, (len(raw) - limit) // 16 + 1))
            del longest["versions"][:drop]
            longest["omitted"] += drop
        elif len(data["applied"]) > 1:
            drop = max(1, min(len(data["applied"]) - 1, (len(raw) - limit) // 16 + 1))
            del data["applied"][:drop]
        elif data.get("error") and len(data["error"]["message"]) > 80:
            msg = data["error"]["message"]
            data["error"]["message"] = msg[: max(80, len(msg) - (len(raw) - limit) - 8)] + "…"
        elif apps and any(a["versions"] for a in apps.values()):
            for state in apps.values():
                state["omitted"] += len(state["versions"])
                state["versions"] = []
        elif data["applied"]:
            data["applied"] = []
        else:  # pathological: enormous app names; keep only the verdict
            data = {
                "v": SCHEMA_VERSION,
                "outcome": data["outcome"],
                "apps": {},
                "applied": [],
                "applied_count": data["applied_count"],
                "tool": data["tool"],
                "command": data["command"],
                "duration_ms": data["duration_ms"],
            }
            raw = _dumps(data)
            break
        raw = _dumps(data)
    return raw.decode()


class ReportError(ValueError):
    """The termination message is not a report (runner crashed, wrong image, cut text)."""


def decode(text: str) -> Report:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(f"termination message is not JSON: {exc.msg}") from None
    if not isinstance(data, dict) or "outcome" not in data:
        raise ReportError("termination message is not a dbmigrate report")
    try:
        outcome = Outcome(data["outcome"])
    except ValueError:
        raise ReportError(f"unknown outcome {data['outcome']!r}") from None
    apps = {
        str(name): AppState(
            current=state.get("current"),
            count=int(state.get("count", 0)),
            versions=[str(v) for v in state.get("versions", [])],
            omitted=int(state.get("omitted", 0)),
        )
        for name, state in (data.get("apps") or {}).items()
    }
    err = data.get("error")
    error = (
        ErrorInfo(
            kind=str(err.get("kind", "")), message=str(err.get("message", "")), migration=err.get("migration")
        )
        if isinstance(err, dict)
        else None
    )
    return Report(
        outcome=outcome,
        tool=str(data.get("tool", "")),
        command=str(data.get("command", "")),
        apps=apps,
        applied=[str(v) for v in data.get("applied", [])],
        applied_count=int(data.get("applied_count", 0)),
        duration_ms=int(data.get("duration_ms", 0)),
        error=error,
        v=int(data.get("v", SCHEMA_VERSION)),
    )
