"""Give memory the process freed back to the kernel: glibc's ``malloc_trim(0)``, now and then.

Why: CPython frees start-up's and each burst of reconciles' temporary objects, but glibc keeps the
freed pages of its heaps (and of one arena per thread of ``asyncio.to_thread``'s pool) mapped, so
RSS stays at the high-water mark (docs/benchmarks.md, figure 7: 192 → 115 MiB idle after one trim).
A trim is a few milliseconds. On a libc without ``malloc_trim`` (musl, macOS) this is a no-op.
The chart and the image also set ``MALLOC_ARENA_MAX=2``: fewer arenas, less memory kept per thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)


def _load_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


_TRIM = _load_trim()


def available() -> bool:
    """True where the C library has ``malloc_trim`` (glibc)."""
    return _TRIM is not None


def trim() -> bool:
    """Return free heap memory to the kernel now; True when the C library released some."""
    return bool(_TRIM(0)) if _TRIM is not None else False


def start_trimming(every: float) -> threading.Event | None:
    """Trim every ``every`` seconds (first after one period: start-up is over) in a daemon thread.

    malloc_trim locks each arena while it walks it, so it is safe beside the event loop and the
    thread pool. Returns the Event that stops the thread, or None when off (``every`` <= 0, or no
    ``malloc_trim`` here).
    """
    if every <= 0 or _TRIM is None:
        return None
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            try:
                trim()
            except Exception:  # never let housekeeping take the operator down
                logger.exception("malloc_trim failed")

    threading.Thread(target=loop, name="malloc-trim", daemon=True).start()
    return stop
