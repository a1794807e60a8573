"""The report contract: always decodable, never over the kubelet's 4096-byte limit."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta

import pytest

from dbmigrate_runner.report import (
    MAX_BYTES,
    AppState,
    ErrorInfo,
    LockWaits,
    Outcome,
    PlanFinding,
    PlanSummary,
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


CHANGES = (
    "add_loyalty_points_to_customer",
    "create_shipment_tracking_table",
    "add_index_on_order_created_at",
    "split_address_into_street_and_city",
    "drop_legacy_coupon_columns",
)


def _realistic_versions(n: int) -> list[str]:
    """aerich-style names: number, creation timestamp, what the migration does."""
    start = datetime(2026, 1, 5, 9, 30)
    return [
        f"{i}_{(start + timedelta(days=3 * i, minutes=17 * i)):%Y%m%d%H%M%S}_{CHANGES[i % len(CHANGES)]}"
        for i in range(n)
    ]


def _one_more(text: str, full: list[str], key: str) -> int:
    """Size of ``text`` with the next older name put back into ``key`` ("versions" or "applied")."""
    data = json.loads(text)
    if key == "versions":
        state = data["apps"]["models"]
        state["versions"] = full[len(full) - len(state["versions"]) - 1 :]
        state["omitted"] -= 1
    else:
        data["applied"] = full[len(full) - len(data["applied"]) - 1 :]
    return len(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode())


def test_sixty_realistic_names_keep_as_many_as_fit() -> None:
    """A fresh database with 60 migrations: this run's names go first, the version names nearly all stay."""
    versions = _realistic_versions(60)
    applied = [f"models:{v}" for v in versions]
    report = Report(
        outcome=Outcome.SUCCEEDED,
        tool="aerich",
        command="upgrade",
        apps={"models": AppState(current=versions[-1], count=60, versions=versions)},
        applied=applied,
        applied_count=60,
        duration_ms=5321,
    )
    assert len(json.dumps(report.to_dict()).encode()) > MAX_BYTES  # trimming is needed at all
    text = encode(report)
    assert len(text.encode()) <= MAX_BYTES
    decoded = decode(text)
    assert decoded.apps["models"].versions == versions  # all 60 version names fit
    assert decoded.applied_count == 60
    assert decoded.applied == applied[-len(decoded.applied) :]
    assert _one_more(text, applied, "applied") > MAX_BYTES


def test_long_names_keep_as_many_versions_as_fit() -> None:
    """Version names alone over the limit: the newest nearly all stay, and one more would not fit."""
    versions = [f"{v}_and_backfill_them" for v in _realistic_versions(60)]
    report = Report(
        outcome=Outcome.MIGRATION_FAILED,
        tool="aerich",
        command="upgrade",
        apps={"models": AppState(current=versions[-1], count=60, versions=versions)},
        applied=[f"models:{versions[-1]}"],
        applied_count=1,
        error=ErrorInfo(kind="UndefinedTableError", message='relation "x" does not exist', migration="m:v"),
    )
    assert len(json.dumps(report.to_dict()).encode()) > MAX_BYTES
    text = encode(report)
    assert len(text.encode()) <= MAX_BYTES
    decoded = decode(text)
    state = decoded.apps["models"]
    assert len(state.versions) >= 50  # nearly all
    assert state.versions == versions[-len(state.versions) :]
    assert state.omitted == 60 - len(state.versions)
    assert decoded.applied == report.applied
    assert decoded.error == report.error
    assert _one_more(text, versions, "versions") > MAX_BYTES


@pytest.mark.parametrize("outcome", list(Outcome))
def test_exit_codes_are_distinct_and_reversible(outcome: Outcome) -> None:
    assert Outcome.from_exit_code(outcome.exit_code) is outcome
    assert len({o.exit_code for o in Outcome}) == len(Outcome)


@pytest.mark.parametrize("text", ["", "not json", "[1]", '{"outcome": "Exploded"}', '{"apps": {}}'])
def test_garbage_is_rejected_with_report_error(text: str) -> None:
    with pytest.raises(ReportError):
        decode(text)


def test_plan_report_fits_when_huge() -> None:
    """Not a run's report only: a plan summary with many entries still fits the termination message."""
    findings = [PlanFinding(f"models:{i}_x" * 5, i, "DropColumn", f"t.c{i}" * 5) for i in range(400)]
    summary = PlanSummary(
        hash="a" * 64,
        target="models:399_x",
        pending=[f"models:{i}_x" * 5 for i in range(400)],
        pending_count=400,
        statements=900,
        findings=findings,
        findings_count=400,
        steps=[
            {"migration": f"models:{i}_x", "statements": ["DROP TABLE t"], "opaque": []} for i in range(400)
        ],
    )
    text = encode(Report(Outcome.SUCCEEDED, tool="aerich", command="plan", plan=summary))
    assert len(text.encode()) <= MAX_BYTES
    back = decode(text).plan
    assert back is not None
    assert back.hash == "a" * 64
    assert back.findings_count == 400
    assert 0 < len(back.findings) < 400
    assert back.findings_omitted == 400 - len(back.findings)
    assert back.pending == summary.pending[: len(back.pending)]
    assert back.pending_omitted == 400 - len(back.pending)
    assert back.steps is None
    assert back.steps_omitted  # the SQL is not silently cut: it is said to be elsewhere


def test_small_plan_keeps_its_sql() -> None:
    steps = [{"migration": "models:1_x", "statements": ['ALTER TABLE "t" DROP COLUMN "c"'], "opaque": []}]
    summary = PlanSummary(
        hash="b" * 64, target="models:1_x", pending=["models:1_x"], pending_count=1, steps=steps
    )
    back = decode(encode(Report(Outcome.SUCCEEDED, tool="aerich", command="plan", plan=summary))).plan
    assert back is not None
    assert back.steps == steps
    assert not back.steps_omitted


def test_trimmed_plan_keeps_the_first_findings_before_the_pending_list() -> None:
    """Findings come most severe first (plans.ranked); when the summary must shrink, the pending
    list goes first and the findings keep their head, with exact counts."""
    pending = [f"alembic:{i:012x}" for i in range(60)]
    drops = [
        PlanFinding(pending[-1], i, "DropTable", f"customer_data_{i:02d}", "ban-drop-table", "destructive")
        for i in range(22)
    ]
    fresh = [
        PlanFinding(pending[0], i, "DropIndex", f"ix_new_{i:02d}", "ban-drop-index", "in-plan")
        for i in range(40)
    ]
    summary = PlanSummary(
        hash="c" * 64,
        target=pending[-1],
        pending=pending,
        pending_count=len(pending),
        statements=100,
        findings=drops + fresh,
        findings_count=len(drops + fresh),
        review_count=len(drops),
    )
    text = encode(Report(Outcome.SUCCEEDED, tool="alembic", command="plan", plan=summary))
    assert len(text.encode()) <= MAX_BYTES
    back = decode(text).plan
    assert back is not None
    assert back.findings[:22] == drops
    assert back.findings_count == 62
    assert back.review_count == 22
    assert len(back.findings) + back.findings_omitted == 62
    assert back.pending_omitted == 60 - len(back.pending)
    assert len(back.pending) < 60  # cut first


def _contract_cases() -> dict[str, Report]:
    """One report of each shape the operator reads: a no-op, an Alembic run (packed versions, two
    heads), a failure with lock waits (the message cut), a small plan, a plan trimmed to fit."""
    drops = [
        PlanFinding(f"models:{i}_m", i, "DropTable", f"customer_{i:02d}", "ban-drop-table", "destructive")
        for i in range(30)
    ]
    revs = [f"{i:012x}" for i in range(1, 41)]
    return {
        "noop": Report(
            Outcome.SUCCEEDED,
            tool="aerich",
            command="upgrade",
            apps={
                "models": AppState(current="2_b", count=3, versions=["0_init", "1_a", "2_b"]),
                "users": AppState(),
            },
            duration_ms=27,
            database={"fingerprint": "c5b17f620d4a405b"},
        ),
        "alembic": Report(
            Outcome.SUCCEEDED,
            tool="alembic",
            command="upgrade",
            apps={"alembic": AppState(current=revs[-1], count=40, versions=revs, heads=[revs[-1], revs[-2]])},
            applied=[f"alembic:{r}" for r in revs[-3:]],
            applied_count=3,
            duration_ms=1200,
        ),
        "failed": Report(
            Outcome.MIGRATION_FAILED,
            tool="tortoise",
            command="upgrade",
            apps={"models": AppState(current="0001_init", count=1, versions=["0001_init"])},
            duration_ms=4100,
            error=ErrorInfo(
                kind="LockNotAvailableError",
                message="canceling statement due to lock timeout " + "x" * 1600,
                migration="models:0002_x",
            ),
            locking=LockWaits(
                timeout_ms=3000,
                timeouts=20,
                attempts=20,
                retries=20,
                migration="models:0002_x",
                blocker="pid 42 (app) idle in transaction",
                waited_ms=61000,
            ),
        ),
        "small_plan": Report(
            Outcome.SUCCEEDED,
            tool="aerich",
            command="plan",
            plan=PlanSummary(
                hash="ab" * 32,
                target="models:3_c",
                pending=["models:3_c"],
                pending_count=1,
                statements=2,
                findings=drops[:2],
                findings_count=2,
                review_count=2,
                lint_ignore=["ban-drop-index"],
                steps=[
                    {
                        "migration": "models:3_c",
                        "statements": ["DROP TABLE a;", "DROP TABLE b;"],
                        "opaque": False,
                        "source": "cd" * 32,
                    }
                ],
            ),
        ),
        "big_plan": Report(
            Outcome.SUCCEEDED,
            tool="aerich",
            command="plan",
            apps={
                "models": AppState(
                    current="2_b", count=300, versions=[f"{i}_v{'x' * 20}" for i in range(300)]
                )
            },
            plan=PlanSummary(
                hash="ef" * 32,
                target="models:400_z",
                pending=[f"models:{i}_p{'y' * 30}" for i in range(100)],
                pending_count=100,
                statements=900,
                opaque=[f"models:{i}_p" for i in range(40)],
                findings=drops * 5,
                findings_count=150,
                review_count=150,
                steps=[
                    {
                        "migration": f"models:{i}_p",
                        "statements": ["SELECT 1;"] * 9,
                        "opaque": False,
                        "source": "00" * 32,
                    }
                    for i in range(100)
                ],
            ),
        ),
    }


# Length and sha256 of each case's JSON as the dataclass-based report of commit 499b149 wrote it:
# the classes behind the report may move or change (figure 1 of docs/benchmarks.md), its bytes not.
CONTRACT_BYTES = {
    "noop": (312, "292ce947b849327e36a22b4a6a0b1d4837b5f47529a0f4a77bc553b436fab5fd"),
    "alembic": (629, "d1008d9cc2a53c7e79b51665ce7549d329f7746f18c21d2215f844ce6f913b85"),
    "failed": (1968, "f3cd1c571fae259a3444faee35d0b5321b0bafd5827fdd73e4d1e9450ab28a15"),
    "small_plan": (897, "89765fe04a2464b2c8c77c8625e7a4583ce50bd33de2a98cbf76e6e26547e500"),
    "big_plan": (4070, "610c0a4d84f2b7fec83b43ab524a26a41ea66d02d5b3bdd0c6f0eb65b950bf12"),
}


@pytest.mark.parametrize("case", sorted(CONTRACT_BYTES))
def test_the_json_is_byte_for_byte_what_the_dataclass_report_wrote(case: str) -> None:
    report = _contract_cases()[case]
    text = encode(report)
    assert (len(text), hashlib.sha256(text.encode()).hexdigest()) == CONTRACT_BYTES[case], text[:400]
    assert decode(text).to_dict() == decode(encode(decode(text))).to_dict()  # and it reads back stably
