"""The optimizer update on the device: the same segment table and rules as
``compiler.optim.Optimizer`` (which this wraps for its configuration, segments and
hyper-parameters), kernels from templates/cuda_optim.py.j2.

``DeviceOptimizer(opt, ctx)`` builds, once: a chunk table (chunks of at most ``CHUNK``
elements of a segment, one block each), the max-norm row table, and the clipping scratch.
``plan(param, grad, state)`` returns the launch plan with the hyper-parameters as
*placeholders*; ``launch(seq, lr, step)`` fills the scalars of this step and launches
(the scalars travel by value, so changing lr costs no copy).
"""
from __future__ import annotations

import numpy as np

from compiler.optim import SLOTS

from .common import RBLOCK, Launch

CHUNK = 1 << 14


class DeviceOptimizer:
    def __init__(self, opt, ctx):
        self.opt = opt
        self.dtype = opt.dtype
        rows, mrows = [], []
        for _, a, b, lm, dec, row in opt.segments:
            for s in range(a, b, CHUNK):
                rows.append((s, min(b, s + CHUNK), lm, dec))
            if row > 0:
                mrows += [(r, row) for r in range(a, b, row)]
        self.n_chunks = len(rows)
        self.cstart = ctx.table(np.array([r[0] for r in rows] or [0], np.int64))
        self.cend = ctx.table(np.array([r[1] for r in rows] or [0], np.int64))
        self.clr = ctx.table(np.array([r[2] for r in rows] or [1.0], self.dtype))
        self.cdecay = ctx.table(np.array([1 if r[3] else 0 for r in rows] or [0], np.uint8))
        self.rstart = ctx.table(np.array([r[0] for r in mrows] or [0], np.int64))
        self.rlen = ctx.table(np.array([r[1] for r in mrows] or [0], np.int64))
        self.n_rows = len(mrows)
        self.gsc = ctx.table(np.ones(1, self.dtype))
        self.part = ctx.array((max(self.n_chunks, 1),), np.float64)
        self.norm = ctx.array((1,), np.float64)

    def kernels(self):
        from compiler.codegen.kernel_cache import load_kernels
        c = self.opt.kernel_config()
        return load_kernels("cuda_optim", rule=c["rule"], l2=c["l2"], l1=c["l1"], decoupled=c["decoupled"],
                            ftype=c["ftype"], rblock=RBLOCK)

    def plan(self, p, g, state) -> list:
        """Launches for one update; the update's scalar args are filled per step (index 9..)."""
        self.update_index = -1
        if self.n_chunks == 0:
            return []
        k = self.kernels()
        cfg = self.opt.cfg
        slots = SLOTS[cfg.rule]
        s0 = state[slots[0]] if len(slots) > 0 else p[:1]
        s1 = state[slots[1]] if len(slots) > 1 else p[:1]
        out = []
        if cfg.clip_grad_norm is not None:
            out.append(Launch(k.sumsq_part, (self.n_chunks,), (RBLOCK,), (g, self.cstart, self.cend, self.part)))
            out.append(Launch(k.clip_finish, (1,), (RBLOCK,), (self.part, float(cfg.clip_grad_norm), self.gsc,
                                                              self.norm)))
        t = self.dtype.type
        self.update_index = len(out)
        out.append(Launch(k.update, (self.n_chunks,), (RBLOCK,),
                          (p, g, s0, s1, self.cstart, self.cend, self.clr, self.cdecay, self.gsc)
                          + tuple(t(0) for _ in range(10))))
        if cfg.max_norm is not None and self.n_rows:
            out.append(Launch(k.maxnorm, (self.n_rows,), (RBLOCK,), (p, self.rstart, self.rlen,
                                                                     float(cfg.max_norm))))
        return out

    def scalars(self, lr, step) -> tuple:
        """(lr, wd, l1, b1, b2, eps, ibc1, sbc2, omb1, omb2) of this step, in the net dtype,
        from the CPU optimizer's own ``hyper`` (one source of truth for the arithmetic)."""
        h = self.opt.hyper(lr, step, 1.0)
        t = self.dtype.type
        return (t(h[0]), t(h[1]), t(h[2]), t(h[5]), t(h[6]), t(h[7]), t(h[8]), t(h[9]), t(h[10]), t(h[11]))

    def run(self, seq, scalars) -> None:
        """Launch a bound plan; the update launch gets this step's scalars."""
        u = self.update_index
        for i, (fn, args) in enumerate(seq):
            if i == u:
                fn(*args[:9], *scalars)
            else:
                fn(*args)
