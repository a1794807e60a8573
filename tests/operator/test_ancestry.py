"""Alembic pins beyond the status cap: report → decide → status.ancestry → gating, all pure.

A pod pinned to an applied ancestor is released; a pod pinned to a revision that is not applied is
never released, however long the history and however the report had to shrink.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest

from dbmigrate_operator import ancestry
from dbmigrate_operator.actions import CreateJob
from dbmigrate_operator.gating.requirement import Requirement, evaluate
from dbmigrate_operator.reconcile import decide
from dbmigrate_operator.settings import Settings
from dbmigrate_runner.report import (
    MAX_BYTES,
    AppState,
    Outcome,
    Report,
    ReportError,
    decode,
    encode,
    pack_versions,
    unpack_versions,
)
from tests.operator.builders import T0, admit, completed, make_cr, terminated_pod
from tests.operator.test_reconcile import apply, settle

S = Settings()


def revision_ids(n: int, seed: int) -> list[str]:
    """Alembic's default ids (12 hex digits of a uuid4), reproducibly."""
    rng = random.Random(seed)
    return [f"{rng.getrandbits(48):012x}" for _ in range(n)]


def alembic_report(ancestry_oldest_first: list[str], heads: list[str], applied: int = 0) -> str:
    """What the runner writes: the ancestry of ``heads`` as versions, the heads themselves."""
    versions = list(ancestry_oldest_first)
    return encode(
        Report(
            outcome=Outcome.SUCCEEDED,
            tool="alembic",
            command="upgrade",
            apps={
                "alembic": AppState(
                    current=versions[-1] if versions else None,
                    count=len(versions),
                    versions=versions,
                    heads=sorted(heads),
                )
            },
            applied=[f"alembic:{v}" for v in versions[len(versions) - applied :]] if applied else [],
            applied_count=applied,
            duration_ms=900,
        )
    )


class Cluster:
    """One DatabaseMigration driven through runs; finished Jobs are cleaned up after each run."""

    def __init__(self) -> None:
        self.cr = make_cr(tool="alembic")
        self.now = T0
        self.runs = 0

    def run(self, report: str) -> dict[str, Any]:
        self.runs += 1
        self.now += timedelta(minutes=5)
        self.cr["spec"]["image"] = f"registry.example.com/shop-migrations:1.{self.runs}"
        self.cr["metadata"]["generation"] = self.runs
        plan = decide(self.cr, [], [], self.now, S)
        (create,) = plan.of(CreateJob)
        self.cr = apply(self.cr, plan)
        job = completed(admit(create.manifest, self.now), self.now + timedelta(seconds=30))
        pod = terminated_pod(job, 0, report, self.now + timedelta(seconds=30))
        self.cr, _ = settle(self.cr, [job], [pod], now=self.now + timedelta(seconds=31))
        # the Job and its Pod are gone (history limit, TTL); a restarted operator sees only status
        cleaned = decide(self.cr, [], [], self.now + timedelta(minutes=1), S)
        assert cleaned.status["ancestry"] == self.cr["status"]["ancestry"]
        return dict(self.cr["status"])

    def released(self, revision: str) -> bool:
        return evaluate(Requirement("shop-db", version=revision, app="alembic"), self.cr).met

    def verdict(self, revision: str) -> Any:
        return evaluate(Requirement("shop-db", version=revision), self.cr)


# ---------------------------------------------------------------- the packing


@pytest.mark.parametrize(
    "ids",
    [
        revision_ids(300, 1),
        ["0001", "0002_add_bio", "ae1027a6acf6", "ABCDEF", "é", "abc", "a" * 127, "00" * 127],
        [],
    ],
)
def test_packing_is_exact(ids: list[str]) -> None:
    packed = pack_versions(ids)
    assert packed is not None
    assert unpack_versions(packed) == ids


def test_packing_refuses_ids_it_cannot_hold_exactly() -> None:
    assert pack_versions(["x" * 128]) is None


@pytest.mark.parametrize("text", ["", "!!!", "AgEB", "AYEBAA", "AYEC"])  # bad format, cut groups
def test_malformed_packing_is_an_error_not_a_guess(text: str) -> None:
    with pytest.raises(ReportError):
        unpack_versions(text)


def test_default_ids_pack_in_about_eight_characters() -> None:
    ids = revision_ids(600, 2)
    packed = pack_versions(ids)
    assert packed is not None
    assert len(packed) < 8.1 * len(ids)


# ---------------------------------------------------------------- a long linear history


def test_600_revisions_in_one_run_keep_the_newest_exactly_and_count_the_rest() -> None:
    history = revision_ids(601, 3)
    applied, pending = history[:600], history[600]
    text = alembic_report(applied, [applied[-1]], applied=600)
    assert len(text.encode()) <= MAX_BYTES
    cluster = Cluster()
    status = cluster.run(text)
    known = ancestry.known(status)
    assert known is not None
    listed = decode(text).apps["alembic"]
    assert len(known.revisions) == len(listed.versions) >= 450  # default ids: ~8 bytes each
    assert known.omitted == 600 - len(known.revisions) == listed.omitted
    assert known.revisions == set(applied[-len(known.revisions) :])
    assert len(status["appliedVersions"]) == S.applied_versions_cap < len(known.revisions)

    assert cluster.released(applied[-1])
    assert cluster.released(applied[-S.applied_versions_cap - 1])  # beyond the status list's cap
    assert cluster.released(applied[-len(known.revisions)])
    # older than what the report could hold: cannot be verified, stays gated, and says why
    oldest = cluster.verdict(applied[0])
    assert not oldest.met
    assert "cannot be verified" in oldest.message
    assert f"{known.omitted} older" in oldest.message
    # never released: a revision of the image that is not applied, one of no image at all
    for revision in (pending, "ffffffffffff", applied[-1][:6]):
        assert not cluster.released(revision), revision


def test_a_history_applied_release_by_release_is_known_back_to_its_first_revision() -> None:
    history = revision_ids(620, 4)
    cluster = Cluster()
    for end in range(20, 601, 20):
        status = cluster.run(alembic_report(history[:end], [history[end - 1]], applied=20))
    known = ancestry.known(status)
    assert known is not None
    assert (len(known.revisions), known.omitted) == (600, 0)
    assert all(cluster.released(rev) for rev in history[:600])
    pending = cluster.verdict(history[600])
    assert not pending.met
    assert pending.reason == "VersionNotApplied"
    assert "cannot be verified" not in pending.message  # the list is complete: definitely not applied
    assert len(status["ancestry"]["packed"]) < 8.1 * 600  # ~5 KB of status for 600 revisions


def test_a_downgrade_forgets_what_is_no_longer_applied() -> None:
    history = revision_ids(300, 5)
    cluster = Cluster()
    cluster.run(alembic_report(history[:150], [history[149]]))
    cluster.run(alembic_report(history, [history[-1]]))
    assert cluster.released(history[-1])
    cluster.run(alembic_report(history[:100], [history[99]]))  # downgraded to revision 100
    assert cluster.released(history[99])
    assert cluster.released(history[0])
    assert not any(cluster.released(rev) for rev in history[100:])


def test_the_stored_ancestry_is_capped_and_counts_what_it_dropped() -> None:
    history = revision_ids(300, 6)
    small = Settings(ancestry_cap=120)
    old = None
    for end in range(100, 301, 100):
        state = decode(alembic_report(history[:end], [history[end - 1]])).apps["alembic"]
        old = ancestry.merge(old, state, small.ancestry_cap)
    assert old is not None
    assert (old["known"], old["omitted"]) == (120, 180)
    assert unpack_versions(old["packed"]) == history[180:]


def test_an_unreadable_stored_ancestry_releases_nothing_it_cannot_prove() -> None:
    cluster = Cluster()
    history = revision_ids(10, 7)
    cluster.run(alembic_report(history, [history[-1]]))
    cluster.cr["status"]["ancestry"]["packed"] = "not base64!"
    cluster.cr["status"]["appliedVersions"] = []
    assert not cluster.released(history[0])


# ---------------------------------------------------------------- merged branches


def branches(seed: int) -> tuple[list[str], list[str], list[str], str]:
    """base ← a1..a300 and base ← b1..b300 (two branches), merged by m."""
    ids = revision_ids(602, seed)
    return ids[:1], ids[1:301], ids[301:601], ids[601]


def test_two_heads_then_one_branch_reverted_then_merged() -> None:
    base, a, b, m = branches(8)
    cluster = Cluster()
    # target heads: both branches applied, interleaved as Alembic walks them (report keeps the newest)
    both = base + [rev for pair in zip(a, b, strict=True) for rev in pair]
    cluster.run(alembic_report(both, [a[-1], b[-1]]))
    known = ancestry.known(cluster.cr["status"])
    assert known is not None
    assert set(known.heads) == {a[-1], b[-1]}
    assert cluster.released(a[-1])
    assert cluster.released(b[-1])
    assert cluster.released(b[250])
    assert not cluster.released(m)

    # branch b downgraded away (heads: a only): its revisions must never be released again
    cluster.run(alembic_report(base + a, [a[-1]]))
    assert cluster.released(a[0])
    assert cluster.released(base[0])
    assert not any(cluster.released(rev) for rev in b)

    # b re-applied and both merged: the union of what the runs told, all of it applied
    merged = base + a + b + [m]
    text = alembic_report(merged, [m], applied=301)
    cluster.run(text)
    listed = decode(text).apps["alembic"]
    assert listed.omitted > 0  # 602 ids do not all fit in one report ...
    known = ancestry.known(cluster.cr["status"])
    assert known is not None
    assert known.omitted == 0  # ... but a's were known from the run before, and m's report lists b
    assert all(cluster.released(rev) for rev in merged)
    assert not cluster.released("0123456789ab")


def test_old_ids_are_kept_only_when_every_old_head_is_still_applied() -> None:
    base, a, b, _m = branches(9)
    old = ancestry.merge(None, decode(alembic_report(base + a + b, [a[-1], b[-1]])).apps["alembic"], 5000)
    # a report listing a's head but not b's: b's ids must not survive the merge
    new = ancestry.merge(old, decode(alembic_report(base + a, [a[-1]])).apps["alembic"], 5000)
    assert set(unpack_versions(new["packed"])) <= set(base + a)
