"""The CUDA op contract: launch *plans* over device arrays, bound once into pre-configured
launchers.

A CUDA op (``CudaOp``, registered in ``CUDA_OPS`` under the same name as the CPU op in
``compiler.ops.OPS``) keeps the CPU launcher signature -- ``forward(xs, y, saved, ws, attrs,
train, rng)`` and ``backward(xs, y, saved, dy, dxs, ws, attrs)`` -- but on numba-CUDA device
arrays.  Internally every op only *plans*: ``plan_forward(ctx, ...)`` / ``plan_backward(ctx,
...)`` return a list of steps, each one of

* ``Launch(kernel, grid, block, args)``  -- a ``@cuda.jit`` kernel and its arguments;
* ``Draw(dev, p)``                        -- ``rng.random`` into a pinned host buffer, copied
  to the device array ``dev`` (dropout masks: the same rng contract as the CPU ops, so CPU
  and CUDA runs draw identical numbers);
* ``HostStep(fn)``                       -- a host callable ``fn(rng)`` (used by the CPU
  fallback of ops without CUDA kernels, see ``HostFallback``).

``ctx`` decides what "an array" is: ``DeviceCtx`` allocates device memory (persistent
scratch such as split-K partial sums and small index tables, made once at bind time), and
``HostCtx`` uses numpy arrays so plans can be built without a GPU -- the tests type-check
every kernel a plan uses with ``numba.cuda.compile_ptx`` from the plan's own arguments.

``bind_plan(plan, stream)`` turns a plan into ``[(fn, args)]``: with a stream every launch is
a ``FastLaunch`` (arguments marshalled once with numba's own code; a call is only the driver
launch), else a pre-configured ``kernel[grid, block, stream]`` (DESIGN §5: ~24 µs a launch
instead of ~45 µs); ``run_seq(seq, rng)`` executes it, and ``draws_then_graph`` turns a
sequence of launches and rng draws into the draws plus one CUDA graph (``StepGraph``), which
is how ``CudaNet`` runs a step.  Scalars are passed as the net's float type (``ft(v)``) so
float32 kernels never see float64 arguments.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")
# The simulator runs every thread as a Python thread: keep blocks small there.
BLOCK = 32 if SIM else 256          # threads of a flat (grid-stride) launch
RBLOCK = 32 if SIM else 256         # threads of a reduction block (power of two)
TILE = 4 if SIM else 16             # GEMM tile edge (TILE*TILE threads a block)
MAX_BLOCKS = 2 if SIM else 8192    # grid-stride kernels never need more blocks
# Blocks a split reduction aims for (weight-gradient split-K, BatchNorm sums): 8 blocks of
# 256 threads on each of an H100's 132 SMs.
TARGET_BLOCKS = 16 if SIM else 1056


@dataclass
class Launch:
    kernel: Any
    grid: tuple
    block: tuple
    args: tuple


@dataclass
class Draw:
    dev: Any          # device array to fill with U[0, 1) in its dtype


@dataclass
class HostStep:
    fn: Callable      # fn(rng)


def grid1(n: int, block: int = BLOCK) -> tuple[tuple, tuple]:
    """(grid, block) for a grid-stride kernel over n items."""
    return (max(1, min(MAX_BLOCKS, -(-int(n) // block))),), (block,)


def gridx(n: int, block: int = BLOCK) -> tuple[tuple, tuple]:
    """(grid, block) with at least one thread per item (kernels that guard ``if i >= n``)."""
    return (max(1, -(-int(n) // block)),), (block,)


def flat(a):
    """A 1-D view of a C-contiguous (device or host) array."""
    return a.reshape(a.size) if a.ndim != 1 else a


def as_shape(a, shape):
    return a.reshape(*shape) if tuple(a.shape) != tuple(shape) else a


_TEMPLATES: dict = {}


def kernels(template: str, dtype) -> Any:
    """The rendered + imported CUDA kernel module ``<template>.py.j2`` for a float dtype."""
    key = (template, np.dtype(dtype).name)
    mod = _TEMPLATES.get(key)
    if mod is None:
        from compiler.codegen.kernel_cache import load_kernels
        mod = _TEMPLATES[key] = load_kernels(template, ftype=np.dtype(dtype).name, tile=TILE,
                                             rblock=RBLOCK)
    return mod


# --------------------------------------------------------------------------- contexts
class HostCtx:
    """Plans over numpy arrays (type-checking without a GPU)."""
    device = False

    def array(self, shape, dtype):
        return np.zeros(shape, dtype)

    def table(self, a):
        return np.ascontiguousarray(a)


class DeviceCtx:
    """Plans over device arrays; persistent scratch is device memory made once."""
    device = True

    def array(self, shape, dtype):
        from numba import cuda
        return cuda.to_device(np.zeros(shape, dtype))

    def table(self, a):
        from numba import cuda
        return cuda.to_device(np.ascontiguousarray(a))


_DUMMIES: dict = {}


def dummy(ctx, dtype, ndim=1):
    """A 1-element stand-in for an absent optional array (kernels never read it)."""
    key = (ctx.device, np.dtype(dtype).str, ndim)
    d = _DUMMIES.get(key)
    if d is None:
        d = _DUMMIES[key] = ctx.array((1,) * ndim, dtype)
    return d


# --------------------------------------------------------------------------- ops
class CudaOp:
    name = ""
    random = False

    def plan_forward(self, ctx, xs, y, saved, ws, attrs, train) -> list:
        raise NotImplementedError

    def plan_backward(self, ctx, xs, y, saved, dy, dxs, ws, attrs) -> list:
        raise NotImplementedError

    # the CPU launcher signature, on device arrays (plans made and run on the spot)
    def forward(self, xs, y, saved, ws, attrs, train, rng=None):
        run_seq(bind_plan(self.plan_forward(DeviceCtx(), xs, y, saved, ws, attrs, train), None), rng)

    def backward(self, xs, y, saved, dy, dxs, ws, attrs):
        run_seq(bind_plan(self.plan_backward(DeviceCtx(), xs, y, saved, dy, dxs, ws, attrs), None), None)


CUDA_OPS: dict[str, CudaOp] = {}


def register(cls):
    if cls.name in CUDA_OPS:
        raise RuntimeError(f"CUDA op {cls.name!r} registered twice")
    CUDA_OPS[cls.name] = cls()
    return cls


class HostFallback(CudaOp):
    """Runs the CPU op on host copies (one synchronisation per call).  Used only for the
    ops listed in ``compiler.ops.cuda.FALLBACK`` that have no CUDA kernels yet."""

    def __init__(self, name):
        self.name = name

    @property
    def cpu(self):
        from compiler.ops import OPS
        return OPS[self.name]

    @staticmethod
    def _mirror(arrs):
        return [None if a is None else np.zeros(a.shape, a.dtype) for a in arrs]

    def plan_forward(self, ctx, xs, y, saved, ws, attrs, train):
        keys_s, keys_w = sorted(saved), sorted(ws)
        dev_in = list(xs) + [saved[k] for k in keys_s]
        h_in, h_y, h_w = self._mirror(dev_in), self._mirror([y])[0], self._mirror([ws[k] for k in keys_w])
        cpu, n = self.cpu, len(xs)

        def fn(rng):
            for d, h in zip(dev_in, h_in):
                if d is not None:
                    d.copy_to_host(h)
            hs = dict(zip(keys_s, h_in[n:]))
            cpu.forward(h_in[:n], h_y, hs, dict(zip(keys_w, h_w)), attrs, train, rng)
            y.copy_to_device(h_y)
            for k, h in hs.items():
                saved[k].copy_to_device(h)
            for d, h in zip(xs, h_in[:n]):   # in-place buffer updates (none today)
                if d is not None:
                    d.copy_to_device(h)
        return [HostStep(fn)] if ctx.device else []

    def plan_backward(self, ctx, xs, y, saved, dy, dxs, ws, attrs):
        keys_s, keys_w = sorted(saved), sorted(ws)
        dev_in = list(xs) + [y, dy] + [saved[k] for k in keys_s]
        h_in, h_dx, h_w = self._mirror(dev_in), self._mirror(dxs), self._mirror([ws[k] for k in keys_w])
        cpu, n = self.cpu, len(xs)

        def fn(rng):
            for d, h in zip(dev_in, h_in):
                if d is not None:
                    d.copy_to_host(h)
            cpu.backward(h_in[:n], h_in[n], dict(zip(keys_s, h_in[n + 2:])), h_in[n + 1], h_dx,
                         dict(zip(keys_w, h_w)), attrs)
            for d, h in zip(dxs, h_dx):
                if d is not None:
                    d.copy_to_device(h)
        return [HostStep(fn)] if ctx.device else []


# --------------------------------------------------------------------------- binding
# Pre-marshalled launches (``FastLaunch``): on by default, NETSPEC_CUDA_FAST_LAUNCH=0 turns
# them off (every launch then goes through numba's dispatcher, as before).
FAST_LAUNCH = os.environ.get("NETSPEC_CUDA_FAST_LAUNCH", "1") not in ("", "0")


class FastLaunch:
    """One kernel launch with its arguments marshalled ONCE, at bind time.

    A launch through numba's dispatcher (``kernel[grid, block, stream](*args)``) types every
    argument, picks the overload and converts each device array into its (meminfo, parent,
    size, itemsize, pointer, shape, strides) fields on every call: ~60 µs of host time a
    launch measured on an H200 (ResNet-20 step: 280 launches, 17.5 ms of enqueueing for an
    18.6 ms step, so the GPU waited on Python).  A bound plan's arrays never change, so this
    does those steps once -- with numba's own code (``compile``, ``_prepare_args``), so the
    kernel and the argument layout are exactly the dispatcher's -- and a call is only the
    driver launch (``cuda.core.launch``).  Calling it ignores its arguments: the bound ones
    are used (``bind_plan`` keeps the dispatcher for launches whose arguments change)."""

    __slots__ = ("dispatcher", "griddim", "blockdim", "_go")

    def __init__(self, dispatcher, grid, block, stream, args):
        from cuda.core import LaunchConfig, launch
        kern = dispatcher.compile(tuple(dispatcher.typeof_pyval(a) for a in args))
        if kern.debug or getattr(kern, "cooperative", False) or getattr(kern, "extensions", None):
            raise NotImplementedError("debug, cooperative or extension kernels keep the dispatcher")
        kargs, retr = [], []
        for t, v in zip(kern.argument_types, args):
            kern._prepare_args(t, v, stream, retr, kargs)
        if retr:                                   # a host array would be copied per call
            raise NotImplementedError("host array argument")
        cfg = LaunchConfig(grid=tuple(grid), block=tuple(block), shmem_size=0)
        fn = kern._codelibrary.get_cufunc().kernel
        self.dispatcher, self.griddim, self.blockdim = dispatcher, tuple(grid), tuple(block)
        self._go = functools.partial(launch, stream, cfg, fn, *kargs)

    def __call__(self, *_bound_args):
        self._go()


def _launcher(s: "Launch", stream, fast: bool):
    if SIM:
        # the simulator's kernel[...] mutates and returns the kernel itself, so a
        # pre-configured launcher would take the last configuration: configure per call
        def cfg(*args, k=s.kernel, g=s.grid, b=s.block):
            return k[g, b, stream](*args) if stream is not None else k[g, b](*args)
        return cfg
    if fast and FAST_LAUNCH and stream is not None:
        try:
            return FastLaunch(s.kernel, s.grid, s.block, stream, s.args)
        except NotImplementedError:
            pass
    return s.kernel[s.grid, s.block, stream] if stream is not None else s.kernel[s.grid, s.block]


def bind_plan(plan: list, stream, dynamic=()) -> list:
    """Plan -> [(fn, args)]: kernels pre-configured once; args None means fn(rng).

    With a stream, launches are pre-marshalled ``FastLaunch``es, except the plan indices in
    ``dynamic`` (launches the caller will call with other arguments, e.g. the optimizer's
    per-step scalars), which keep numba's dispatcher."""
    from numba import cuda
    out = []
    for i, s in enumerate(plan):
        if isinstance(s, Launch):
            out.append((_launcher(s, stream, i not in dynamic), s.args))
        elif isinstance(s, Draw):
            out.append((_drawer(s.dev, stream), None))
        elif isinstance(s, HostStep):
            fn = s.fn

            def host(rng, fn=fn):
                if stream is not None:
                    stream.synchronize()
                else:
                    cuda.synchronize()
                fn(rng)
            out.append((host, None))
        else:
            raise TypeError(f"unknown plan step {s!r}")
    return out


def _drawer(dev, stream):
    """rng.random into a pinned buffer, then an async copy; the event keeps the next draw
    from overwriting the buffer before the copy has finished."""
    from numba import cuda
    host = cuda.pinned_array(dev.shape, dev.dtype)
    ev = cuda.event() if stream is not None else None
    state = {"pending": False}

    def draw(rng):
        if state["pending"]:
            ev.synchronize()
        rng.random(out=host, dtype=host.dtype)
        if stream is not None:
            dev.copy_to_device(host, stream=stream)
            ev.record(stream)
            state["pending"] = True
        else:
            dev.copy_to_device(host)
    draw.is_draw = True           # graphable: it may run before the step's graph
    return draw


# CUDA graphs of bound sequences (``StepGraph``): on by default, NETSPEC_CUDA_GRAPHS=0 turns
# them off.
GRAPHS = os.environ.get("NETSPEC_CUDA_GRAPHS", "1") not in ("", "0")


def graphable(seq: list) -> bool:
    """A bound sequence can run as one CUDA graph when every step is a pre-marshalled launch
    or an rng draw (no host steps, no dispatcher launches): the draws run first, then the
    graph of the launches (``draws_then_graph``)."""
    return any(isinstance(fn, FastLaunch) for fn, _ in seq) and all(
        isinstance(fn, FastLaunch) or getattr(fn, "is_draw", False) for fn, _ in seq)


def draws_then_graph(seq: list, stream):
    """(draw functions in plan order, StepGraph of the launches) of a ``graphable`` sequence.
    Moving a draw before the launches that preceded it is safe: its device array is written
    only by the draw's copy (enqueued on the same stream, so after the previous step's
    kernels) and read only by the launches after it in the plan; the rng sees the same
    draws in the same order."""
    draws = [fn for fn, _ in seq if getattr(fn, "is_draw", False)]
    return draws, StepGraph([(fn, a) for fn, a in seq if isinstance(fn, FastLaunch)], stream)


class StepGraph:
    """A bound sequence of ``FastLaunch``es captured once from ``stream`` into a CUDA graph
    and replayed by one ``cuGraphLaunch`` (LeNet-5's step is launch-bound: 30 launches at
    tens of µs of host time each).  Valid because a bound plan's arrays and scalars never
    change.  Capturing enqueues nothing: the caller launches the graph to run the step."""

    def __init__(self, seq: list, stream):
        from cuda.bindings import driver as drv
        self._drv, self._h, self._exec, self._graph = drv, stream.handle, None, None
        ok = drv.CUresult.CUDA_SUCCESS
        err, = drv.cuStreamBeginCapture(self._h, drv.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_RELAXED)
        if err != ok:
            raise RuntimeError(f"cuStreamBeginCapture: {err}")
        try:
            for fn, _ in seq:
                fn()
        finally:
            err, graph = drv.cuStreamEndCapture(self._h)   # always leave capture mode
        self._graph = graph
        if err != ok:
            raise RuntimeError(f"cuStreamEndCapture: {err}")
        err, gexec = drv.cuGraphInstantiate(graph, 0)
        if err != ok:
            raise RuntimeError(f"cuGraphInstantiate: {err}")
        self._exec, self._ok = gexec, ok
        self.launches = len(seq)

    def __call__(self) -> None:
        err, = self._drv.cuGraphLaunch(self._exec, self._h)
        if err != self._ok:
            raise RuntimeError(f"cuGraphLaunch: {err}")

    def __del__(self):
        try:
            if self._exec is not None:
                self._drv.cuGraphExecDestroy(self._exec)
            if self._graph is not None:
                self._drv.cuGraphDestroy(self._graph)
        except Exception:       # interpreter shutdown: the context may be gone already
            pass


def run_seq(seq: list, rng) -> None:
    for fn, args in seq:
        if args is None:
            fn(rng)
        else:
            fn(*args)
