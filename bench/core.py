"""Shared pieces of the benchmarks: timed subprocesses, statistics, results, the machine description.

Every figure is a list of rows (one per thing measured, each the median of repeated samples) plus
ratios taken inside the same run against a baseline, and targets checked against those ratios.
Nothing here asserts a timing: results are printed and recorded, never pass/fail.
"""

from __future__ import annotations

import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


@dataclass
class Sample:
    """One timed subprocess: wall clock, CPU of it and its reaped children, peak RSS."""

    wall_s: float
    cpu_s: float
    maxrss_mb: float
    rc: int
    stdout: str
    stderr: str


def run_timed(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    timeout: float = 600,
    check: bool = True,
) -> Sample:
    """Run ``cmd`` to completion; CPU and RSS come from wait4, so they include its children."""
    out_path = cwd / f".bench-out-{os.getpid()}"
    err_path = cwd / f".bench-err-{os.getpid()}"
    try:
        with out_path.open("w+b") as out, err_path.open("w+b") as err:
            t0 = time.perf_counter()
            proc = subprocess.Popen(list(cmd), env=dict(env), cwd=cwd, stdout=out, stderr=err)
            deadline = t0 + timeout
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() > deadline:
                    proc.kill()
                    pid, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.002)
            wall = time.perf_counter() - t0
            proc.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            sample = Sample(
                wall_s=wall,
                cpu_s=usage.ru_utime + usage.ru_stime,
                maxrss_mb=usage.ru_maxrss / 1024,
                rc=proc.returncode,
                stdout=out.read().decode(errors="replace"),
                stderr=err.read().decode(errors="replace"),
            )
    finally:
        out_path.unlink(missing_ok=True)
        err_path.unlink(missing_ok=True)
    if check and sample.rc != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} exited with {sample.rc}:\n{sample.stdout[-2000:]}\n{sample.stderr[-2000:]}"
        )
    return sample


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): with few samples p99 is simply the maximum."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no samples")
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[min(len(ordered), int(rank)) - 1]


@dataclass
class Stat:
    """Summary of repeated samples of one quantity."""

    median: float
    p99: float
    min: float
    max: float
    n: int
    samples: list[float]

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        vals = [float(v) for v in values]
        return cls(
            median=statistics.median(vals),
            p99=percentile(vals, 99),
            min=min(vals),
            max=max(vals),
            n=len(vals),
            samples=[round(v, 6) for v in vals],
        )


@dataclass
class Row:
    """One measured quantity of a figure."""

    label: str
    unit: str
    stat: Stat
    cpu: Stat | None = None  # CPU seconds, when the quantity is a process run


@dataclass
class Ratio:
    """``numerator / denominator`` of two rows' medians, measured in the same run."""

    label: str
    value: float
    limit: float | None = None  # the target: value must be <= limit

    @property
    def met(self) -> bool | None:
        return None if self.limit is None else self.value <= self.limit


@dataclass
class FigureResult:
    name: str
    title: str
    rows: list[Row] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self, label: str) -> Row:
        for r in self.rows:
            if r.label == label:
                return r
        raise KeyError(label)

    def add(self, label: str, unit: str, values: Sequence[float], cpu: Sequence[float] | None = None) -> Row:
        row = Row(label, unit, Stat.of(values), Stat.of(cpu) if cpu else None)
        self.rows.append(row)
        return row

    def ratio(
        self,
        label: str,
        num: str,
        den: str,
        limit: float | None = None,
        *,
        cpu: bool = False,
        paired: bool = False,
    ) -> Ratio:
        """Ratio of medians (wall clock, or CPU seconds with ``cpu``).

        ``paired``: the median of the per-repetition ratios instead, for figures whose rows are
        measured interleaved (sample i of each row in the same repetition). On a shared machine a
        short process's CPU time falls into distinct groups by the machine's state at the moment;
        a ratio of medians can pair one group's median with the other's, a per-repetition ratio
        compares neighbours."""
        n, d = self.row(num), self.row(den)
        a, b = (n.cpu, d.cpu) if cpu else (n.stat, d.stat)
        if a is None or b is None:
            raise ValueError(f"CPU ratio of rows without CPU samples: {label}")
        if paired:
            value = statistics.median(x / y for x, y in zip(a.samples, b.samples, strict=True))
        else:
            value = a.median / b.median
        r = Ratio(f"{label} (CPU)" if cpu else label, value, limit)
        self.ratios.append(r)
        return r

    def target(self, label: str, value: float, limit: float | None) -> Ratio:
        """A figure checked against an absolute target (or, with ``limit`` None, just reported)."""
        r = Ratio(label, value, limit)
        self.ratios.append(r)
        return r

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for r, d in zip(self.ratios, data["ratios"], strict=True):
            d["met"] = r.met
        return data


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine() -> dict[str, Any]:
    """What the numbers were measured on: they mean little without it."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if "model name" in line
        ),
        platform.processor() or "unknown",
    )
    mem_kb = next(
        (
            int(line.split()[1])
            for line in _read("/proc/meminfo").splitlines()
            if line.startswith("MemTotal:")
        ),
        0,
    )
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "cpu_model": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": postgres_version(),
    }


def postgres_version() -> str:
    try:
        from localcluster.postgres import find_bindir

        out = subprocess.run(
            [str(find_bindir() / "postgres"), "--version"], capture_output=True, text=True, check=True
        )
        found = re.search(r"\(PostgreSQL\) (\S+)", out.stdout)
        return found.group(1) if found else out.stdout.strip()
    except (RuntimeError, OSError, subprocess.CalledProcessError):
        return "not installed"


def load() -> dict[str, Any]:
    """Load average and the busiest other processes: the machine is shared, so say how busy it was."""
    one, five, fifteen = os.getloadavg()
    return {"loadavg": [round(one, 2), round(five, 2), round(fifteen, 2)]}


def self_cpu() -> float:
    """CPU seconds of this process and its reaped children so far."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime
