"""Thread-pool policy of compiled steps: BLAS runs single-threaded inside a step.

Measured here (DESIGN.md §5 and again on this machine): OpenBLAS's own threads fighting
numba's or other processes' made small GEMMs 10-200x slower (a 64x400·400x120 sgemm took
42 ms with 2 OpenBLAS threads on a busy 2-core machine, 0.21 ms with 1).  Every GEMM in a
ConvNet step is small or chunked, so a step pins BLAS to ``NETSPEC_BLAS_THREADS`` (default
1) for its duration and gets its parallelism from the kernels / chunk threads instead.
The limit is restored after the call (threadpoolctl, ~20 µs), so user code is unaffected.

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
    return _controller.limit(limits=n, user_api="blas")
