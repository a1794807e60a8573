"""Figure 2: applying N generated migrations to a fresh database, runner vs. the tool's own CLI.

Projects come from tests/support/migrations_gen.py (each migration creates one small table). Per
repetition both commands get their own fresh database, in alternating order. The runner's extra
work (advisory lock, tracking-table bootstrap and read-back, report) is the difference to the CLI;
its in-process share is also read from the runner's own log: ``duration_ms`` of the report minus
``duration_ms`` of ``migrations.done`` is everything outside applying the migrations.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from bench.context import Context
from bench.core import VENV_BIN, FigureResult, run_timed
from tests.support.migrations_gen import generate

TABLE = {"aerich": "aerich", "tortoise": "tortoise_migrations"}
AERICH_DDL = (
    'CREATE TABLE "aerich" ("id" SERIAL NOT NULL PRIMARY KEY, "version" VARCHAR(255) NOT NULL, '
    '"app" VARCHAR(100) NOT NULL, "content" JSONB NOT NULL)'
)
CLI = {"aerich": ["aerich", "upgrade"], "tortoise": ["tortoise", "migrate"]}


def _env(ctx: Context, root: Path, database: str) -> dict[str, str]:
    return ctx.base_env() | {
        "PYTHONPATH": str(root),
        "PATH": os.pathsep.join([str(VENV_BIN), ctx.base_env().get("PATH", "")]),
        "DATABASE_URL": ctx.postgres.url(database),
    }


def _runner_split(stdout: str, report: Path) -> tuple[float, float, float]:
    """(in-process total, applying migrations, taking the lock) in seconds, from the report and log."""
    total = json.loads(report.read_text())["duration_ms"] / 1000
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    events = {rec.get("event"): rec for rec in map(json.loads, lines)}
    return total, events["migrations.done"]["duration_ms"] / 1000, float(events["lock.acquired"]["waited_s"])


def run(ctx: Context) -> FigureResult:
    sizes = (1, 20) if ctx.quick else (1, 20, 200)
    fig = FigureResult("applyn", "Apply N generated migrations to a fresh database")
    pg = ctx.postgres
    report = ctx.scratch / "applyn-report.json"
    for tool in ("aerich", "tortoise"):
        for n in sizes:
            reps = ctx.repetitions(full=3 if n >= 200 else 5, quick=3)
            root = ctx.scratch / f"gen-{tool}-{n}"
            generate(root, n, tool)
            runner_argv = [
                str(VENV_BIN / "dbmigrate-runner"),
                "upgrade",
                "--tool",
                tool,
                "--report-path",
                str(report),
            ]
            cli_argv = [str(VENV_BIN / CLI[tool][0]), *CLI[tool][1:]]
            walls: dict[str, list[float]] = {"runner": [], "cli": []}
            cpus: dict[str, list[float]] = {"runner": [], "cli": []}
            outside: list[float] = []
            lock: list[float] = []
            share: list[float] = []
            for rep in range(reps):
                order = [("runner", runner_argv), ("cli", cli_argv)]
                for who, argv in order if rep % 2 == 0 else order[::-1]:
                    db = pg.create_database()
                    if tool == "aerich" and who == "cli":
                        pg.psql(db, AERICH_DDL)  # aerich's CLI cannot bootstrap it; untimed, as a favour
                    sample = run_timed(argv, env=_env(ctx, root, db), cwd=root)
                    rows = int(pg.psql(db, f"SELECT count(*) FROM {TABLE[tool]}"))
                    if rows != n:
                        raise RuntimeError(f"{tool} {who} N={n}: {rows} tracking rows, expected {n}")
                    walls[who].append(sample.wall_s)
                    cpus[who].append(sample.cpu_s)
                    if who == "runner":
                        total, migrating, locking = _runner_split(sample.stdout, report)
                        outside.append(total - migrating)
                        lock.append(locking)
                        share.append(100 * (total - migrating) / sample.wall_s)
                    pg.psql("postgres", f'DROP DATABASE "{db}"')
            label = f"{tool} N={n}"
            fig.add(f"{label}: runner", "s", walls["runner"], cpu=cpus["runner"])
            fig.add(f"{label}: {' '.join(CLI[tool])}", "s", walls["cli"], cpu=cpus["cli"])
            fig.add(f"{label}: runner outside migrations", "s", outside)
            fig.add(f"{label}: runner outside migrations, share of wall", "%", share)
            fig.add(f"{label}: runner taking the lock", "s", lock)
            for cpu in (False, True):
                fig.ratio(
                    f"{label}: runner / {' '.join(CLI[tool])}",
                    f"{label}: runner",
                    f"{label}: {' '.join(CLI[tool])}",
                    limit=1.05,
                    cpu=cpu,
                )
    fig.notes.append(
        "target: lock and report cost < 5 %, checked as runner ≤ 1.05 × the tool's CLI (medians of wall "
        "clock and of CPU seconds; on a loaded machine CPU is the steadier of the two); "
        "aerich's CLI gets its tracking table created beforehand, untimed (it cannot create it when the "
        "first migration does not); the runner bootstraps it within its timed run; "
        "'outside migrations' = connect + lock + read tracking table + plan + read-back + report, in-process"
    )
    return fig
