"""Each pending migration's file is hashed into the plan; one that cannot be read fails the plan."""

from __future__ import annotations

import hashlib
import types
from pathlib import Path

import pytest

from dbmigrate_runner import sources
from dbmigrate_runner.errors import ConfigError


def test_the_digest_is_the_files_bytes(tmp_path: Path) -> None:
    path = tmp_path / "0004_fill.py"
    path.write_bytes(b"async def fill(apps, schema_editor):\n    pass\n")
    expected = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert sources.of_file(path, "models:0004_fill") == expected
    module = types.ModuleType("fill")
    module.__file__ = str(path)
    assert sources.of_module(module, "models:0004_fill") == expected
    path.write_bytes(b"async def fill(apps, schema_editor):\n    pass  # \n")
    assert sources.of_file(path, "models:0004_fill") != expected


def test_a_migration_whose_file_cannot_be_read_fails_the_plan(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="models:0004_gone"):
        sources.of_file(tmp_path / "gone.py", "models:0004_gone")
    with pytest.raises(ConfigError, match="not loaded from a file"):
        sources.of_module(types.ModuleType("built_in"), "models:0005_x")
    with pytest.raises(ConfigError, match="is not loaded"):
        sources.of_module_name("no.such.module", "models:0006_x")
