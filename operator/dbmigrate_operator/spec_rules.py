"""Whether a spec may start a run at all: its validity (the CRD schema's last line of defence) and the
operator's allowlists of ServiceAccounts and images.

Why a module of its own: both are checked before a Job is made, never against a run already made,
and both are the operator's rules rather than the run's. Pure.
"""

from __future__ import annotations

from typing import Any

from dbmigrate_operator import images
from dbmigrate_operator.settings import Settings
from dbmigrate_operator.status import Reason, Verdict, stalled


def validate(spec: dict[str, Any]) -> str | None:
    """Last line of defence behind the CRD schema (an old CRD, a cluster without CEL)."""
    if not str(spec.get("image") or "").strip():
        return "spec.image is required"
    if (unpinned := images.unpinned(str(spec["image"]))) is not None:
        return unpinned
    if (spec.get("tool") or "aerich") not in ("aerich", "tortoise", "alembic"):
        return f"spec.tool must be aerich, tortoise or alembic, got {spec.get('tool')!r}"
    db = spec.get("database") or {}
    if bool(db.get("urlSecretRef")) == bool(db.get("secretRef")):
        return "set exactly one of spec.database.urlSecretRef or spec.database.secretRef"
    ref = db.get("urlSecretRef") or db.get("secretRef") or {}
    if not ref.get("name") or ("urlSecretRef" in db and not ref.get("key")):
        return "spec.database names no Secret (name and key are required)"
    if spec.get("allowDowngrade") and not spec.get("target"):
        return "allowDowngrade: true needs spec.target"
    return None


def not_allowed(spec: dict[str, Any], settings: Settings) -> Verdict | None:
    """The operator's allowlists (chart values job.allowedServiceAccounts / job.allowedImages): whoever
    may create a DatabaseMigration could otherwise run any image as any ServiceAccount of its namespace."""
    job = spec.get("job") or {}
    account = str(job.get("serviceAccountName") or "")
    allowed = settings.allowed_service_accounts
    if allowed and (account or "default") not in allowed:
        named = f'"{account}"' if account else 'unset (the namespace\'s "default")'
        return stalled(
            Reason.SERVICE_ACCOUNT_NOT_ALLOWED,
            f"spec.job.serviceAccountName {named} is not in the operator's allowlist "
            f"({', '.join(allowed)}); ask your platform team. No Job is created.",
        )
    image = str(spec.get("image") or "")
    prefixes = settings.allowed_images
    if prefixes and not image.startswith(prefixes):
        return stalled(
            Reason.IMAGE_NOT_ALLOWED,
            f'spec.image "{image}" does not start with one of the operator\'s allowed prefixes '
            f"({', '.join(prefixes)}); ask your platform team. No Job is created.",
        )
    return None
