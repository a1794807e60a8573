"""Figure 11: the app's query latency while a migration waits behind a long transaction.

A table ``item`` with rows; a steady reader (``SELECT count(*)``) and writer (``INSERT``) on it,
each on its own connection, a query every 20 ms; a long transaction that read the table (ACCESS
SHARE, as a report or an idle ``psql`` would) stays open for ``HOLD_S``; one second into it, a
migration adding a nullable column (ACCESS EXCLUSIVE) starts: plain ``aerich upgrade`` vs the
runner (``lock_timeout`` 1 s here, the default is 3 s). Latencies of the app's queries are recorded
from the migration's start until it ended (and at least until the long transaction ended). The
plain CLI's ``ALTER`` waits in the lock queue and every app query queues behind it until the long
transaction ends; the runner's gives way after the timeout, so the app waits at most about that.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import psycopg

from bench.context import Context
from bench.core import VENV_BIN, FigureResult, run_timed
from tests.support.migrations_gen import generate

HOLD_S = 10.0
TIMEOUT = "1s"
PACE_S = 0.02
ALTER = 'ALTER TABLE "item" ADD COLUMN "note" TEXT;'


class _App(threading.Thread):
    """One steady client: runs ``sql`` every PACE_S, keeps (start, seconds) of each query."""

    def __init__(self, url: str, sql: str) -> None:
        super().__init__(daemon=True)
        self.url, self.sql = url, sql
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.url, autocommit=True, prepare_threshold=None) as conn:
                while not self.stop.is_set():
                    t0 = time.monotonic()
                    conn.execute(self.sql)
                    self.samples.append((t0, time.monotonic() - t0))
                    time.sleep(PACE_S)
        except BaseException as exc:  # said by the figure, never lost in a dead thread
            self.error = exc


def _project(root: Path) -> list[str]:
    project = generate(root, 2, "aerich")
    second = project.root / "migrations" / "models" / f"{project.versions[1]}.py"
    text = second.read_text()
    second.write_text(
        text.replace('CREATE TABLE "gen_1" ("id" SERIAL PRIMARY KEY);', ALTER).replace(
            'DROP TABLE "gen_1";', 'ALTER TABLE "item" DROP COLUMN "note";'
        )
    )
    return project.versions


def _once(ctx: Context, root: Path, versions: list[str], who: str) -> tuple[list[float], float, float]:
    pg = ctx.postgres
    db = pg.create_database()
    env = ctx.base_env() | {
        "PYTHONPATH": str(root),
        "PATH": os.pathsep.join([str(VENV_BIN), ctx.base_env().get("PATH", "")]),
        "DATABASE_URL": pg.url(db),
        "DBMIGRATE_REPORT_PATH": str(ctx.scratch / "locks-report.json"),
        "DBMIGRATE_LOCKING_TIMEOUT": TIMEOUT,
    }
    runner = [str(VENV_BIN / "dbmigrate-runner"), "upgrade", "--tool", "aerich"]
    run_timed([*runner, "--target", versions[0]], env=env, cwd=root)
    pg.psql(db, "INSERT INTO item (name) SELECT 'row ' || g FROM generate_series(1, 1000) g")
    apps = [
        _App(pg.url(db), "SELECT count(*) FROM item"),
        _App(pg.url(db), "INSERT INTO item (name) VALUES ('x')"),
    ]
    for app in apps:
        app.start()
    time.sleep(1.0)
    with psycopg.connect(pg.url(db)) as holder:
        holder.execute("SELECT * FROM item LIMIT 1")  # the long transaction: ACCESS SHARE until commit
        released = threading.Timer(HOLD_S, holder.commit)
        released.start()
        time.sleep(1.0)
        started = time.monotonic()
        argv = runner if who == "runner" else [str(VENV_BIN / "aerich"), "upgrade"]
        sample = run_timed(argv, env=env, cwd=root)
        released.join()
    ended = max(time.monotonic(), started)
    time.sleep(0.5)
    for app in apps:
        app.stop.set()
    for app in apps:
        app.join(30)
        if app.error is not None:
            raise RuntimeError(f"{who}: the app's {app.sql!r} failed: {app.error}")
    columns = pg.psql(db, "SELECT column_name FROM information_schema.columns WHERE table_name = 'item'")
    if "note" not in columns.split():
        raise RuntimeError(f"{who}: the column was not added:\n{sample.stdout[-2000:]}")
    window = [s for app in apps for (t0, s) in app.samples if started <= t0 <= ended]
    pg.psql("postgres", f'DROP DATABASE "{db}"')
    return window, sample.wall_s, len(window) / max(ended - started, 1e-3)


def run(ctx: Context) -> FigureResult:
    fig = FigureResult("locks", "App query latency while a migration waits behind a long transaction")
    root = ctx.scratch / "locks"
    versions = _project(root)
    reps = ctx.repetitions(full=3, quick=1)
    latencies: dict[str, list[float]] = {"aerich upgrade": [], "runner": []}
    walls: dict[str, list[float]] = {"aerich upgrade": [], "runner": []}
    rates: dict[str, list[float]] = {"aerich upgrade": [], "runner": []}
    for rep in range(reps):
        order = ["runner", "aerich upgrade"]
        for who in order if rep % 2 == 0 else order[::-1]:
            window, wall, rate = _once(ctx, root, versions, "runner" if who == "runner" else "cli")
            latencies[who] += window
            walls[who].append(wall)
            rates[who].append(rate)
    for who in ("aerich upgrade", f"runner (lock_timeout {TIMEOUT})"):
        key = "runner" if who.startswith("runner") else who
        fig.add(f"{who}: app query latency", "s", latencies[key])
        fig.add(f"{who}: app queries done per second", "/s", rates[key])
        fig.add(f"{who}: migration wall clock", "s", walls[key])
    fig.notes.append(
        f"a long transaction holds ACCESS SHARE on the table for {HOLD_S:g} s; the migration (ADD COLUMN) "
        "starts 1 s into it; a reader and a writer query the table every 20 ms each; latencies of their "
        "queries started while the migration ran (a blocked client sends nothing else, so a stall "
        "shows in the max and in fewer queries per second more than in p99)"
    )
    return fig
