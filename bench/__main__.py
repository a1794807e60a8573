"""``python -m bench [FIGURE ...] [--quick] [--reps N] [--record/--no-record]`` (``make bench``).

Runs the selected figures (all by default), prints a table per figure, writes
``bench/results/<timestamp>.json`` and, for full runs (or with ``--record``), updates the figures'
blocks in docs/benchmarks.md. Never part of ``make test``: nothing here passes or fails on timings;
the exit code is non-zero only when a figure could not be measured at all.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench import applyn, cluster_figures, lifecycle, load_figures, locks, noop, presync
from bench.context import Context
from bench.core import REPO, FigureResult, load, machine
from bench.report import console_table, record_docs, write_json

FIGURES: dict[str, Callable[[Context], FigureResult]] = {
    "noop": noop.run,
    "applyn": applyn.run,
    "react": cluster_figures.react,
    "scale": cluster_figures.scale,
    "webhook": cluster_figures.webhook,
    "lifecycle": lifecycle.run,
    "memory": load_figures.memory,
    "react-loaded": load_figures.react_loaded,
    "noise": load_figures.noise,
    "soak": load_figures.soak,
    "locks": locks.run,
    "presync": presync.run,
}
# Figures on the real node (one per machine): only when named, under `flock /tmp/realnode.lock`.
REAL_NODE = {"presync"}


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so the operator, the control plane and PostgreSQL are stopped."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "figures",
        nargs="*",
        metavar="FIGURE",
        help=f"figures to run (default: all but {', '.join(REAL_NODE)}): {', '.join(FIGURES)}",
    )
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and smaller sizes")
    parser.add_argument("--reps", type=int, help="repetitions per figure (overrides the defaults)")
    parser.add_argument("--crs", type=int, help="scale figure: number of DatabaseMigrations")
    parser.add_argument("--resync", type=float, help="operator's DBMIGRATE_RESYNC_SECONDS (default 60)")
    parser.add_argument("--pace", type=float, help="react figure: seconds between two DatabaseMigrations")
    parser.add_argument("--soak-minutes", type=float, help="soak figure: duration (default 30, --quick 3)")
    parser.add_argument(
        "--soak-sample", type=float, help="soak figure: seconds between RSS samples (default 10)"
    )
    parser.add_argument("--noise-pods", type=int, help="noise figure: unrelated Pods (default 10,000)")
    parser.add_argument("--noise-jobs", type=int, help="noise figure: unrelated Jobs (default 2,000)")
    parser.add_argument("--keep-scratch", action="store_true", help="keep logs and projects for debugging")
    parser.add_argument("--results-dir", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument(
        "--record",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="update docs/benchmarks.md (default: yes, unless --quick or --reps)",
    )
    args = parser.parse_args(argv)
    unknown = [f for f in args.figures if f not in FIGURES]
    if unknown:
        parser.error(f"unknown figure(s) {', '.join(unknown)}; choose from {', '.join(FIGURES)}")
    selected = args.figures or [f for f in FIGURES if f not in REAL_NODE]
    record = args.record if args.record is not None else not (args.quick or args.reps)

    signal.signal(signal.SIGTERM, _interrupt)
    ctx = Context(
        quick=args.quick,
        reps=args.reps,
        options={
            "crs": args.crs,
            "react_pace": args.pace,
            "resync_seconds": args.resync,
            "keep_scratch": args.keep_scratch,
            "soak_minutes": args.soak_minutes,
            "soak_sample": args.soak_sample,
            "noise_pods": args.noise_pods,
            "noise_jobs": args.noise_jobs,
        },
    )
    run = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": args.quick,
        "argv": sys.argv[1:] if argv is None else argv,
        "machine": machine(),
        "load_before": load(),
    }
    results: list[FigureResult] = []
    failed: list[str] = []
    try:
        for name in selected:
            began = time.monotonic()
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)
            try:
                fig = FIGURES[name](ctx)
            except Exception:
                traceback.print_exc()
                failed.append(name)
                continue
            fig.extra["elapsed_s"] = round(time.monotonic() - began, 1)
            fig.extra["load_after"] = load()["loadavg"]
            results.append(fig)
            print(console_table(fig), flush=True)
            print(f"  ({fig.extra['elapsed_s']} s)\n", flush=True)
    finally:
        ctx.close()
    run["load_after"] = load()
    if results:
        path = write_json(args.results_dir, run, results)
        print(f"[bench] results: {path}", file=sys.stderr)
        if record:
            record_docs(args.doc, results, run)
            print(f"[bench] recorded in {args.doc}", file=sys.stderr)
    if failed:
        print(f"[bench] could not measure: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
