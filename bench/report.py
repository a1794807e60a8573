"""Output of a bench run: the console table, the JSON file, and the generated blocks of docs/benchmarks.md.

Each figure owns one block in the doc, between ``<!-- bench:<name>:begin -->`` and
``<!-- bench:<name>:end -->``; recording a run replaces only the blocks of the figures it ran, so
the hand-written analysis around them stays.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from bench.core import FigureResult, Row


def _fmt(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "%":
        return f"{value:.1f} %"
    return f"{value:.3g} {unit}".strip()


def _row_cells(row: Row) -> list[str]:
    s = row.stat
    cpu = _fmt(row.cpu.median, row.unit) if row.cpu else ""
    return [
        row.label,
        _fmt(s.median, row.unit),
        _fmt(s.p99, row.unit),
        f"{_fmt(s.min, row.unit)} – {_fmt(s.max, row.unit)}",
        cpu,
        str(s.n),
    ]


ROW_HEAD = ["quantity", "median", "p99", "min – max", "CPU (median)", "n"]
RATIO_HEAD = ["ratio (same run) or figure", "value", "target", "met"]


def _ratio_cells(fig: FigureResult) -> list[list[str]]:
    out = []
    for r in fig.ratios:
        met = {None: "", True: "yes", False: "**MISSED**"}[r.met]
        out.append([r.label, f"{r.value:.3g}", "" if r.limit is None else f"≤ {r.limit:g}", met])
    return out


def console_table(fig: FigureResult) -> str:
    def table(head: list[str], rows: list[list[str]]) -> list[str]:
        widths = [max(len(c) for c in col) for col in zip(head, *rows, strict=True)]

        def line(cells: list[str]) -> str:
            return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

        return [line(head), line(["-" * w for w in widths]), *(line(r) for r in rows)]

    lines = [f"== {fig.name}: {fig.title}"]
    lines += table(ROW_HEAD, [_row_cells(r) for r in fig.rows])
    if fig.ratios:
        lines.append("")
        lines += table(RATIO_HEAD, [[c.replace("**", "") for c in r] for r in _ratio_cells(fig)])
    lines += [f"  note: {n}" for n in fig.notes]
    return "\n".join(lines)


def markdown_block(fig: FigureResult, run: dict[str, Any]) -> str:
    def table(head: list[str], rows: list[list[str]]) -> list[str]:
        return [
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
            *("| " + " | ".join(r) + " |" for r in rows),
        ]

    m = run["machine"]
    lines = [
        f"_Recorded {run['started_at']}{' (--quick)' if run['quick'] else ''}: {m['nproc']} CPUs "
        f"({m['cpu_model']}), {m['memory_gib']} GiB, Python {m['python']}, PostgreSQL {m['postgresql']}; "
        f"load average at start {run['load_before']['loadavg'][0]}, "
        f"at end {run['load_after']['loadavg'][0]}._",
        "",
        *table(ROW_HEAD, [_row_cells(r) for r in fig.rows]),
    ]
    if fig.ratios:
        lines += ["", *table(RATIO_HEAD, _ratio_cells(fig))]
    if fig.notes:
        lines += ["", *(f"- {n}" for n in fig.notes)]
    return "\n".join(lines)


def record_docs(doc: Path, figures: list[FigureResult], run: dict[str, Any]) -> None:
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    for fig in figures:
        begin, end = f"<!-- bench:{fig.name}:begin -->", f"<!-- bench:{fig.name}:end -->"
        block = f"{begin}\n{markdown_block(fig, run)}\n{end}"
        pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
        found = pattern.search(text)
        if found:
            text = text[: found.start()] + block + text[found.end() :]
        else:
            text = text.rstrip("\n") + f"\n\n## {fig.name}: {fig.title}\n\n{block}\n"
    doc.write_text(text if text.endswith("\n") else text + "\n")


def write_json(directory: Path, run: dict[str, Any], figures: list[FigureResult]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = run["started_at"].replace(":", "").replace("-", "")
    path = directory / f"{stamp}.json"
    data = {**run, "figures": {f.name: f.to_json() for f in figures}}
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path
