"""Thread-pool policy of compiled steps: BLAS runs single-threaded inside a step.

Measured here (DESIGN.md §5 and again on this machine): OpenBLAS's own threads fighting
numba's or other processes' made small GEMMs 10-200x slower (a 64x400·400x120 sgemm took
42 ms with 2 OpenBLAS threads on a busy 2-core machine, 0.21 ms with 1).  Every GEMM in a
ConvNet step is small or chunked, so a step pins BLAS to ``NETSPEC_BLAS_THREADS`` (default
1) for its duration and gets its parallelism from the kernels / chunk threads instead.
The limit is restored after the call, so user code is unaffected: threadpoolctl finds the
BLAS libraries once, and each step then gets and sets their thread counts directly (4 µs a
step, against 14 µs for threadpoolctl's generic ``limit`` context, which re-queries every
library each time).

The limit is process-wide, so it also covers the BLAS calls that the conv kernels make from
the two worker threads of compiler/ops/parallel.py (each thread: its own batch half, its own
single-threaded sgemm).  Measured on the shared 2-core machine: concurrent 1-thread sgemms
from two threads scale only when a second core is actually free (with a neighbour's job on
one core, two threads ran no faster than one) -- compare ratios, not absolute times.
"""
from __future__ import annotations

import contextlib
import os

_controller = None


class _Pin:
    """Sets the BLAS libraries' thread counts to n on entry and restores them on exit."""

    def __init__(self, libs, n):
        self.libs, self.n, self.prev = libs, n, None

    def __enter__(self):
        self.prev = [lc.get_num_threads() for lc in self.libs]
        for lc, p in zip(self.libs, self.prev):
            if p != self.n:
                lc.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        for lc, p in zip(self.libs, self.prev):
            if p != self.n:
                lc.set_num_threads(p)
        return False


def blas_limit():
    """Context manager limiting BLAS threads for the duration of a step."""
    global _controller
    n = int(os.environ.get("NETSPEC_BLAS_THREADS", "1") or 1)
    if n <= 0:
        return contextlib.nullcontext()
    if _controller is None:
        try:
            import numpy  # noqa: F401  (BLAS libraries must be loaded to be found)
            import scipy.linalg  # noqa: F401
            from threadpoolctl import ThreadpoolController
            _controller = ThreadpoolController()
        except ImportError:
            _controller = False
    if not _controller:
        return contextlib.nullcontext()
    libs = [lc for lc in _controller.lib_controllers if lc.user_api == "blas"]
    if all(hasattr(lc, "get_num_threads") and hasattr(lc, "set_num_threads") for lc in libs):
        return _Pin(libs, n)
    return _controller.limit(limits=n, user_api="blas")
