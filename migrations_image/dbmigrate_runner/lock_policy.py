"""The lock-timeout policy of migrations (``DBMIGRATE_LOCKING_*``): parsed with the settings.

Why a module of its own: every run validates these variables up front, but only a run with work
needs the retries and the blocker watcher (:mod:`dbmigrate_runner.locking`); the no-op path
imports just this.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping
from typing import NamedTuple

from dbmigrate_runner.errors import ConfigError

DEFAULT_TIMEOUT = 3.0
DEFAULT_RETRIES = 20
DEFAULT_BUDGET = 600.0
MAX_BACKOFF = 60.0
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


def parse_duration(text: str, name: str) -> float:
    """``"3s"``, ``"500ms"``, ``"10m"``, ``"1h"`` or a plain number of seconds → seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"{name} must be a duration like 3s, 500ms, 10m or 0, got {text!r}")
    return float(match[1]) * _UNITS[match[2] or "s"]


class Policy(NamedTuple):
    """``timeout`` seconds per lock wait (0: off, no lock_timeout is set and nothing is retried);
    ``retries`` attempts per migration (the first included); ``budget`` seconds the whole run may
    spend in timed-out attempts and backoff."""

    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    budget: float = DEFAULT_BUDGET

    @property
    def enabled(self) -> bool:
        return self.timeout > 0

    @property
    def timeout_ms(self) -> int:
        return max(1, round(self.timeout * 1000)) if self.enabled else 0

    def session_settings(self) -> dict[str, str]:
        """Server settings of every session a migration runs on."""
        return {"lock_timeout": f"{self.timeout_ms}ms"} if self.enabled else {}

    def backoff(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after the ``attempt``-th timeout: the timeout doubled per attempt (capped
        at a minute), half of it jittered, so runners and the app's queue do not move in step."""
        ceiling = min(MAX_BACKOFF, max(self.timeout, 0.1) * 2 ** (attempt - 1))
        return float(ceiling / 2 + ceiling / 2 * rand())


def policy_from_env(env: Mapping[str, str]) -> Policy:
    """``DBMIGRATE_LOCKING_TIMEOUT`` / ``_RETRIES`` / ``_BUDGET`` (the operator sets them from
    ``spec.locking``); unset: the defaults."""
    timeout, retries, budget = (
        (env.get(f"DBMIGRATE_LOCKING_{name}") or "").strip() for name in ("TIMEOUT", "RETRIES", "BUDGET")
    )
    try:
        count = int(retries) if retries else DEFAULT_RETRIES
    except ValueError:
        raise ConfigError(f"DBMIGRATE_LOCKING_RETRIES must be a whole number, got {retries!r}") from None
    if count < 1:
        raise ConfigError("DBMIGRATE_LOCKING_RETRIES must be at least 1")
    return Policy(
        timeout=parse_duration(timeout, "DBMIGRATE_LOCKING_TIMEOUT") if timeout else DEFAULT_TIMEOUT,
        retries=count,
        budget=parse_duration(budget, "DBMIGRATE_LOCKING_BUDGET") if budget else DEFAULT_BUDGET,
    )
