"""Controller scenarios as data: what the migration Pod does, and what the CR must say afterwards.

The kmock wiring tests play the Pod's part themselves (:class:`PodScript`); on the real control
plane the e2e suite gets the same Pod behaviour from the real runner, registry and scheduler
(a missing Secret, an unknown image, an impossible nodeSelector, a failing migration) and checks
the same :class:`Expect`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dbmigrate_runner.report import Outcome
from tests.operator.builders import failure_report, success_report

V1, V2, V3 = (
    "0_20261121051854_init",
    "1_20261121051858_add_description_and_orders",
    "2_20261121051904_add_bio_and_reviews",
)


@dataclass(frozen=True)
class PodScript:
    """Either the container ends (exit code + termination message) or the Pod is stuck waiting."""

    exit_code: int | None = None
    message: str | None = None
    stuck: str | None = None  # waiting reason, or "Unschedulable"
    stuck_message: str = ""


@dataclass(frozen=True)
class Expect:
    phase: str
    condition: str  # the one condition that is True
    reason: str
    message_contains: tuple[str, ...] = ()
    current_version: str | None = None
    event: tuple[str, str] | None = None  # (type, reason) posted on the CR


@dataclass(frozen=True)
class Scenario:
    name: str
    pod: PodScript
    expect: Expect
    spec: dict[str, Any] = field(default_factory=dict)


SCENARIOS = [
    Scenario(
        "applied",
        PodScript(0, success_report([V1, V2, V3])),
        Expect(
            "Succeeded",
            "Ready",
            "Applied",
            ("Applied 3 migration(s)",),
            f"models:{V3}",
            ("Normal", "Applied"),
        ),
    ),
    Scenario(
        "migration-failed",
        PodScript(
            5,
            failure_report(
                Outcome.MIGRATION_FAILED,
                'relation "review" already exists',
                versions=[V1, V2],
                kind="DuplicateTableError",
                migration=f"models:{V3}",
            ),
        ),
        Expect(
            "Failed",
            "Stalled",
            "MigrationFailed",
            ('relation "review" already exists', "dbmigrate.dev/rerun"),
            f"models:{V2}",
            ("Warning", "MigrationFailed"),
        ),
    ),
    Scenario(
        "database-unreachable",
        PodScript(
            3,
            failure_report(
                Outcome.DATABASE_UNREACHABLE,
                "could not connect to postgres.shop.svc:5432 within 60s: connection refused",
            ),
        ),
        Expect(
            "Failed",
            "Stalled",
            "DatabaseUnreachable",
            ("connection refused",),
            None,
            ("Warning", "DatabaseUnreachable"),
        ),
    ),
    Scenario(
        "secret-missing",
        PodScript(stuck="CreateContainerConfigError", stuck_message='secret "shop-db" not found'),
        Expect(
            "Pending",
            "Stalled",
            "SecretNotFound",
            ('secret "shop-db" not found',),
            None,
            ("Warning", "SecretNotFound"),
        ),
    ),
    Scenario(
        "secret-key-missing",
        PodScript(
            stuck="CreateContainerConfigError", stuck_message="couldn't find key url in Secret shop/shop-db"
        ),
        Expect("Pending", "Stalled", "SecretNotFound", ("couldn't find key url in Secret shop/shop-db",)),
    ),
    Scenario(
        "image-pull-failed",
        PodScript(
            stuck="ErrImagePull",
            stuck_message="failed to pull and unpack image "
            '"registry.example.com/shop-migrations:9.9.9": not found',
        ),
        Expect(
            "Pending",
            "Stalled",
            "ImagePullFailed",
            ("registry.example.com/shop-migrations:9.9.9",),
            None,
            ("Warning", "ImagePullFailed"),
        ),
        spec={"image": "registry.example.com/shop-migrations:9.9.9"},
    ),
    Scenario(
        "unschedulable",
        PodScript(
            stuck="Unschedulable",
            stuck_message="0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector",
        ),
        Expect("Pending", "Stalled", "Unschedulable", ("didn't match Pod's node affinity/selector",)),
        spec={"job": {"nodeSelector": {"pool": "does-not-exist"}}},
    ),
]
