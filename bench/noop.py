"""Figure 1: the cost of a deploy when the database is already at head.

Every pod start with an init container, and every operator-run Job after a no-change sync, pays
this. Measured as fresh processes against the example shop app (examples/shop), in rotating order
within each repetition so that load drift on the shared machine hits every command alike:

* runner (aerich / tortoise): ``dbmigrate-runner upgrade`` in a fresh process;
* (a) ``aerich upgrade`` (its CLI);
* (b) the seeds' init-container entrypoint, bench/baselines/init_container.sh;
* (c) ``tortoise migrate`` (tortoise-orm's own CLI, the ``tortoise`` console script);
* runner (alembic) and (d) ``alembic upgrade head`` (Alembic's CLI), on a copy of
  examples/alembic-shop whose alembic.ini names the bench database;
* the interpreter floor, ``python -c pass``, for scale;
* the floor of a no-op decision, ``floor (asyncpg, one row)``: a fresh Python process importing
  asyncpg, connecting and reading one row of the tracking table. The runner (aerich) aims at
  ≤ 1.2 × this floor (issue 19);
* the same floor with the cyclic GC paused while it imports, as the runner's console script loads
  (dbmigrate_runner/startup.py): not a target, it shows how much of the runner's lead over the
  floor is that one difference.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
from pathlib import Path

from bench.context import Context
from bench.core import REPO, VENV_BIN, FigureResult, Sample, run_timed

SHOP = REPO / "examples" / "shop"
ALEMBIC_SHOP = REPO / "examples" / "alembic-shop"
BASELINES = Path(__file__).resolve().parent / "baselines"
# What no runner can go below: import asyncpg, connect, read one row of the aerich table.
FLOOR = (
    "import asyncio, os, asyncpg\n"
    "async def main():\n"
    "    conn = await asyncpg.connect(os.environ['DATABASE_URL'])\n"
    "    await conn.fetchrow('SELECT version FROM aerich ORDER BY id DESC LIMIT 1')\n"
    "    await conn.close()\n"
    "asyncio.run(main())\n"
)
FLOOR_LABEL = "floor (asyncpg, one row)"
# The same floor loading its modules as the runner's console script does (dbmigrate_runner/startup.py:
# cyclic GC paused while importing, then frozen): what is left of the runner's cost once that
# difference is taken away. Not a target, shown so the ratio above is read fairly.
FROZEN_FLOOR = FLOOR.replace(
    "import asyncio, os, asyncpg\n",
    "import gc\ngc.disable()\nimport asyncio, os, asyncpg\ngc.freeze()\ngc.enable()\n",
)
FROZEN_FLOOR_LABEL = "floor, GC paused while importing"


def _commands(ctx: Context, report: Path) -> dict[str, tuple[list[str], str]]:
    """label -> (argv, database key); the alembic ones run in the alembic-shop copy (see _cwd)."""
    runner = str(VENV_BIN / "dbmigrate-runner")
    return {
        "runner (aerich)": ([runner, "upgrade", "--tool", "aerich", "--report-path", str(report)], "aerich"),
        "aerich upgrade": ([str(VENV_BIN / "aerich"), "upgrade"], "aerich"),
        "init-container script": (["bash", str(BASELINES / "init_container.sh")], "aerich"),
        "runner (tortoise)": (
            [runner, "upgrade", "--tool", "tortoise", "--report-path", str(report)],
            "tortoise",
        ),
        "tortoise migrate": ([str(VENV_BIN / "tortoise"), "migrate"], "tortoise"),
        "runner (alembic)": (
            [runner, "upgrade", "--tool", "alembic", "--report-path", str(report)],
            "alembic",
        ),
        "alembic upgrade head": ([str(VENV_BIN / "alembic"), "upgrade", "head"], "alembic"),
        "python -c pass": ([str(VENV_BIN / "python"), "-c", "pass"], "aerich"),
        FLOOR_LABEL: ([str(VENV_BIN / "python"), "-c", FLOOR], "aerich"),
        FROZEN_FLOOR_LABEL: ([str(VENV_BIN / "python"), "-c", FROZEN_FLOOR], "aerich"),
    }


def _alembic_project(ctx: Context, database: str) -> Path:
    """examples/alembic-shop with sqlalchemy.url naming the bench database (Alembic's CLI reads it
    there; the runner sets it from DATABASE_URL itself)."""
    from sqlalchemy.engine import make_url

    project = ctx.scratch / "alembic-shop"
    shutil.copytree(ALEMBIC_SHOP, project, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    url = make_url(ctx.postgres.url(database)).set(drivername="postgresql+psycopg")
    ini = project / "alembic.ini"
    lines = [
        f"sqlalchemy.url = {url.render_as_string(hide_password=False).replace('%', '%%')}"
        if line.startswith("sqlalchemy.url")
        else line
        for line in ini.read_text().splitlines()
    ]
    ini.write_text("\n".join(lines) + "\n")
    return project


def _env(ctx: Context, database: str) -> dict[str, str]:
    pg = ctx.postgres
    return ctx.base_env() | {
        # As in the migrations image: the app directory on PYTHONPATH, our venv's tools on PATH.
        "PYTHONPATH": str(SHOP),
        "PATH": os.pathsep.join([str(VENV_BIN), str(pg.bindir), ctx.base_env().get("PATH", "")]),
        "DATABASE_URL": pg.url(database),
        "DB_HOST": pg.host,
        "DB_PORT": str(pg.port),
        "DB_USER": pg.user,
        "DB_PASS": pg.password,
        "DB_NAME": database,
    }


def orm_imports(
    ctx: Context, database: str, report: Path, tool: str = "aerich", cwd: Path = SHOP
) -> dict[str, object]:
    """Run the no-op runner once under ``-X importtime``: which top-level packages it imported."""
    sample = run_timed(
        [
            str(VENV_BIN / "python"),
            "-X",
            "importtime",
            "-m",
            "dbmigrate_runner",
            "upgrade",
            "--tool",
            tool,
            "--report-path",
            str(report),
        ],
        env=_env(ctx, database),
        cwd=cwd,
    )
    cumulative: dict[str, int] = {}  # top-level imports only (nested ones are part of these)
    every: set[str] = set()
    for line in sample.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( +)(\S+)", line)
        if m:
            every.add(m.group(4).split(".")[0])
            if len(m.group(3)) == 1:
                cumulative[m.group(4)] = int(m.group(2))
    top = sorted(cumulative.items(), key=lambda kv: -kv[1])[:8]
    return {
        "imports_tortoise": "tortoise" in every,
        "imports_aerich": "aerich" in every,
        "imports_alembic": "alembic" in every,
        "imports_sqlalchemy": "sqlalchemy" in every,
        "top_level_imports_ms": {name: round(us / 1000, 1) for name, us in top},
    }


def compile_runner() -> None:
    """Byte-compile the runner package as the migrations image ships it (``UV_COMPILE_BYTECODE=1``,
    non-editable install): the timed runs set PYTHONDONTWRITEBYTECODE, so an editable checkout
    without ``__pycache__`` would compile every runner module on every run, which no Job does.
    The tools' own packages in the venv are compiled already (installed wheels)."""
    import compileall

    import dbmigrate_runner

    compileall.compile_dir(str(Path(dbmigrate_runner.__file__).parent), quiet=1)


def run(ctx: Context) -> FigureResult:
    reps = ctx.repetitions(full=7, quick=3)
    compile_runner()
    fig = FigureResult("noop", "No-op deploy (database already at head), fresh process each")
    pg = ctx.postgres
    databases = {tool: pg.create_database() for tool in ("aerich", "tortoise", "alembic")}
    report = ctx.scratch / "noop-report.json"
    commands = _commands(ctx, report)
    cwd = {"aerich": SHOP, "tortoise": SHOP, "alembic": _alembic_project(ctx, databases["alembic"])}
    # Bring the databases to head with the runner (untimed), then one warm-up run of each command.
    for tool, db in databases.items():
        run_timed(commands[f"runner ({tool})"][0], env=_env(ctx, db), cwd=cwd[tool])
    for argv, db in commands.values():
        run_timed(argv, env=_env(ctx, databases[db]), cwd=cwd[db])

    labels = list(commands)
    samples: dict[str, list[Sample]] = {label: [] for label in labels}
    in_process_ms: dict[str, list[float]] = {f"runner ({tool})": [] for tool in databases}
    for rep in range(reps):
        order = labels[rep % len(labels) :] + labels[: rep % len(labels)]
        for label in order:
            argv, db = commands[label]
            sample = run_timed(argv, env=_env(ctx, databases[db]), cwd=cwd[db])
            samples[label].append(sample)
            if label in in_process_ms:
                data = json.loads(report.read_text())
                if data["applied_count"] != 0 or data["outcome"] != "Succeeded":
                    raise RuntimeError(f"{label}: expected a no-op, got {data}")
                in_process_ms[label].append(data["duration_ms"] / 1000)

    for label in labels:
        fig.add(label, "s", [s.wall_s for s in samples[label]], cpu=[s.cpu_s for s in samples[label]])
    for label, values in in_process_ms.items():
        fig.add(f"{label}: report duration_ms", "s", values)
    # Interleaved repetitions: each ratio is the median of its per-repetition ratios (core.ratio).
    ratio = functools.partial(fig.ratio, paired=True)
    ratio("runner (aerich) / aerich upgrade", "runner (aerich)", "aerich upgrade", limit=0.5)
    ratio("runner (aerich) / init-container script", "runner (aerich)", "init-container script", limit=0.3)
    ratio("runner (tortoise) / tortoise migrate", "runner (tortoise)", "tortoise migrate")
    ratio(f"runner (aerich) / {FLOOR_LABEL}", "runner (aerich)", FLOOR_LABEL, limit=1.2)
    ratio(f"runner (tortoise) / {FLOOR_LABEL}", "runner (tortoise)", FLOOR_LABEL)
    ratio(f"runner (alembic) / {FLOOR_LABEL}", "runner (alembic)", FLOOR_LABEL)
    ratio(f"runner (aerich) / {FLOOR_LABEL}", "runner (aerich)", FLOOR_LABEL, limit=1.2, cpu=True)
    ratio(f"runner (aerich) / {FROZEN_FLOOR_LABEL}", "runner (aerich)", FROZEN_FLOOR_LABEL)
    ratio(f"runner (aerich) / {FROZEN_FLOOR_LABEL}", "runner (aerich)", FROZEN_FLOOR_LABEL, cpu=True)
    ratio("runner (aerich) / aerich upgrade", "runner (aerich)", "aerich upgrade", limit=0.5, cpu=True)
    ratio(
        "runner (aerich) / init-container script",
        "runner (aerich)",
        "init-container script",
        limit=0.3,
        cpu=True,
    )
    ratio("runner (tortoise) / tortoise migrate", "runner (tortoise)", "tortoise migrate", cpu=True)
    ratio("runner (alembic) / alembic upgrade head", "runner (alembic)", "alembic upgrade head", limit=0.5)
    ratio(
        "runner (alembic) / alembic upgrade head",
        "runner (alembic)",
        "alembic upgrade head",
        limit=0.5,
        cpu=True,
    )
    fig.extra["peak_rss_mb"] = {label: max(s.maxrss_mb for s in samples[label]) for label in labels}
    fig.extra["runner_imports"] = orm_imports(ctx, databases["aerich"], report)
    imports = fig.extra["runner_imports"]
    fig.notes.append(
        "runner no-op path imports tortoise: "
        f"{imports['imports_tortoise']}, aerich: {imports['imports_aerich']} (python -X importtime)"
    )
    alembic_imports = orm_imports(ctx, databases["alembic"], report, tool="alembic", cwd=cwd["alembic"])
    fig.extra["runner_imports_alembic"] = alembic_imports
    fig.notes.append(
        "runner (alembic) no-op path imports alembic: "
        f"{alembic_imports['imports_alembic']}, sqlalchemy: {alembic_imports['imports_sqlalchemy']}"
    )
    return fig
