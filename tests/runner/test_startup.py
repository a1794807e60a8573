"""The console script loads the runner with the cyclic GC paused, and runs with it back on."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from importlib.metadata import entry_points

import pytest

from dbmigrate_runner import cli, startup


@pytest.fixture
def gc_restored() -> Iterator[None]:
    yield
    gc.unfreeze()
    gc.enable()


def test_the_run_itself_has_the_collector_on_and_the_startup_objects_frozen(
    monkeypatch: pytest.MonkeyPatch, gc_restored: None
) -> None:
    """A migration may create garbage in cycles for minutes: the collector must be on for it; what
    loading left behind is frozen, so no collection walks it again."""
    seen: dict[str, int] = {}

    def run() -> int:
        seen.update(enabled=gc.isenabled(), frozen=gc.get_freeze_count())
        return 7

    monkeypatch.setattr(cli, "main", run)
    assert startup.main() == 7
    assert seen["enabled"] is True
    assert seen["frozen"] > 0


def test_a_failed_import_leaves_the_collector_on(monkeypatch: pytest.MonkeyPatch, gc_restored: None) -> None:
    import builtins

    real_import = builtins.__import__

    def failing(name: str, *args: object, **kwargs: object) -> object:
        if name == "dbmigrate_runner" and args and "runner" in (args[2] or ()):  # type: ignore[operator]
            raise ImportError("broken image")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", failing)
    with pytest.raises(ImportError, match="broken image"):
        startup.main()
    assert gc.isenabled()


def test_the_installed_console_script_is_the_startup_entry() -> None:
    """What the image's ENTRYPOINT (and every Job) runs: the installed ``dbmigrate-runner`` script."""
    (script,) = entry_points(group="console_scripts", name="dbmigrate-runner")
    assert script.load() is startup.main
