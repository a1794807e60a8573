"""The report contract: always decodable, never over the kubelet's 4096-byte limit."""

from __future__ import annotations

import pytest

from dbmigrate_runner.report import (
    MAX_BYTES,
    AppState,
    ErrorInfo,
    Outcome,
    Report,
    ReportError,
    decode,
    encode,
)


def _big_report(n: int, message: str = "") -> Report:
    versions = [f"{i}_20260101{i:06d}_step_number_{i}" for i in range(n)]
    return Report(
        outcome=Outcome.MIGRATION_FAILED if message else Outcome.SUCCEEDED,
        tool="aerich",
        command="upgrade",
        apps={"models": AppState(current=versions[-1], count=n, versions=versions)},
        applied=[f"models:{v}" for v in versions],
        applied_count=n,
        error=ErrorInfo(kind="SyntaxError", message=message, migration="models:x") if message else None,
    )


def test_round_trip_keeps_everything_when_small() -> None:
    report = _big_report(3, message='relation "users" already exists')
    decoded = decode(encode(report))
    assert decoded == report
    assert decoded.current_version() == f"models:{report.apps['models'].current}"


@pytest.mark.parametrize("n", [50, 500, 5000])
def test_large_reports_fit_and_keep_counts_and_newest_versions(n: int) -> None:
    report = _big_report(n, message="x" * 10_000)
    text = encode(report)
    assert len(text.encode()) <= MAX_BYTES
    decoded = decode(text)
    state = decoded.apps["models"]
    assert state.count == n
    assert state.current == report.apps["models"].current
    assert state.omitted + len(state.versions) == n
    assert state.versions[-1] == state.current  # the oldest go first
    assert decoded.applied_count == n
    assert decoded.error is not None
    assert decoded.error.message.startswith("xxx")


def test_multibyte_messages_are_measured_in_bytes() -> None:
    text = encode(_big_report(400, message="ошибка " * 2000))
    assert len(text.encode()) <= MAX_BYTES


@pytest.mark.parametrize("outcome", list(Outcome))
def test_exit_codes_are_distinct_and_reversible(outcome: Outcome) -> None:
    assert Outcome.from_exit_code(outcome.exit_code) is outcome
    assert len({o.exit_code for o in Outcome}) == len(Outcome)


@pytest.mark.parametrize("text", ["", "not json", "[1]", '{"outcome": "Exploded"}', '{"apps": {}}'])
def test_garbage_is_rejected_with_report_error(text: str) -> None:
    with pytest.raises(ReportError):
        decode(text)
