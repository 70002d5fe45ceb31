"""A tiny fixed thread pool for chunk-parallel op launchers (two workers on two cores).

Why threads and not numba ``prange`` (DESIGN.md §5, measured): the fastest conv schedule
on 2 cores was two Python threads, each running ``nogil`` serial numba kernels and
single-threaded BLAS on its own half of the batch; ``prange`` alternating with
multi-threaded BLAS stalled, and BLAS must never run inside ``prange``.  So a launcher
splits the batch into ``WORKERS`` contiguous parts and calls ``run(fn, parts)``: part 0
runs on the calling thread, the others on persistent daemon threads.  Kernels used this
way must be ``nogil=True`` and each part must write disjoint outputs / its own scratch.

``WORKERS`` = ``$NETSPEC_CPU_THREADS`` if set, else the cores this process may use
(capped at 2: the pool is sized for the 2-core machines the project targets; more parts
only pay off with more cores and more per-part scratch).  BLAS stays single-threaded
inside steps (compiler/threads.py), so the two pools never fight.
"""
from __future__ import annotations

import _thread
import os
import threading

_MAX = 2


def _workers() -> int:
    env = os.environ.get("NETSPEC_CPU_THREADS", "").strip()
    if env:
        return max(1, min(_MAX, int(env)))
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:     # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(_MAX, n))


WORKERS = _workers()


class _Worker:
    """One persistent thread that runs submitted callables one at a time.

    Hand-offs use raw locks as binary semaphores (held = nothing to do / not done yet): a
    ``threading.Semaphore`` is a Condition built in Python, and a 2-part run with no work
    took 22 us with them against 13 us with raw locks (measured; the rest is the GIL)."""

    def __init__(self):
        self._go = _thread.allocate_lock()
        self._go.acquire()
        self._done = _thread.allocate_lock()
        self._done.acquire()
        self._fn = None
        self._err = None
        t = threading.Thread(target=self._loop, name="netspec-worker", daemon=True)
        t.start()

    def _loop(self):
        while True:
            self._go.acquire()
            try:
                self._fn()
            except BaseException as e:   # re-raised in the caller by wait()
                self._err = e
            self._done.release()

    def submit(self, fn):
        self._fn, self._err = fn, None
        self._go.release()

    def wait(self):
        self._done.acquire()
        err, self._fn, self._err = self._err, None, None
        if err is not None:
            raise err


_pool: list[_Worker] = []
_lock = threading.Lock()


def _after_fork_in_child():
    """A forked child (e.g. a data-loading worker) inherits the list but not the threads."""
    global _lock
    _pool.clear()
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def split(n: int, parts: int) -> list[tuple[int, int]]:
    """[lo, hi) ranges splitting range(n) into ``parts`` near-equal non-empty pieces."""
    parts = max(1, min(parts, n))
    q, r = divmod(n, parts)
    out, lo = [], 0
    for i in range(parts):
        hi = lo + q + (1 if i < r else 0)
        out.append((lo, hi))
        lo = hi
    return out


def run(fn, nparts: int) -> None:
    """Calls fn(i) for i in range(nparts), part 0 on this thread, the others on workers.
    Falls back to a serial loop when called from a worker (no nesting) or nparts == 1."""
    if nparts <= 1 or threading.current_thread().name == "netspec-worker" or not _lock.acquire(blocking=False):
        for i in range(nparts):
            fn(i)
        return
    try:
        while len(_pool) < nparts - 1:
            _pool.append(_Worker())
        for i in range(1, nparts):
            _pool[i - 1].submit(lambda i=i: fn(i))
        err = None
        try:
            fn(0)
        except BaseException as e:
            err = e
        for i in range(1, nparts):
            try:
                _pool[i - 1].wait()
            except BaseException as e:
                err = err or e
        if err is not None:
            raise err
    finally:
        _lock.release()
