"""Plans and their approval: what ``status.plan`` holds and which approvals name the current plan. Pure.

How the plan reaches the operator (the Job has no API access, so only two channels exist: the
termination message and the Pod's log). The operator reads only the termination message — the
report, the single contract — which carries the plan's summary (hash, target, pending versions,
statement count, migrations with non-SQL steps, findings; lists shrunk with explicit omitted
counts) and, when it still fits in 4096 bytes, the SQL itself. The operator checks that SQL
against the hash and puts it in ``status.plan.sql``. A plan too large for that is never cut:
``status.plan.sqlOmitted`` says so and where the whole SQL is — the plan Job's log (one
``plan.document`` line, kept as long as the plan is current), which ``kubectl dbm plan NAME``
reads with the *user's* credentials and checks against the same hash. So the operator needs no
``pods/log`` permission (a log holds whatever the image prints) and writes no ConfigMap.

What an approval covers: the plan's hash (the runner's: tool, pending migrations in order, their SQL,
their non-SQL marks, each migration file's digest) and, beside it in ``status.plan.image``, the image
the plan Pod ran, by digest when the node reported one (:mod:`dbmigrate_operator.images`). The
approved run's Job uses that image and passes the hash with ``--expect-plan``: the runner makes the
plan again under the lock and applies nothing unless it hashes the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dbmigrate_operator import constants as c
from dbmigrate_operator import images
from dbmigrate_runner.report import PlanFinding, PlanSummary
from dbmigrate_runner.sqlplan import SqlPlan, hashes_to, render_sql, step_from

AUTO = "Auto"
ON_DESTRUCTIVE = "OnDestructive"
MANUAL = "Manual"
# status.plan.sql holds at most this many characters (a plan from the termination message is far
# below it; the cap keeps the status object small whatever happens).
MAX_SQL_CHARS = 16384


def mode(spec: dict[str, Any]) -> str:
    value = str(spec.get("approval") or AUTO)
    return value if value in c.APPROVAL_MODES else MANUAL  # unknown: the safe side


def approvals(cr: dict[str, Any]) -> dict[str, str]:
    """Where an approval can come from → the hash it names (empty ones left out)."""
    spec = cr.get("spec") or {}
    annotations = (cr.get("metadata") or {}).get("annotations") or {}
    found = {
        "spec.approvedPlan": str(spec.get("approvedPlan") or "").strip().lower(),
        f"annotation {c.APPROVE_ANNOTATION}": str(annotations.get(c.APPROVE_ANNOTATION) or "")
        .strip()
        .lower(),
    }
    return {where: value for where, value in found.items() if value}


def plan_status(summary: PlanSummary, job: str, tool: str) -> dict[str, Any]:
    """``status.plan`` from a plan Job's report: the summary, and the SQL when it came along and
    hashes to the summary's hash (else it is said to be in the log, never silently dropped)."""
    record: dict[str, Any] = {
        "hash": summary.hash,
        "job": job,
        "target": summary.target or "",
        "pending": list(summary.pending),
        "pendingCount": summary.pending_count,
        "statements": summary.statements,
        "opaque": list(summary.opaque),
        "findings": [_finding(f) for f in summary.findings],
        "findingsCount": summary.findings_count,
        # From a runner without severities every finding needs review (fail closed).
        "reviewCount": summary.findings_count if summary.review_count is None else summary.review_count,
    }
    if summary.lint_ignore:
        record["lintIgnore"] = list(summary.lint_ignore)
    omitted = summary.pending_omitted + summary.opaque_omitted + summary.findings_omitted
    if omitted:
        record["omitted"] = omitted
    sql = _sql(summary, tool)
    if sql is not None and len(sql) <= MAX_SQL_CHARS:
        record["sql"] = sql
    else:
        record["sqlOmitted"] = (
            f"the SQL does not fit in the status; it is in the log of Job {job} "
            f"(kubectl dbm plan NAME prints it, checked against hash {summary.hash})"
        )
    return record


def _finding(f: PlanFinding) -> dict[str, Any]:
    out: dict[str, Any] = {
        "migration": f.migration,
        "statement": f.statement,
        "kind": f.kind,
        "target": f.target,
    }
    if f.rule:
        out["rule"] = f.rule
    if f.severity:
        out["severity"] = f.severity
    return out


def _sql(summary: PlanSummary, tool: str) -> str | None:
    if summary.steps is None:
        return None
    steps = [step_from(s) for s in summary.steps]
    if not hashes_to(tool, steps, summary.hash, summary.lint_ignore):
        return None
    return render_sql(
        SqlPlan(
            tool=tool, target=summary.target, steps=steps, hash=summary.hash, lint_ignore=summary.lint_ignore
        )
    )


@dataclass(frozen=True)
class Approved:
    """The approved plan's hash (the runner applies only that plan) and the image the run uses."""

    hash: str
    image: str | None  # None: spec.image (a plan recorded before images were recorded)


def image_record(spec_image: str, image_id: str) -> dict[str, str]:
    """``status.plan.image`` (what the approved run will use: spec.image's repository at the digest
    the plan Pod ran, or spec.image itself when the node reported no registry digest) and
    ``status.plan.imageID`` (the kubelet's own words)."""
    record = {"image": images.at_digest(spec_image, image_id) or spec_image}
    if image_id:
        record["imageID"] = image_id
    return record


def approved(record: dict[str, Any]) -> Approved:
    return Approved(str(record["hash"]), str(record["image"]) if record.get("image") else None)


def needs_review(record: dict[str, Any]) -> bool:
    """OnDestructive: a person decides when the lint found something destructive, unclassified or a
    lock hazard (``reviewCount``; findings on objects created in the same plan do not count), or
    something not SQL. A record without ``reviewCount`` counts every finding."""
    count = record.get("reviewCount", record.get("findingsCount"))
    return bool(count or record.get("opaque"))


def waiting_message(record: dict[str, Any], stale: dict[str, str], name: str, namespace: str) -> str:
    """The condition message while waiting: names the hash, what it would do, how to approve it."""
    h = record["hash"]
    text = (
        f"waiting for approval of plan {h}: {record.get('pendingCount', 0)} migration(s), "
        f"{record.get('statements', 0)} statement(s), "
        f"{record.get('reviewCount', record.get('findingsCount', 0))} finding(s) to review"
    )
    if record.get("opaque"):
        text += f", {len(record['opaque'])} with steps that are not SQL"
    if record.get("image"):
        text += f", image {record['image']}"
    text += (
        f". Review it (kubectl dbm plan {name} -n {namespace}), then set spec.approvedPlan: {h} "
        f"or run kubectl dbm approve {name} -n {namespace}"
    )
    if stale:
        named = ", ".join(f"{where} names {value}" for where, value in sorted(stale.items()))
        text += f". Not approved: {named}, which is not the current plan (the image or database changed)"
    return text
