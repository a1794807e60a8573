"""The lock-timeout policy's decisions, without a database: settings, backoff, the blocker's sentence."""

from __future__ import annotations

import pytest

from dbmigrate_runner.errors import ConfigError
from dbmigrate_runner.lock_policy import (
    DEFAULT_BUDGET,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    Policy,
    parse_duration,
    policy_from_env,
)
from dbmigrate_runner.locking import Blocker, Waits, give_up, query_start, session_note
from dbmigrate_runner.report import LockWaits, Outcome, Report, decode, encode


def test_durations_and_env() -> None:
    assert parse_duration("3s", "x") == 3.0
    assert parse_duration("500ms", "x") == 0.5
    assert parse_duration("10m", "x") == 600.0
    assert parse_duration("1.5h", "x") == 5400.0
    assert parse_duration("0", "x") == 0.0
    assert parse_duration("7", "x") == 7.0
    with pytest.raises(ConfigError, match="duration"):
        parse_duration("3 minutes", "x")
    assert policy_from_env({}) == Policy(DEFAULT_TIMEOUT, DEFAULT_RETRIES, DEFAULT_BUDGET)
    policy = policy_from_env(
        {
            "DBMIGRATE_LOCKING_TIMEOUT": "250ms",
            "DBMIGRATE_LOCKING_RETRIES": "4",
            "DBMIGRATE_LOCKING_BUDGET": "1m",
        }
    )
    assert policy == Policy(0.25, 4, 60.0)
    assert policy.session_settings() == {"lock_timeout": "250ms"}
    off = policy_from_env({"DBMIGRATE_LOCKING_TIMEOUT": "0"})
    assert not off.enabled
    assert off.session_settings() == {}
    with pytest.raises(ConfigError, match="at least 1"):
        policy_from_env({"DBMIGRATE_LOCKING_RETRIES": "0"})


def test_backoff_doubles_is_jittered_and_capped() -> None:
    policy = Policy(timeout=2.0)
    low = [policy.backoff(n, lambda: 0.0) for n in range(1, 10)]
    high = [policy.backoff(n, lambda: 1.0) for n in range(1, 10)]
    assert low[:3] == [1.0, 2.0, 4.0]  # half the ceiling at the least
    assert high[:3] == [2.0, 4.0, 8.0]
    assert max(high) == 60.0  # capped


def test_the_blocker_is_named_with_its_query_start_and_no_literals() -> None:
    blocker = Blocker(
        pid=4711,
        relation="shop.review",
        user="report",
        application="reporting",
        state="idle in transaction",
        state_s=720.0,
        xact_s=725.0,
        query="SELECT *\n  FROM review WHERE email = 'someone@example.com' AND note = 'it''s'",
    )
    text = blocker.describe()
    assert text.startswith("a lock on shop.review held by pid 4711 (user 'report', app 'reporting', ")
    assert "idle in transaction for 12 min" in text
    assert "someone@example.com" not in text
    assert "it''s" not in text
    assert "SELECT * FROM review WHERE email = '…'" in text
    assert len(query_start("x" * 500)) == 80


def test_giving_up_says_what_was_not_applied_and_what_to_do() -> None:
    waits = Waits(Policy(3.0, 20, 600.0), waited=125.0)
    err = give_up(waits, "models:3_add", Blocker(pid=42, relation="public.t"), 20, True, "no attempts left")
    assert err.outcome is Outcome.LOCK_NOT_AVAILABLE
    assert err.outcome.exit_code == 7
    assert "models:3_add" in err.message
    assert "pid 42" in err.message
    assert "nothing of models:3_add" in err.message
    assert "spec.locking" in err.message


def test_session_note_only_when_the_timeout_is_not_ours() -> None:
    policy = Policy(timeout=3.0)
    assert session_note("3s", policy) is None
    assert session_note("3000ms", policy) is None
    assert "not 3000 ms" in (session_note("0", policy) or "")
    assert session_note("0", Policy(timeout=0)) is None


def test_the_report_carries_the_lock_waits() -> None:
    waits = LockWaits(
        timeout_ms=3000, timeouts=2, attempts=2, retries=20, migration="m:1", blocker="b", waited_ms=7000
    )
    back = decode(encode(Report(outcome=Outcome.SUCCEEDED, locking=waits)))
    assert back.locking == waits
    assert decode(encode(Report(outcome=Outcome.SUCCEEDED))).locking is None
    assert Outcome.from_exit_code(7) is Outcome.LOCK_NOT_AVAILABLE
