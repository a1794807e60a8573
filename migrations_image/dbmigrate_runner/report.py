"""The runner's report: the one contract between a migration Job and the operator.

The runner writes it to the container's termination message; the operator reads it back from
the Pod status. Kubernetes keeps at most 4096 bytes of that message, so :func:`encode` shrinks
a report until it fits instead of letting the kubelet cut the JSON in half.

The ``plan`` command's report also carries the plan (``plan``, a :class:`PlanSummary`): this is
how a plan reaches the operator. The summary (hash, target, pending versions, statement count,
migrations with non-SQL steps, findings) always fits — its lists are shrunk with explicit
``*_omitted`` counts, the counts stay exact — and the SQL itself (``plan.steps``) comes along only
while the whole report still fits; else ``steps_omitted`` says it was left out. The whole plan is
then in the plan Job's log (one ``plan.document`` line, see ``plans.py``), checked against the hash.

The optional parts (an error, the plan summary, lock waits) are defined in ``report_parts.py`` and
importable from here; a run whose report has none of them never builds their classes.

Pure standard library on purpose: the operator imports this module without the ORM stack.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # at run time through __getattr__, below: only when a report carries one
    from dbmigrate_runner.report_parts import ErrorInfo as ErrorInfo
    from dbmigrate_runner.report_parts import LockWaits as LockWaits
    from dbmigrate_runner.report_parts import PlanFinding as PlanFinding
    from dbmigrate_runner.report_parts import PlanSummary as PlanSummary

SCHEMA_VERSION = 1
MAX_BYTES = 4096
DEFAULT_PATH = "/dev/termination-log"
# error.kind of a run stopped by SIGTERM (the Job's deadline, a deleted Job, a drained node).
INTERRUPTED = "Interrupted"
# Longest error text kept before the size fitting starts trimming further.
MAX_MESSAGE_CHARS = 1500
# Shortest error text the size fitting cuts it down to, before it gives up names entirely.
_MIN_MESSAGE_CHARS = 80


class Outcome(enum.StrEnum):
    """What the run ended with; each failure has its own exit code."""

    SUCCEEDED = "Succeeded"
    CONFIG_ERROR = "ConfigError"
    DATABASE_UNREACHABLE = "DatabaseUnreachable"
    LOCK_TIMEOUT = "LockTimeout"
    MIGRATION_FAILED = "MigrationFailed"
    DOWNGRADE_REFUSED = "DowngradeRefused"
    LOCK_NOT_AVAILABLE = "LockNotAvailable"
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
    Outcome.LOCK_NOT_AVAILABLE: 7,
}


class AppState:
    """One Tortoise app's migrations as recorded in the tracking table (oldest first).

    Report and AppState are plain classes, not dataclasses: every no-op run (each pod start) builds
    them, and a dataclass costs about half a millisecond to create at import (runner.py). Their
    fields, in this order, are the JSON (:meth:`to_dict`); ``__eq__`` compares all of them."""

    __slots__ = ("count", "current", "heads", "omitted", "versions")

    def __init__(
        self,
        current: str | None = None,
        count: int = 0,
        versions: list[str] | None = None,
        omitted: int = 0,
        heads: list[str] | None = None,
    ) -> None:
        self.current = current
        self.count = count
        self.versions: list[str] = [] if versions is None else versions
        # How many of the oldest versions were left out of ``versions`` to fit the size limit.
        self.omitted = omitted
        # Alembic only: the head revision(s) recorded in the version table. ``versions`` is then the
        # ancestry of these heads (every revision they contain), oldest first; empty for the ordered tools.
        self.heads: list[str] = [] if heads is None else heads

    def to_dict(self) -> dict[str, Any]:
        return {
            "current": self.current,
            "count": self.count,
            "versions": list(self.versions),
            "omitted": self.omitted,
            "heads": list(self.heads),
        }

    def __eq__(self, other: object) -> bool:
        if type(other) is not AppState:
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it replaces

    def __repr__(self) -> str:
        return "AppState(" + ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items()) + ")"


# The optional parts' classes (report_parts.py says why they live there), imported on first use.
_PARTS = frozenset({"ErrorInfo", "LockWaits", "PlanFinding", "PlanSummary"})


def __getattr__(name: str) -> Any:
    if name in _PARTS:
        from dbmigrate_runner import report_parts

        return getattr(report_parts, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Report's fields in their JSON order.
_REPORT_FIELDS = (
    "outcome",
    "tool",
    "command",
    "apps",
    "applied",
    "applied_count",
    "duration_ms",
    "error",
    "plan",
    "locking",
    "v",
    "database",
)


class Report:
    """The report (a plain class: see :class:`AppState`)."""

    __slots__ = _REPORT_FIELDS

    def __init__(
        self,
        outcome: Outcome,
        tool: str = "",
        command: str = "",
        apps: dict[str, AppState] | None = None,
        applied: list[str] | None = None,
        applied_count: int = 0,
        duration_ms: int = 0,
        error: ErrorInfo | None = None,
        plan: PlanSummary | None = None,
        locking: LockWaits | None = None,
        v: int = SCHEMA_VERSION,
        database: dict[str, str] | None = None,
    ) -> None:
        self.outcome = outcome
        self.tool = tool
        self.command = command
        self.apps: dict[str, AppState] = {} if apps is None else apps
        # "app:version" entries applied (or, for downgrade, reverted) by this run, in order.
        self.applied: list[str] = [] if applied is None else applied
        self.applied_count = applied_count
        self.duration_ms = duration_ms
        self.error = error
        self.plan = plan  # the plan command only
        self.locking = locking  # only when a migration waited for a table lock (or a note)
        self.v = v
        # Which database the run connected to: {"fingerprint": 16 hex digits} (not its name: the
        # Secret's); the operator records it next to the versions (never the URL, host or a password).
        self.database = database

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.SUCCEEDED

    def current_version(self) -> str | None:
        """``app:version`` of the newest migration, for the single-app common case; apps joined by ','."""
        parts = [f"{app}:{state.current}" for app, state in sorted(self.apps.items()) if state.current]
        return ",".join(parts) or None

    def to_dict(self) -> dict[str, Any]:
        """Fields in declaration order (the JSON's order); an absent optional part is left out."""
        data: dict[str, Any] = {
            "outcome": self.outcome.value,
            "tool": self.tool,
            "command": self.command,
            "apps": {name: state.to_dict() for name, state in self.apps.items()},
            "applied": list(self.applied),
            "applied_count": self.applied_count,
            "duration_ms": self.duration_ms,
        }
        if self.error is not None or self.plan is not None or self.locking is not None:
            from dataclasses import asdict  # the optional parts are dataclasses (report_parts.py)

            for name in ("error", "plan", "locking"):
                part = getattr(self, name)
                if part is not None:
                    data[name] = asdict(part)
        data["v"] = self.v
        if self.database is not None:
            data["database"] = dict(self.database)
        return data

    def _fields(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in _REPORT_FIELDS)

    def __eq__(self, other: object) -> bool:
        if type(other) is not Report:
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it replaces

    def __repr__(self) -> str:
        fields = zip(_REPORT_FIELDS, self._fields(), strict=True)
        return "Report(" + ", ".join(f"{k}={v!r}" for k, v in fields) + ")"


# ---------------------------------------------------------------- packed version lists
#
# Alembic's default revision ids are 12 lowercase hex digits: as JSON strings they cost 15 bytes each
# ("…",), packed as bytes and base64'd about 8. The packing is exact (every id comes back character
# for character) and general (any id of 1-127 UTF-8 bytes), so the operator can trust it for gating.
#
# Layout (before base64): one format byte (1), then groups of ids of one shape: a tag byte, a count
# byte (1-255), and the ids. Tag 0x80|k: each id is 2k lowercase hex digits stored as k bytes.
# Tag k (1-127): each id is k bytes of UTF-8 text. Order is kept (oldest first, as ``versions``).

_PACK_FORMAT = 1
_LOWER_HEX = re.compile(r"(?:[0-9a-f]{2})+")
_MAX_GROUP = 255


def _shape(version: str) -> tuple[int, bytes] | None:
    if len(version) <= 254 and _LOWER_HEX.fullmatch(version):
        return 0x80 | (len(version) // 2), bytes.fromhex(version)
    raw = version.encode()
    return (len(raw), raw) if 1 <= len(raw) <= 127 else None


def pack_versions(versions: Sequence[str]) -> str | None:
    """The packed form of ``versions``, or None when one of them cannot be packed (over 127 bytes)."""
    out = bytearray([_PACK_FORMAT])
    group: list[bytes] = []
    tag = -1
    for version in versions:
        shape = _shape(version)
        if shape is None:
            return None
        if shape[0] != tag or len(group) == _MAX_GROUP:
            if group:
                out += bytes([tag, len(group)]) + b"".join(group)
            tag, group = shape[0], []
        group.append(shape[1])
    if group:
        out += bytes([tag, len(group)]) + b"".join(group)
    return base64.b64encode(bytes(out)).decode("ascii")


def unpack_versions(text: str) -> list[str]:
    """Inverse of :func:`pack_versions`; a malformed text raises :class:`ReportError` (never a guess)."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ReportError("packed versions are not base64") from None
    if not raw or raw[0] != _PACK_FORMAT:
        raise ReportError("packed versions: unknown format")
    versions: list[str] = []
    pos = 1
    while pos < len(raw):
        if pos + 2 > len(raw):
            raise ReportError("packed versions: truncated group header")
        tag, count = raw[pos], raw[pos + 1]
        size = tag & 0x7F
        pos += 2
        if not size or not count or pos + size * count > len(raw):
            raise ReportError("packed versions: malformed group")
        for _ in range(count):
            chunk = raw[pos : pos + size]
            pos += size
            if tag & 0x80:
                versions.append(chunk.hex())
            else:
                try:
                    versions.append(chunk.decode())
                except UnicodeDecodeError:
                    raise ReportError("packed versions: invalid UTF-8") from None
    return versions


def _json(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def _wire_app(state: dict[str, Any]) -> dict[str, Any]:
    """One app's state as sent: versions packed when that is shorter, no empty ``heads``."""
    wire = dict(state)
    if not wire.get("heads"):
        wire.pop("heads", None)
    versions = wire.get("versions") or []
    packed = pack_versions(versions) if versions else None
    if packed is not None and len(packed) + 2 < len(_json(versions)):
        del wire["versions"]
        wire["packed"] = packed
    return wire


def _dumps(data: dict[str, Any]) -> bytes:
    wire = dict(data)
    wire["apps"] = {name: _wire_app(state) for name, state in (data.get("apps") or {}).items()}
    return _json(wire).encode()


def _fits(data: dict[str, Any], limit: int) -> bool:
    return len(_dumps(data)) <= limit


def _largest(low: int, high: int, fits: Callable[[int], bool]) -> int | None:
    """Largest ``n`` in ``[low, high]`` with ``fits(n)`` (``fits`` holds up to some point, then not)."""
    if high < low or not fits(low):
        return None
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low


def _fit_versions(data: dict[str, Any], limit: int) -> bool:
    """Keep the newest version names per app, as many as fit: the longest lists shrink first
    (a common cap, found by bisection), then apps at the cap get one more name while that fits.
    Leaves at least one name per app when even that does not fit; returns whether it fits."""
    apps: dict[str, dict[str, Any]] = data["apps"]
    full = {name: list(state["versions"]) for name, state in apps.items()}
    omitted = {name: int(state["omitted"]) for name, state in apps.items()}

    def keep(name: str, n: int) -> None:
        apps[name]["versions"] = full[name][len(full[name]) - n :] if n else []
        apps[name]["omitted"] = omitted[name] + len(full[name]) - len(apps[name]["versions"])

    def cap(n: int) -> bool:
        for name in apps:
            keep(name, min(n, len(full[name])))
        return _fits(data, limit)

    longest = max((len(v) for v in full.values()), default=0)
    best = _largest(1, longest, cap)
    cap(best or 1)
    if best is None:
        return False
    for name in apps:
        if len(full[name]) > best:
            keep(name, best + 1)
            if not _fits(data, limit):
                keep(name, best)
    return True


def _fit_applied(data: dict[str, Any], limit: int) -> bool:
    """Keep the newest names applied by this run, as many as fit (at least one); returns whether it fits."""
    full = list(data["applied"])

    def keep(n: int) -> bool:
        data["applied"] = full[len(full) - n :]
        return _fits(data, limit)

    best = _largest(1, len(full), keep)
    keep(best or min(1, len(full)))
    return best is not None


def _fit_message(data: dict[str, Any], limit: int) -> bool:
    """Cut the error message's tail (down to 80 characters, marked with …); returns whether it fits."""
    error = data.get("error")
    if not error or len(error["message"]) <= _MIN_MESSAGE_CHARS:
        return False
    full = error["message"]

    def keep(n: int) -> bool:
        error["message"] = full[:n] + "…"
        return _fits(data, limit)

    best = _largest(_MIN_MESSAGE_CHARS, len(full) - 1, keep)
    keep(best or _MIN_MESSAGE_CHARS)
    return best is not None


def _fit_plan(data: dict[str, Any], budget: int) -> None:
    """Shrink the plan summary to ``budget`` bytes of its own: its lists keep their first entries
    (bisection), their ``*_omitted`` counts grow; hash, target and counts stay. The pending list is
    cut first, then the non-SQL list, the findings last: they come most severe first (``plans.py``),
    so what a reviewer must see is what stays."""
    plan = data.get("plan")
    if not plan:
        return
    lists = ("pending", "opaque", "findings")  # in order of sacrifice
    full = {name: list(plan[name]) for name in lists}
    omitted = {name: int(plan[f"{name}_omitted"]) for name in lists}

    def keep(name: str, n: int) -> bool:
        plan[name] = full[name][:n]
        plan[f"{name}_omitted"] = omitted[name] + len(full[name]) - len(plan[name])
        return len(_dumps(plan)) <= budget

    for name in lists:
        if len(_dumps(plan)) <= budget:
            return

        def fits(n: int, name: str = name) -> bool:
            return keep(name, n)

        keep(name, _largest(0, len(full[name]), fits) or 0)


def _plan_budget(data: dict[str, Any], limit: int) -> int:
    """What a plan summary may take: all the room the rest of the report leaves at its smallest
    (version names and applied names can go; a plan Job's versions are not what the operator reads)."""
    rest = {**data, "plan": None, "applied": []}
    rest["apps"] = {name: {**state, "versions": []} for name, state in (data.get("apps") or {}).items()}
    return max(limit - len(_dumps(rest)), limit // 2)


def encode(report: Report, limit: int = MAX_BYTES) -> str:
    """Serialize compactly, dropping the least useful detail first until it fits ``limit`` bytes.

    A plan's SQL (``plan.steps``) goes first, marked ``steps_omitted``; then its summary's lists
    are cut to the room the rest of the report leaves at its smallest (first entries kept — the
    pending list first, findings last, which come most severe first —, ``*_omitted`` counted; hash,
    target and counts stay). Then, order of sacrifice: the oldest names applied by this run (for
    an upgrade they repeat the newest version names; their count stays), then the oldest version
    names (counts stay exact), then the tail of the error message; each step keeps as much as fits (bisection
    on exact sizes). Outcome, current versions and counts always survive.
    """
    data = report.to_dict()
    if data.get("error"):
        data["error"]["message"] = data["error"]["message"][:MAX_MESSAGE_CHARS]
    plan = data.get("plan")
    if plan and not _fits(data, limit):
        if plan["steps"] is not None:
            plan["steps"], plan["steps_omitted"] = None, True  # the SQL goes first; the log keeps it
        _fit_plan(data, _plan_budget(data, limit))  # then the summary; the rest shrinks as before
    if _fits(data, limit) or _fit_applied(data, limit) or _fit_versions(data, limit):
        return _dumps(data).decode()
    if _fit_message(data, limit):
        return _dumps(data).decode()
    for state in data["apps"].values():
        state["omitted"] += len(state["versions"])
        state["versions"] = []
    if _fits(data, limit):
        return _dumps(data).decode()
    data["applied"] = []
    if _fits(data, limit):
        return _dumps(data).decode()
    # Pathological (enormous app names): keep only the verdict.
    verdict = {
        "v": SCHEMA_VERSION,
        "outcome": data["outcome"],
        "apps": {},
        "applied": [],
        "applied_count": data["applied_count"],
        "tool": data["tool"],
        "command": data["command"],
        "duration_ms": data["duration_ms"],
    }
    if data.get("locking"):
        verdict["locking"] = {**data["locking"], "blocker": None, "note": None}
    if data.get("database"):
        verdict["database"] = data["database"]
    if data.get("plan"):
        plan = data["plan"]
        for name in ("pending", "opaque", "findings"):
            plan[f"{name}_omitted"] += len(plan[name])
            plan[name] = []
        verdict["plan"] = plan
    return _dumps(verdict).decode()


def _decode_locking(raw: Any) -> LockWaits | None:
    if not isinstance(raw, dict):
        return None
    from dbmigrate_runner.report_parts import LockWaits

    return LockWaits(
        timeout_ms=int(raw.get("timeout_ms", 0)),
        timeouts=int(raw.get("timeouts", 0)),
        attempts=int(raw.get("attempts", 0)),
        retries=int(raw.get("retries", 0)),
        migration=raw.get("migration"),
        blocker=raw.get("blocker"),
        waited_ms=int(raw.get("waited_ms", 0)),
        note=raw.get("note"),
    )


def _decode_plan(raw: Any) -> PlanSummary | None:
    if not isinstance(raw, dict) or not raw.get("hash"):
        return None
    from dbmigrate_runner.report_parts import PlanFinding, PlanSummary

    return PlanSummary(
        hash=str(raw["hash"]),
        target=raw.get("target"),
        pending=[str(v) for v in raw.get("pending", [])],
        pending_count=int(raw.get("pending_count", 0)),
        pending_omitted=int(raw.get("pending_omitted", 0)),
        statements=int(raw.get("statements", 0)),
        opaque=[str(v) for v in raw.get("opaque", [])],
        opaque_omitted=int(raw.get("opaque_omitted", 0)),
        findings=[
            PlanFinding(
                str(f["migration"]),
                int(f["statement"]),
                str(f["kind"]),
                str(f.get("target", "")),
                str(f.get("rule", "")),
                str(f.get("severity", "")),
            )
            for f in raw.get("findings", [])
            if isinstance(f, dict)
        ],
        findings_count=int(raw.get("findings_count", 0)),
        findings_omitted=int(raw.get("findings_omitted", 0)),
        review_count=int(raw["review_count"]) if isinstance(raw.get("review_count"), int) else None,
        lint_ignore=[str(r) for r in raw.get("lint_ignore", [])],
        steps=[dict(step) for step in raw["steps"] if isinstance(step, dict)]
        if isinstance(raw.get("steps"), list)
        else None,
        steps_omitted=bool(raw.get("steps_omitted", False)),
    )


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
            versions=(
                unpack_versions(str(state["packed"]))
                if "packed" in state
                else [str(v) for v in state.get("versions", [])]
            ),
            omitted=int(state.get("omitted", 0)),
            heads=[str(h) for h in state.get("heads", [])],
        )
        for name, state in (data.get("apps") or {}).items()
    }
    err = data.get("error")
    from dbmigrate_runner.report_parts import ErrorInfo

    error = (
        ErrorInfo(
            kind=str(err.get("kind", "")), message=str(err.get("message", "")), migration=err.get("migration")
        )
        if isinstance(err, dict)
        else None
    )
    return Report(
        plan=_decode_plan(data.get("plan")),
        locking=_decode_locking(data.get("locking")),
        outcome=outcome,
        tool=str(data.get("tool", "")),
        command=str(data.get("command", "")),
        apps=apps,
        applied=[str(v) for v in data.get("applied", [])],
        applied_count=int(data.get("applied_count", 0)),
        duration_ms=int(data.get("duration_ms", 0)),
        error=error,
        v=int(data.get("v", SCHEMA_VERSION)),
        database=_decode_database(data.get("database")),
    )


def _decode_database(raw: Any) -> dict[str, str] | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("fingerprint"), str):
        return None
    return {"fingerprint": str(raw["fingerprint"])}  # no name: it is the Secret's
