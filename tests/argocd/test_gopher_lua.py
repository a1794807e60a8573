"""The same health_test.yaml cases on gopher-lua, the Lua implementation Argo CD embeds.

tests/argocd/gopherlua/ is a tiny Go program that loads the libraries Argo CD loads for health
checks and runs the script; Go modules come from the module proxy (built once, then cached).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.argocd.test_health import CASES, CHECK_DIR

GO_DIR = Path(__file__).parent / "gopherlua"
HEALTH = CHECK_DIR / "health.lua"


@pytest.fixture(scope="module")
def gopherlua(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = shutil.which("go") or "/usr/local/go/bin/go"
    assert Path(go).exists(), "the Go toolchain is needed (it also builds the e2e cluster binaries)"
    binary = tmp_path_factory.mktemp("gopherlua") / "gopherlua"
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly", "CGO_ENABLED": "0"}
    done = subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=GO_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return binary


def _run(binary: Path, script: Path, obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), str(script)],
        input=json.dumps(obj),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("case", CASES, ids=[Path(c["inputPath"]).stem for c in CASES])
def test_health_test_yaml_case_on_gopher_lua(gopherlua: Path, case: dict[str, Any]) -> None:
    obj = yaml.safe_load((CHECK_DIR / case["inputPath"]).read_text())
    done = _run(gopherlua, HEALTH, obj)
    assert done.returncode == 0, done.stderr
    expected = {"status": case["healthStatus"]["status"], "message": case["healthStatus"].get("message", "")}
    assert json.loads(done.stdout) == expected


@pytest.mark.parametrize(
    "script", ['return {status = string.upper("healthy")}', 'local s = "Healthy"; return {status = s:sub(1)}']
)
def test_gopher_lua_has_no_string_library_either(gopherlua: Path, tmp_path: Path, script: str) -> None:
    """What the lupa harness forbids, Argo CD's Lua forbids too: the two sandboxes agree."""
    path = tmp_path / "probe.lua"
    path.write_text(script)
    done = _run(gopherlua, path, {})
    assert done.returncode != 0
    assert "attempt to index a non-table object" in done.stderr
