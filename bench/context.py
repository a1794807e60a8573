"""What every figure gets: repetition counts, a scratch directory, and lazily started servers.

PostgreSQL and the control plane start only when a selected figure asks for them, and each at most
once per bench run; both are torn down by :meth:`Context.close`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from localcluster.cluster import Cluster
    from localcluster.postgres import PostgresServer


@dataclass
class Context:
    quick: bool = False
    reps: int | None = None  # overrides each figure's default repetition count
    scratch: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="dbmigrate-bench-")))
    options: dict[str, Any] = field(default_factory=dict)
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _postgres: PostgresServer | None = None
    _cluster: Cluster | None = None

    def repetitions(self, full: int, quick: int) -> int:
        return self.reps if self.reps is not None else (quick if self.quick else full)

    @property
    def postgres(self) -> PostgresServer:
        if self._postgres is None:
            from localcluster.postgres import running_postgres

            print("[bench] starting a throwaway PostgreSQL", file=sys.stderr, flush=True)
            self._postgres = self._stack.enter_context(running_postgres())
        return self._postgres

    @property
    def cluster(self) -> Cluster:
        if self._cluster is None:
            from localcluster.cluster import running_cluster

            print("[bench] starting the local control plane", file=sys.stderr, flush=True)
            self._cluster = self._stack.enter_context(running_cluster(progress=sys.stderr))
        return self._cluster

    def base_env(self) -> dict[str, str]:
        """A clean environment for timed subprocesses: no inherited DATABASE_URL or PYTHON* surprises."""
        keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
        return {k: os.environ[k] for k in keep if k in os.environ} | {"PYTHONDONTWRITEBYTECODE": "1"}

    def on_close(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` at close, before the servers started earlier are stopped."""
        self._stack.callback(fn)

    def close(self) -> None:
        self._stack.close()
        if self.options.get("keep_scratch"):
            print(f"[bench] scratch kept in {self.scratch}", file=sys.stderr)
            return
        import shutil

        shutil.rmtree(self.scratch, ignore_errors=True)
