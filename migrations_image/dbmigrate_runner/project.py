"""The user's project: its Tortoise config and its migration files, found without importing tortoise.

The config is an import path (``--config app.config.TORTOISE_ORM``) or, like each tool's own CLI,
``tortoise_orm`` from ``pyproject.toml``: aerich reads ``[tool.aerich]`` (falling back to
``[tool.tortoise]``), Tortoise's CLI reads ``[tool.tortoise]``; both fall back to ``$TORTOISE_ORM``.
"""

from __future__ import annotations

import copy
import importlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dbmigrate_runner.errors import ConfigError
from dbmigrate_runner.planning import sort_versions

AERICH_MODELS = "aerich.models"
DEFAULT_AERICH_LOCATION = "./migrations"


class Project:
    """A plain class, not a dataclass: this module is on the no-op path (runner.py says why)."""

    __slots__ = ("aerich_location", "config", "config_path", "pyproject", "root", "tool")

    def __init__(
        self,
        tool: str,
        root: Path,
        config_path: str,
        config: dict[str, Any],
        aerich_location: str = DEFAULT_AERICH_LOCATION,
        pyproject: dict[str, Any] | None = None,
    ) -> None:
        self.tool = tool
        self.root = root  # directory holding pyproject.toml; relative locations resolve against it
        self.config_path = config_path
        self.config = config
        self.aerich_location = aerich_location
        self.pyproject: dict[str, Any] = {} if pyproject is None else pyproject

    @property
    def app_labels(self) -> list[str]:
        return list(self.config.get("apps", {}))


def _read_pyproject(root: Path) -> dict[str, Any]:
    path = root / "pyproject.toml"
    if not path.is_file():
        return {}
    import tomllib  # here, not at the top: Alembic runs import this module and never read the file

    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None


def _tool_section(doc: Mapping[str, Any], tool: str) -> dict[str, Any]:
    sections = doc.get("tool", {})
    if tool == "aerich":
        return dict(sections.get("aerich") or sections.get("tortoise") or {})
    return dict(sections.get("tortoise") or {})


def _add_to_path(path: Path) -> None:
    resolved = str(path.resolve())
    if resolved not in sys.path:
        sys.path.insert(0, resolved)


def import_config(path: str) -> dict[str, Any]:
    """Import ``pkg.module.NAME`` (or ``pkg.module.Class.NAME``) and return the config as a dict."""
    parts = path.split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"config {path!r} is not an import path like 'app.config.TORTOISE_ORM'")
    value: Any = None
    last_error: ModuleNotFoundError | None = None
    for split in range(len(parts) - 1, 0, -1):
        module_name, attrs = ".".join(parts[:split]), parts[split:]
        try:
            value = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if missing != module_name and not module_name.startswith(missing + "."):
                # The module exists but imports something that does not: say so, do not guess further.
                raise ConfigError(f"config module {module_name!r} failed to import: {exc}") from None
            last_error = last_error or exc
            continue
        except Exception as exc:
            raise ConfigError(
                f"config module {module_name!r} failed to import: {type(exc).__name__}: {exc}"
            ) from None
        for attr in attrs:
            value = getattr(value, attr, None)
            if value is None and last_error is not None:
                raise ConfigError(f"config {path!r}: cannot import {last_error.name!r} ({last_error})")
            if value is None:
                raise ConfigError(f"config {path!r}: {module_name!r} has no attribute {'.'.join(attrs)!r}")
        break
    else:
        raise ConfigError(
            f"config {path!r}: cannot import {'.'.join(parts[:-1])!r} ({last_error}); "
            f"sys.path starts with {sys.path[:2]}"
        )
    if hasattr(value, "to_dict") and not isinstance(value, dict):  # tortoise.config.TortoiseConfig
        value = value.to_dict()
    if not isinstance(value, dict) or not isinstance(value.get("apps"), dict) or not value["apps"]:
        raise ConfigError(f"config {path!r} is not a Tortoise config with an 'apps' section")
    return copy.deepcopy(value)


def load_project(
    tool: str, root: Path, config_path: str | None, location: str | None, env: Mapping[str, str] | None = None
) -> Project:
    env = os.environ if env is None else env
    root = root.resolve()
    if not root.is_dir():
        raise ConfigError(f"project directory {root} does not exist")
    doc = _read_pyproject(root)
    section = _tool_section(doc, tool)
    config_path = config_path or section.get("tortoise_orm") or env.get("TORTOISE_ORM") or None
    if not config_path:
        raise ConfigError(
            f"no Tortoise config: pass --config (or DBMIGRATE_CONFIG), or set tortoise_orm in "
            f"{root / 'pyproject.toml'} [tool.{tool}]"
        )
    src = section.get("src_folder") or section.get("src") or "."
    _add_to_path(root / src)
    if root not in (root / src).resolve().parents and (root / src).resolve() != root:
        _add_to_path(root)
    config = import_config(config_path)
    return Project(
        tool=tool,
        root=root,
        config_path=config_path,
        config=config,
        aerich_location=location or section.get("location") or DEFAULT_AERICH_LOCATION,
        pyproject=doc,
    )


def aerich_dir(project: Project, app: str) -> Path:
    location = project.aerich_location
    path = Path(location.format(app=app)) if "{app}" in location else Path(location, app)
    return path if path.is_absolute() else project.root / path


def aerich_versions(directory: Path) -> list[str]:
    """Version files the way aerich picks them: ``<digits>_<anything>.py``."""
    if not directory.is_dir():
        return []
    names = [p.stem for p in directory.glob("*.py") if "_" in p.stem and p.stem.split("_", 1)[0].isdigit()]
    return sort_versions(names)


def tortoise_migrations_module(app_config: Mapping[str, Any]) -> str | None:
    """The app's ``migrations`` module, or the one Tortoise's CLI infers from its first models module."""
    if module := app_config.get("migrations"):
        return str(module)
    models = app_config.get("models") or []
    first = models if isinstance(models, str) else next((m for m in models if isinstance(m, str)), None)
    if not first:
        return None
    base = first[: -len(".models")] if first.endswith(".models") else first.rsplit(".", 1)[0]
    return f"{base}.migrations"


def tortoise_migrations_dir(module: str) -> Path | None:
    import importlib.util  # here: aerich runs never ask

    try:
        spec = importlib.util.find_spec(module)
    except (ModuleNotFoundError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def tortoise_versions(directory: Path | None) -> list[str]:
    """Migration modules the way tortoise's loader picks them: non-package, not starting with _ or ~."""
    if directory is None or not directory.is_dir():
        return []
    names = [p.stem for p in directory.glob("*.py") if p.stem[0] not in "_~"]
    return sort_versions(names)


def discover(project: Project, selected: tuple[str, ...]) -> dict[str, list[str]]:
    """On-disk versions per app; with no selection, every app that has migrations."""
    labels = project.app_labels
    unknown = [a for a in selected if a not in labels]
    if unknown:
        raise ConfigError(f"unknown app(s) {', '.join(unknown)}; the config has {', '.join(labels)}")
    found: dict[str, list[str]] = {}
    for app in selected or labels:
        if project.tool == "aerich":
            versions = aerich_versions(aerich_dir(project, app))
        else:
            module = tortoise_migrations_module(project.config["apps"][app])
            versions = tortoise_versions(tortoise_migrations_dir(module) if module else None)
        if versions or selected:
            found[app] = versions
    if not found:
        where = (
            f"under {project.root / project.aerich_location}"
            if project.tool == "aerich"
            else "in the apps' migrations packages"
        )
        raise ConfigError(f"no migrations found for app(s) {', '.join(selected or labels)} {where}")
    return found
