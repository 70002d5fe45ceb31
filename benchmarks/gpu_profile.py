"""Where a CUDA training step spends its time: every launch of the bound step sequence timed
with CUDA events, grouped by kernel, next to the step's wall time (host launch overhead
included), its host enqueue time and the GPU's own time for the step (launches queued behind
a sleeping kernel, so they run back to back).  Needs a GPU.

Usage: ``python benchmarks/gpu_profile.py [NET[:B] ...]`` (default resnet20:128 lenet5:64).
"""
from __future__ import annotations

import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OPT = {"sgd": {"lr": 0.01, "momentum": 0.9}}
WARM, STEPS, REPS = 5, 30, 5      # warm-up steps, timed steps, repetitions of the per-launch timing


def _elapsed(a, b) -> float:
    """ms between two recorded events (the simulator's events have no timings: 0)."""
    try:
        return float(a.elapsed_time(b))
    except (AttributeError, NotImplementedError):
        return 0.0


def _hold_kernel():
    """A one-thread kernel that sleeps ~n ms (``cuda.nanosleep`` of 1 ms, n times)."""
    from numba import cuda

    @cuda.jit
    def hold(n):
        for _ in range(n):
            cuda.nanosleep(1000000)
    return hold


def _name(fn) -> str:
    d = getattr(fn, "dispatcher", None)
    if d is None:
        return getattr(fn, "__name__", type(fn).__name__)
    return getattr(getattr(d, "py_func", d), "__name__", str(d))


def profile(spec: str, B: int, top: int = 30) -> None:
    import compiler
    from numba import cuda

    from compiler.codegen.cuda import to_cuda
    net = to_cuda(compiler.compile(spec, backend="cuda", batch_size=B, seed=0, optimizer=OPT))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, *net.input_shape)).astype(np.float32)
    y = rng.integers(0, int(np.prod(net.output_shape)), B)
    net.lr = 0.01
    for _ in range(WARM):
        net.step(x, y, want_loss=False)
    net.synchronize()
    n = STEPS
    t0 = time.perf_counter()
    for _ in range(n):
        net.step(x, y, want_loss=False)
    t1 = time.perf_counter()
    net.synchronize()
    wall = (time.perf_counter() - t0) / n * 1e3
    host = (t1 - t0) / n * 1e3
    # The GPU's own time for a step: a sleeping kernel holds the stream while the whole step
    # is enqueued behind it, so the step's launches then run back to back (no host waits).
    from compiler.ops.cuda.common import SIM
    hold, busy = _hold_kernel(), [0.0]
    for _ in range(0 if SIM else 3):       # the simulator has no nanosleep
        hold[1, 1, net.stream](300)
        e0, e1 = cuda.event(), cuda.event()
        e0.record(net.stream)
        net.step(x, y, want_loss=False)
        e1.record(net.stream)
        net.synchronize()
        busy.append(_elapsed(e0, e1))
    busy = busy[1:] or busy
    seq, st = net._seq("train", "grads"), net.stream
    # every launch between two events (averaged over a few repetitions)
    reps, times = REPS, defaultdict(float)
    for _ in range(reps):
        evs = []
        for i, (fn, args) in enumerate(seq):
            e0, e1 = cuda.event(), cuda.event()
            e0.record(st)
            fn(net.rng) if args is None else fn(*args)
            e1.record(st)
            evs.append((i, e0, e1))
        e0, e1 = cuda.event(), cuda.event()
        e0.record(st)
        net._dopt.run(net._opt_seq, net._dopt.scalars(0.01, 1))
        e1.record(st)
        st.synchronize()
        for i, a, b in evs:
            times[i] += _elapsed(a, b) / reps
        times["optimizer"] += _elapsed(e0, e1) / reps
    gpu = sum(times.values())
    print(f"\n== {Path(spec).stem} B={B}: {wall:.2f} ms/step wall, host enqueue {host:.2f} ms/step, "
          f"GPU alone {min(busy):.2f} ms/step (queue held full), "
          f"sum of launch times {gpu:.2f} ms, launches {len(seq)} + {len(net._opt_seq)} (optimizer)")
    by_kernel = defaultdict(lambda: [0.0, 0])
    rows = []
    for i, ms in times.items():
        if i == "optimizer":
            rows.append((ms, "optimizer (all launches)", "", ""))
            continue
        fn = seq[i][0]
        nm = _name(fn)
        by_kernel[nm][0] += ms
        by_kernel[nm][1] += 1
        shapes = [tuple(a.shape) for a in (seq[i][1] or ()) if hasattr(a, "shape") and len(a.shape) > 1][:3]
        rows.append((ms, f"#{i} {nm}", f"grid {getattr(fn, 'griddim', '')} block {getattr(fn, 'blockdim', '')}",
                     str(shapes)))
    print("-- by kernel: total ms, launches")
    for nm, (ms, c) in sorted(by_kernel.items(), key=lambda kv: -kv[1][0]):
        print(f"   {nm:28s} {ms:8.3f} ms  {c:4d}")
    print(f"-- top {top} launches")
    for ms, nm, cfg, sh in sorted(rows, key=lambda r: -r[0])[:top]:
        print(f"   {ms:8.3f} ms  {nm:34s} {cfg:40s} {sh}")


def main(argv) -> int:
    global WARM, STEPS, REPS
    if "--quick" in argv:                  # one of each (for a check of this script in the simulator)
        argv = [a for a in argv if a != "--quick"]
        WARM, STEPS, REPS = 1, 1, 1
    for arg in argv or ["resnet20:128", "lenet5:64"]:
        name, _, b = arg.partition(":")
        spec = name if name.endswith((".yaml", ".yml")) else str(ROOT / "specs" / f"{name}.yaml")
        profile(spec, int(b or 64))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
