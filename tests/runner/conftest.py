"""Run the runner the way a Job does: a real subprocess, env-only credentials, a report file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dbmigrate_runner.report import Report, decode
from localcluster.postgres import PostgresServer

REPO = Path(__file__).resolve().parents[2]
SHOP = REPO / "examples" / "shop"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
RUNNER = Path(sys.executable).parent / "dbmigrate-runner"
# Test-only wrapper that injects faults (see its docstring); the product has no test hooks.
WITH_FAULTS = Path(__file__).resolve().parent / "faults" / "runner_with_faults.py"

SHOP_VERSIONS = {
    "aerich": [
        p.stem
        for p in sorted(
            (SHOP / "migrations" / "models").glob("*.py"), key=lambda p: int(p.stem.split("_")[0])
        )
    ],
    "tortoise": sorted(p.stem for p in (SHOP / "shop" / "migrations").glob("0*.py")),
}
SHOP_TABLE = {"aerich": "aerich", "tortoise": "tortoise_migrations"}


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str
    report_text: str

    @property
    def report(self) -> Report:
        return decode(self.report_text)

    def logs(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [rec for rec in self.logs() if rec.get("event") == name]


def runner_env(database_url: str | None, report: Path, **extra: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DBMIGRATE_REPORT_PATH": str(report),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    env.update(extra)
    return env


def start(
    args: list[str],
    env: dict[str, str],
    cwd: Path,
    python_flags: tuple[str, ...] = (),
    faults: bool = False,
) -> subprocess.Popen[str]:
    if faults:
        cmd = [sys.executable, str(WITH_FAULTS), *args]
    elif python_flags:
        cmd = [sys.executable, *python_flags, "-m", "dbmigrate_runner", *args]
    else:
        cmd = [str(RUNNER), *args]
    return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str], report: Path, secret: str, timeout: float = 120) -> Result:
    stdout, stderr = proc.communicate(timeout=timeout)
    text = report.read_text() if report.exists() else ""
    result = Result(proc.returncode, stdout, stderr, text)
    # Central guarantee, checked on every run of every test: no password in any output.
    for where, value in (("stdout", stdout), ("stderr", stderr), ("report", text)):
        assert secret not in value, f"password leaked in {where}"
    return result


def wait_for_event(proc: subprocess.Popen[str], event: str, seen: list[str], limit: float = 60) -> None:
    """Read the runner's JSON log lines (kept in ``seen``) until one has ``event``."""
    assert proc.stdout is not None
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, f"runner ended before {event}: {''.join(seen)}"
        seen.append(line)
        if f'"event": "{event}"' in line:
            return
    raise AssertionError(f"no {event} within {limit}s")


@dataclass
class Runner:
    """Runs ``dbmigrate-runner`` against one database with one project directory."""

    postgres: PostgresServer
    database: str
    cwd: Path
    tmp: Path
    tool: str
    _n: int = 0

    def report_path(self) -> Path:
        self._n += 1
        return self.tmp / f"report-{self._n}.json"

    def env(self, report: Path, **extra: str) -> dict[str, str]:
        return runner_env(self.postgres.url(self.database), report, DBMIGRATE_TOOL=self.tool, **extra)

    def start(self, *args: str, faults: bool = False, **extra: str) -> tuple[subprocess.Popen[str], Path]:
        report = self.report_path()
        return start(list(args), self.env(report, **extra), self.cwd, faults=faults), report

    def __call__(self, *args: str, faults: bool = False, **extra: str) -> Result:
        proc, report = self.start(*args, faults=faults, **extra)
        return finish(proc, report, self.postgres.password)

    def applied(self) -> list[str]:
        """Tracking-table rows (names as stored), oldest first."""
        if self.tool == "aerich":
            sql = "SELECT version FROM aerich ORDER BY id"
        else:
            sql = "SELECT name FROM tortoise_migrations ORDER BY applied_at, id"
        if self.postgres.psql(self.database, f"SELECT to_regclass('{SHOP_TABLE[self.tool]}') IS NULL") == "t":
            return []
        out = self.postgres.psql(self.database, sql)
        return [v.removesuffix(".py") for v in out.splitlines() if v]

    def columns(self, table: str) -> list[str]:
        out = self.postgres.psql(
            self.database,
            "SELECT column_name FROM information_schema.columns "
            f"WHERE table_name = '{table}' ORDER BY ordinal_position",
        )
        return out.splitlines()

    def tables(self) -> list[str]:
        out = self.postgres.psql(
            self.database, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        )
        return out.splitlines()


@pytest.fixture(params=["aerich", "tortoise"])
def tool(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def shop(postgres: PostgresServer, database: str, tmp_path: Path, tool: str) -> Runner:
    """The example app as shipped (read-only use)."""
    return Runner(postgres, database, SHOP, tmp_path, tool)


def copy_shop(dst: Path) -> Path:
    shutil.copytree(SHOP, dst, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


@pytest.fixture
def shop_copy(postgres: PostgresServer, database: str, tmp_path: Path, tool: str) -> Runner:
    """A private copy of the example app, for tests that add migration files."""
    return Runner(postgres, database, copy_shop(tmp_path / "shop"), tmp_path, tool)
