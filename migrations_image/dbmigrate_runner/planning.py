"""Pure decisions: which versions to apply or revert, given what is on disk, what is applied, a target.

Versions are migration names without ``.py`` (aerich stores ``.py`` in its table; callers strip
it). Both tools number their files (``3_20260101_x`` for aerich, ``0003_x`` for tortoise), so
the numeric prefix orders them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from dbmigrate_runner.errors import ConfigError, DowngradeRefused

ZERO = "zero"  # downgrade target meaning "revert every migration of the app"


def version_key(name: str) -> tuple[int, str]:
    head = name.split("_", 1)[0]
    return (int(head) if head.isdigit() else 1 << 62, name)


def sort_versions(names: Iterable[str]) -> list[str]:
    return sorted(set(names), key=version_key)


def strip_py(name: str) -> str:
    return name[:-3] if name.endswith(".py") else name


class AppPlan(NamedTuple):
    app: str
    to_apply: tuple[str, ...] = ()
    to_revert: tuple[str, ...] = ()  # newest first
    # Applied versions whose files are not in this image (a database ahead of the image).
    unknown_applied: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.to_apply and not self.to_revert


class Plan(NamedTuple):
    apps: tuple[AppPlan, ...] = ()

    @property
    def empty(self) -> bool:
        return all(p.empty for p in self.apps)


class Target(NamedTuple):
    app: str
    version: str  # exact name, or ZERO


def resolve_version(spec: str, known: Iterable[str]) -> str | None:
    """Match ``spec`` against ``known`` names: exact, without ``.py``, or by number (``3`` = ``0003_x``)."""
    names = list(dict.fromkeys(known))
    spec = strip_py(spec.strip())
    if spec in names:
        return spec
    if spec.isdigit():
        hits = [n for n in names if n.split("_", 1)[0].isdigit() and int(n.split("_", 1)[0]) == int(spec)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise ConfigError(f"target {spec!r} is ambiguous: {', '.join(sorted(hits))}")
    return None


def resolve_target(spec: str, versions_by_app: Mapping[str, Sequence[str]], *, allow_zero: bool) -> Target:
    """Parse ``app:version``, ``app.version`` or a bare version (searched in every selected app)."""
    spec = spec.strip()
    app: str | None = None
    version = spec
    if ":" in spec:
        app, version = spec.split(":", 1)
    elif "." in spec and spec.split(".", 1)[0] in versions_by_app:
        app, version = spec.split(".", 1)
    if app is not None and app not in versions_by_app:
        raise ConfigError(f"target app {app!r} is not among the selected apps ({', '.join(versions_by_app)})")
    candidates = [app] if app is not None else list(versions_by_app)
    if allow_zero and version == ZERO:
        if len(candidates) != 1:
            raise ConfigError("target 'zero' needs an app when several apps are selected: use app:zero")
        return Target(candidates[0], ZERO)
    hits = [(a, v) for a in candidates if (v := resolve_version(version, versions_by_app[a])) is not None]
    if not hits:
        raise ConfigError(f"target {spec!r} matches no migration of app(s) {', '.join(candidates)}")
    if len(hits) > 1:
        raise ConfigError(f"target {spec!r} is ambiguous across apps; write it as app:version")
    return Target(*hits[0])


def plan_upgrade(app: str, on_disk: Sequence[str], applied: Sequence[str], target: str | None) -> AppPlan:
    """Forward only: apply what is missing up to ``target`` (head when None); refuse to go back."""
    disk = sort_versions(on_disk)
    done = set(applied)
    unknown = tuple(v for v in applied if v not in set(disk))
    if target is None:
        return AppPlan(app, to_apply=tuple(v for v in disk if v not in done), unknown_applied=unknown)
    if target in disk:
        cut = disk.index(target) + 1
        ahead = [v for v in disk[cut:] if v in done]
        # Versions unknown to this image but applied after the target also lie above it.
        ahead += [v for v in applied[applied.index(target) + 1 :] if v in unknown] if target in done else []
        if ahead:
            raise DowngradeRefused(
                f"target {app}:{target} is below the applied version(s) {', '.join(ahead)}; "
                "upgrade never rolls back (use the downgrade command)"
            )
        return AppPlan(app, to_apply=tuple(v for v in disk[:cut] if v not in done), unknown_applied=unknown)
    if target in done:  # applied, but its file is not in this image
        later = applied[applied.index(target) + 1 :]
        if later:
            raise DowngradeRefused(
                f"target {app}:{target} is below the applied version(s) {', '.join(later)}; "
                "upgrade never rolls back"
            )
        return AppPlan(app, unknown_applied=unknown)
    raise ConfigError(f"target {app}:{target} is not a migration of this image")


def plan_downgrade(app: str, on_disk: Sequence[str], applied: Sequence[str], target: str) -> AppPlan:
    """Revert, newest first, every applied version above ``target`` (``zero``: all of them)."""
    disk = sort_versions(on_disk)
    unknown = tuple(v for v in applied if v not in set(disk))
    if target == ZERO:
        above = list(applied)
    elif target in applied:
        order = sort_versions(applied)
        above = order[order.index(target) + 1 :]
    elif target in disk:
        raise ConfigError(f"downgrade target {app}:{target} is not applied; use upgrade to move forward")
    else:
        raise ConfigError(f"downgrade target {app}:{target} is not a migration of this image")
    missing = [v for v in above if v not in disk]
    if missing:
        raise ConfigError(f"cannot revert {', '.join(missing)}: migration file(s) not in this image")
    return AppPlan(
        app, to_revert=tuple(sorted(above, key=version_key, reverse=True)), unknown_applied=unknown
    )


def plan_run(
    command: str,
    disk: Mapping[str, Sequence[str]],
    applied: Mapping[str, Sequence[str]],
    target: Target | None,
) -> Plan:
    """A target names one app; only that app moves. Without a target every selected app goes to head."""
    plans: list[AppPlan] = []
    for app in disk:
        app_applied = list(applied.get(app, ()))
        if command == "upgrade":
            if target is not None and target.app != app:
                plans.append(AppPlan(app))
                continue
            plans.append(plan_upgrade(app, disk[app], app_applied, target.version if target else None))
        elif command == "downgrade":
            assert target is not None
            if target.app != app:
                plans.append(AppPlan(app))
                continue
            plans.append(plan_downgrade(app, disk[app], app_applied, target.version))
        else:
            raise ValueError(f"no plan for command {command!r}")
    return Plan(tuple(plans))


def unfulfilled(command: str, plan: Plan, done: Iterable[str]) -> list[str]:
    """``app:version`` entries the plan promised (apply, or for downgrade revert) that did not happen."""
    finished = set(done)
    promised = [
        f"{p.app}:{v}" for p in plan.apps for v in (p.to_apply if command == "upgrade" else p.to_revert)
    ]
    return [entry for entry in promised if entry not in finished]
