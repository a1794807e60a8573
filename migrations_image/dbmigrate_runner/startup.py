"""The ``dbmigrate-runner`` console script's entry: load the runner with the cyclic GC paused.

Loading asyncio, asyncpg and the runner creates tens of thousands of objects that live as long as
the process (modules, classes, functions). CPython's cyclic collector walks them again and again
while they load (about 40 collections) and once more at exit, and finds nothing to free: about a
sixth of a no-op run's CPU time (figure 1 of docs/benchmarks.md). So the collector is paused while
they load; then they are frozen (``gc.freeze()``: moved out of every later collection, the exit's
included) and the collector runs as usual for the run itself, migrations and all.

Only the console script (and ``python -m dbmigrate_runner``) does this: the operator imports the
runner's report module as a library and keeps Python's defaults.
"""

from __future__ import annotations

import gc


def main() -> int:
    gc.disable()
    try:
        from dbmigrate_runner import cli, runner  # noqa: F401  (everything a no-op run imports)
    finally:
        gc.freeze()
        gc.enable()
    return cli.main()
