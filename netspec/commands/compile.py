"""``netspec compile SPEC [--emit DIR] [--batch-size B] [--inference] [--input-shape C,H,W]``.

Compiles the spec (training graph: forward, generated backward and optimizer step, plus
the inference graph), loads the generated modules from the cache, and prints node counts,
the planned activation-arena size beside the unplanned sum, and the compile time.
``--emit DIR`` also writes the generated step sources and the formatted IR for reading.
``--batch-size`` < 1 is a usage error (exit 2, as for ``netspec train``).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ._common import positive_int
from .check import _shape


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("compile", help="compile a spec to cached numba code",
                              description="Compile a spec; print memory planning figures.")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--emit", metavar="DIR", help="write generated sources and IR listings here")
    p.add_argument("--batch-size", type=positive_int, default=None, help="default: train.batch_size or 64")
    p.add_argument("--inference", action="store_true", help="compile the inference graph only")
    p.add_argument("--input-shape", type=_shape, metavar="C,H,W", default=None)
    p.add_argument("--backend", choices=["cpu", "cuda"], default="cpu")
    return p


def _mb(n: int) -> str:
    return f"{n / 2**20:,.2f} MiB"


def run(args) -> int:
    import netspec
    from ._common import error_message, fail, known_errors
    if args.emit and Path(args.emit).exists() and not Path(args.emit).is_dir():
        return fail(f"netspec compile: cannot write to {args.emit!r}: it is a file, not a directory")
    try:
        spec = netspec.load(Path(args.spec))
        B = args.batch_size if args.batch_size is not None else int((spec.train or {}).get("batch_size") or 64)
        if B < 1:                           # --batch-size is checked by argparse (exit 2)
            return fail("netspec compile: train.batch_size must be at least 1")
        import compiler
        if args.emit:
            compiler.emit(spec, args.emit, batch_size=B, train=not args.inference,
                          input_shape=args.input_shape)
            print(f"wrote generated sources and IR to {args.emit}/")
        t0 = time.perf_counter()
        net = compiler.compile(spec, backend=args.backend, batch_size=B, train=not args.inference,
                               input_shape=args.input_shape)
        import numpy as np
        x = np.zeros((B, *net.input_shape), np.float32)
        net.forward(x)                      # first call triggers / loads the numba kernels
        dt = time.perf_counter() - t0
    except known_errors() as e:
        return fail(error_message("compile", e, writes=[args.emit] if args.emit else []))
    print(f"{spec.name}: compiled for batch size {B} in {dt:.2f} s (kernels cold or from cache)")
    mem = net.memory_report()
    for mode, g in net.graphs.items():
        kinds = {}
        for n in g.nodes:
            kinds[n.phase] = kinds.get(n.phase, 0) + 1
        print(f"  {mode:5} graph: {len(g.nodes)} nodes ({', '.join(f'{v} {k}' for k, v in sorted(kinds.items()))}); "
              f"activation arena planned {_mb(mem[mode]['planned_bytes'])} "
              f"vs unplanned {_mb(mem[mode]['unplanned_bytes'])}")
    print(f"  parameters: {_mb(mem['param_bytes'])}")
    for mode, (path, _, _) in net.sources.items():
        print(f"  {mode} step module: {path}")
    return 0
