"""The memory guard's two numbers: what a compiled net will allocate (``memory_needed``:
parameters, gradients, optimizer state, activation arenas, I/O buffers, from the planned
graphs before anything is allocated) and what it may use (``memory_limit``:
``$NETSPEC_MEMORY_LIMIT`` or the memory available now).  ``compiler.compile`` refuses a net
whose need exceeds the limit with a CompileError naming both."""
from __future__ import annotations

import os

import numpy as np


def memory_limit() -> int:
    """Bytes a compiled net may use: ``$NETSPEC_MEMORY_LIMIT`` (e.g. ``512M``, ``2g``,
    ``1000000``) if set, else the memory available now (``MemAvailable`` of /proc/meminfo,
    capped by a cgroup v2 limit's headroom; sysconf's free pages where those are missing)."""
    env = os.environ.get("NETSPEC_MEMORY_LIMIT")
    if env:
        units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
        s = env.strip().lower()
        s = s[:-2] if s.endswith("ib") else s[:-1] if s.endswith("b") else s    # 2GiB, 2GB, 2G
        mult = units.get(s[-1:], 1)
        try:
            v = float(s[:-1] if s[-1:] in units else s) * mult
        except ValueError:
            v = float("nan")
        if not v > 0 or v == float("inf"):
            from .net import CompileError
            raise CompileError(f"NETSPEC_MEMORY_LIMIT={env!r} is not a size; write e.g. 512M or 2G")
        return int(v)
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            avail = 1 << 62
    try:   # a container's limit (cgroup v2) may be far below the machine's memory
        with open("/sys/fs/cgroup/memory.max") as f:
            mx = f.read().strip()
        if mx.isdigit():
            with open("/sys/fs/cgroup/memory.current") as f:
                avail = min(avail, max(0, int(mx) - int(f.read().strip())))
    except (OSError, ValueError):
        pass
    return avail


def memory_needed(report, graphs: dict, train: bool, opt_cfg: dict, dtype) -> dict:
    """Bytes the compiled net will allocate, by kind, before anything big is allocated:
    ``params`` (learnable tensors), ``buffers`` (BatchNorm statistics), ``grads`` and
    ``optimizer`` state (train only: one arena per slot of the optimizer's rule, e.g. 2 for
    Adam, 0 for plain SGD; L-BFGS adds its float64 history), ``activations`` (every graph's
    planned arena: activations, their gradients, saved tensors and kernel workspace) and
    ``other`` (graph inputs/targets and integer saved tensors, which live outside the
    arena). ``total`` is their sum."""
    from .codegen.cpu import tensor_table
    isz = np.dtype(dtype).itemsize
    n_param = n_buf = 0
    for L in report.layers:
        for _, ps in L.param_specs:
            n = int(np.prod(ps.shape)) if ps.shape else 1
            if ps.kind == "param":
                n_param += n
            else:
                n_buf += n
    out = {"params": n_param * isz, "buffers": n_buf * isz, "grads": 0, "optimizer": 0,
           "activations": 0, "other": 0}
    if train:
        from .optim import SLOTS, resolve_config
        cfg = resolve_config(opt_cfg)
        out["grads"] = n_param * isz
        out["optimizer"] = len(SLOTS[cfg.rule]) * n_param * isz
        if cfg.name == "lbfgs":
            out["optimizer"] += 2 * int(cfg.hyper.get("history", 10)) * n_param * 8
    item = {"float": isz, "int32": 4, "int64": 8, "uint8": 1, "bool": 1}
    for g in graphs.values():
        plan = g.meta["plan"]
        out["activations"] += plan["arena_size"] * isz
        for s in tensor_table(g):
            v = g.values.get(s.key)
            if (v is not None and v.kind in ("param", "buffer", "pgrad")) or \
                    s.key in plan["offsets"] or s.key in plan["views"]:
                continue
            out["other"] += (int(np.prod(s.shape)) if s.shape else 1) * item.get(s.dtype, 8)
    out["total"] = sum(out.values())
    return out


def aligned_zeros(n: int, dtype, align: int = 64) -> np.ndarray:
    """np.zeros(n, dtype) starting on an ``align``-byte boundary.  numpy's allocator returns
    addresses 16 bytes past one (glibc's header on mmap'd blocks), so the memory planner's
    16-element offsets (passes/plan_memory.py ALIGN) were never cache-line aligned and every
    64-byte vector access split two lines: the Winograd dW transform ran 0.38 instead of
    0.12 ms per 64 images when its scratch started 16 bytes off a line."""
    itemsize = np.dtype(dtype).itemsize
    buf = np.zeros(n + align // itemsize, dtype)
    k = (-buf.ctypes.data % align) // itemsize
    return buf[k:k + n]
