"""Elementwise and regularisation ops: add, concat, axpy, fill, dropout, stochastic_depth.

Also home of the small launcher helpers shared by the pointwise op files (``view``,
``empty``, ``opt``, ``use_parallel``, ``kernels``).

Kernel template: ``templates/elementwise.py.j2`` (no static config).  Plain copies and sums
(add, concat) use numpy ufuncs with ``out=`` -- no allocation, no compile, and as fast as a
loop for these memory-bound ops.
"""
from __future__ import annotations

import functools
import os

import numpy as np

from compiler.codegen.kernel_cache import load_kernels
from compiler.ops import parallel as _parallel
from compiler.ops.base import Op, register_op

# Elements from which the norm kernels use their parallel=True (prange over channels /
# groups / samples) variant.  OFF by default: on the shared 2-core machines, at load ~7,
# BatchNorm+ReLU train fwd/bwd on (128,16,32,32) took 2.6/4.0 ms serial vs 14.7/6.2 ms
# parallel, and on (64,6,28,28) 0.28/0.86 vs 0.15/0.25 ms -- prange wins only on idle
# cores, costs ~1 s of cold compile per kernel, and fights the project's two-thread nogil
# scheme (DESIGN.md section 5).  Opt in with NETSPEC_PAR_MIN=<elements>.
PAR_MIN = int(os.environ.get("NETSPEC_PAR_MIN", 1 << 62))

_EMPTY: dict = {}
SPLIT_MIN = 1 << 17   # elements from which memory-bound numpy passes split the batch over the workers


def _batch_parts(a):
    """Batch ranges for the worker threads (numpy releases the GIL in these ufunc loops)."""
    if a.size < SPLIT_MIN or a.shape[0] < 2:
        return [(0, a.shape[0])]
    return _parallel.split(a.shape[0], _parallel.WORKERS)


def empty(dtype, ndim: int = 1) -> np.ndarray:
    """A cached size-0 array standing for an absent optional array in a kernel call."""
    key = (np.dtype(dtype).str, ndim)
    a = _EMPTY.get(key)
    if a is None:
        a = _EMPTY[key] = np.zeros((0,) * ndim, dtype=dtype)
    return a


def view(a: np.ndarray, shape) -> np.ndarray:
    """``a.reshape(shape)`` that never copies (kernels write through these views)."""
    if not a.flags.c_contiguous:
        raise ValueError("netspec kernels need C-contiguous arrays")
    return a.reshape(shape)


def opt(a, shape, dtype, ndim: int | None = None) -> np.ndarray:
    """View of ``a`` with ``shape``, or a size-0 stand-in when ``a`` is None."""
    if a is None:
        return empty(dtype, len(shape) if ndim is None else ndim)
    return view(a, shape)


def use_parallel(n_elements: int, n_items: int = 2) -> bool:
    return n_elements >= PAR_MIN and n_items >= 2


@functools.lru_cache(maxsize=None)
def kernels(template: str, **config):
    """The rendered + imported kernel module (rendering once per process and config)."""
    return load_kernels(template, **config)


@register_op
class Add(Op):
    """y = act(x0 + x1 + ...) (n >= 2 inputs, same shape); attrs: act "none" | "relu" (fused
    by passes/fuse_activation.py: a residual block's add + ReLU in one pass).  Backward copies
    dy -- masked by y > 0 with act=relu -- to every needed dx."""
    name = "add"
    inputs = ("x0", "x1", "*")   # variadic: any number >= 2

    def out_shape(self, in_shapes, attrs):
        if len(in_shapes) < 2 or any(tuple(s) != tuple(in_shapes[0]) for s in in_shapes):
            raise ValueError(f"add needs >= 2 inputs of one shape, got {in_shapes}")
        return tuple(in_shapes[0])

    def ref_forward(self, xs, attrs, train=False, rng=None):
        y = xs[0].copy()
        for x in xs[1:]:
            y = y + x
        if attrs.get("act", "none") == "relu":
            y = np.maximum(y, 0)
        return y, {}

    def ref_backward(self, xs, y, saved, dy, attrs):
        g = dy * (y > 0) if attrs.get("act", "none") == "relu" else dy
        return [g.copy() for _ in xs]

    def forward(self, xs, y, saved, ws, attrs, train, rng=None):
        relu = attrs.get("act", "none") == "relu"
        k = kernels("elementwise") if relu else None

        def run(p):
            sl = slice(*parts[p])
            acc = xs[0][sl]
            if len(xs) > 2:        # y = x0 + ... + x[n-2]; the last add carries the ReLU
                np.add(xs[0][sl], xs[1][sl], out=y[sl])
                for x in xs[2:-1]:
                    np.add(y[sl], x[sl], out=y[sl])
                acc = y[sl]
            if relu:
                k.add_relu(acc.reshape(-1), xs[-1][sl].reshape(-1), y[sl].reshape(-1))
            else:
                np.add(acc, xs[-1][sl], out=y[sl])
        parts = _batch_parts(y)
        _parallel.run(run, len(parts))

    def backward(self, xs, y, saved, dy, dxs, ws, attrs):
        relu = attrs.get("act", "none") == "relu"
        k = kernels("elementwise") if relu else None
        need = [dx for dx in dxs if dx is not None]

        # the gradient that holds the (masked) dy: dy itself when autodiff aliased a dx to it
        src = dy if not relu or not need or any(dx is dy for dx in need) else need[0]

        def run(p):
            sl = slice(*parts[p])
            if relu and need:      # mask once (in place when src is dy), copy to the rest
                k.relu_mask(dy[sl].reshape(-1), y[sl].reshape(-1), src[sl].reshape(-1))
            for dx in need:
                if dx is not src:
                    np.copyto(dx[sl], src[sl])
        parts = _batch_parts(dy)
        _parallel.run(run, len(parts))


def _gate_subscripts(y_shape, g_shape) -> tuple[str, tuple]:
    """einsum "abcd,abcd->kept" summing the dims where the gate broadcasts, and the shape
    of the gate gradient viewed without them."""
    letters = "abcdefgh"[:len(y_shape)]
    kept = [i for i, (n, m) in enumerate(zip(y_shape, g_shape)) if m == n]
    return (f"{letters},{letters}->{''.join(letters[i] for i in kept)}",
            tuple(y_shape[i] for i in kept))


@register_op
class Mul(Op):
    """mul: y = x * g; g (same rank) broadcasts where its dims are 1 (a channel gate
    (N, C, 1, 1), a spatial map (N, 1, H, W)).  Backward dx = dy * g; dg = dy * x summed over
    g's broadcast dims (one einsum with out=, no temporaries)."""
    name = "mul"
    inputs = ("x", "g")

    def out_shape(self, in_shapes, attrs):
        x, g = (tuple(s) for s in in_shapes)
        if len(x) != len(g) or any(b not in (1, c) for c, b in zip(x, g)):
            raise ValueError(f"mul: {g} does not broadcast to {x}")
        return x

    def ref_forward(self, xs, attrs, train=False, rng=None):
        return xs[0] * xs[1], {}

    def ref_backward(self, xs, y, saved, dy, attrs):
        x, g = xs
        axes = tuple(i for i, (n, m) in enumerate(zip(x.shape, g.shape)) if m != n)
        return [dy * g, (dy * x).sum(axis=axes, keepdims=True)]

    def forward(self, xs, y, saved, ws, attrs, train, rng=None):
        x, g = xs
        parts = _batch_parts(y)
        gb = g.shape[0] > 1         # a gate broadcast over the batch is shared by every part
        _parallel.run(lambda p: np.multiply(x[slice(*parts[p])], g[slice(*parts[p])] if gb else g,
                                            out=y[slice(*parts[p])]), len(parts))

    def backward(self, xs, y, saved, dy, dxs, ws, attrs):
        x, g = xs
        dx, dg = dxs
        if dg is not None:        # first: dg reads dy, which dx may overwrite were they aliased
            if dg.shape == dy.shape:
                np.multiply(dy, x, out=dg)
            else:
                sub, kept = _gate_subscripts(dy.shape, dg.shape)
                np.einsum(sub, dy, x, out=dg.reshape(kept))
        if dx is not None:
            np.multiply(dy, g, out=dx)


@register_op
class Concat(Op):
    """Concatenation along axis 1 (channels / features).  Backward slices dy."""
    name = "concat"
    inputs = ("x0", "x1", "*")

    def out_shape(self, in_shapes, attrs):
        s0 = tuple(in_shapes[0])
        for s in in_shapes:
            if len(s) != len(s0) or s[0] != s0[0] or tuple(s[2:]) != s0[2:]:
                raise ValueError(f"concat: shapes differ off axis 1: {in_shapes}")
        return (s0[0], sum(s[1] for s in in_shapes)) + s0[2:]

    def ref_forward(self, xs, attrs, train=False, rng=None):
        return np.concatenate(xs, axis=1), {}

    def ref_backward(self, xs, y, saved, dy, attrs):
        out, off = [], 0
        for x in xs:
            out.append(dy[:, off:off + x.shape[1]].copy())
            off += x.shape[1]
        return out

    def forward(self, xs, y, saved, ws, attrs, train, rng=None):
        off = 0
        for x in xs:
            y[:, off:off + x.shape[1]] = x
            off += x.shape[1]

    def backward(self, xs, y, saved, dy, dxs, ws, attrs):
        off = 0
        for x, dx in zip(xs, dxs):
            if dx is not None:
                dx[...] = dy[:, off:off + x.shape[1]]
            off += x.shape[1]


@register_op
class Axpy(Op):
    """y = acc + a*x (attrs a, default 1.0): gradient accumulation at fan-out points.

    Meant to run in place (the compiler may pass ``y is acc``); inputs (acc, x) of one
    shape.  Backward: d acc = dy, d x = a*dy."""
    name = "axpy"
    inputs = ("acc", "x")

    def out_shape(self, in_shapes, attrs):
        if tuple(in_shapes[0]) != tuple(in_shapes[1]):
            raise ValueError(f"axpy: shapes differ {in_shapes}")
        return tuple(in_shapes[0])

    def ref_forward(self, xs, attrs, train=False, rng=None):
        return xs[0] + attrs.get("a", 1.0) * xs[1], {}

    def ref_backward(self, xs, y, saved, dy, attrs):
        return [dy.copy(), attrs.get("a", 1.0) * dy]

    def forward(self, xs, y, saved, ws, attrs, train, rng=None):
        kernels("elementwise").axpy(view(xs[0], -1), view(xs[1], -1), float(attrs.get("a", 1.0)),
                                    view(y, -1))

    def backward(self, xs, y, saved, dy, dxs, ws, attrs):
        a = float(attrs.get("a", 1.0))
        if dxs[0] is not None:
            np.copyto(dxs[0], dy)
        if dxs[1] is not None:
            kernels("elementwise").scale(view(dy, -1), a, view(dxs[1], -1))


@register_op
class Fill(Op):
    """y[...] = value (attrs shape incl. batch, value).  No inputs; not differentiable
    (zeroing gradient accumulators, constant tensors)."""
    name = "fill"
    inputs = ()
    differentiable = False

    def out_shape(self, in_shapes, attrs):
        return tuple(attrs["shape"])

    def ref_forward(self, xs, attrs, train=False, rng=None):
        return np.full(tuple(attrs["shape"]), attrs.get("value", 0.0)), {}

    def forward(self, xs, y, saved, ws, attrs, train, rng=None):
        y.fill(attrs.get("value", 0.0))


@register_op
class Dropout(Op):
    """Inverted dropout (the seeds' "more common" form), attrs p = DROP probability.

    train: u ~ U[0,1) drawn with ``rng.random`` in the array dtype (shape of x), keep where
    u >= p, y = x * keep / (1-p); saved "mask" holds keep/(1-p) (0 or 1/(1-p)).
    eval: identity, no scaling (a given "mask" buffer is set to 1, so a backward after an
    eval forward is the identity too).  Backward: dx = dy * mask.  p >= 1 drops everything."""
    name = "dropout"
    random = True

    def out_shape(self, in_shapes, attrs):
        return tuple(in_shapes[0])

    def saved_specs(self, in_shapes, attrs):
        return {"mask": (tuple(in_shapes[0]), "float")}

    def ref_forward(self, xs, attrs, train=False, rng=None):
        x, p = xs[0], float(attrs.get("p", 0.5))
        if not train:
            return x.copy(), {"mask": np.ones_like(x)}
        u = rng.random(x.shape, dtype=x.dtype)
        scale = 1.0 / (1.0 - p) if p < 1.0 else 0.0
        mask = (u >= p).astype(x.dtype) * x.dtype.type(scale)
        return x * mask, {"mask": mask}

    def ref_backward(self, xs, y, saved, dy, attrs):
        return [dy * saved["mask"]]

    def forward(self, xs, y, saved, ws, attrs, train, rng=None):
        x = xs[0]
        if not train:
            if y is not x:
                np.copyto(y, x)
            if "mask" in saved:
                saved["mask"].fill(1)
            return
        p = float(attrs.get("p", 0.5))
        mask = saved["mask"]
        rng.random(out=mask, dtype=mask.dtype)
        kernels("elementwise").dropout_fwd(view(x, -1), p, view(mask, -1), view(y, -1))

    def backward(self, xs, y, saved, dy, dxs, ws, attrs):
        if dxs[0] is not None:
            np.multiply(dy, saved["mask"], out=dxs[0])


@register_op
class StochasticDepth(Op):
    """Stochastic depth on a residual branch (Huang et al. 2016), attrs p = DROP probability.

    train: per sample n, u_n ~ U[0,1) (``rng.random((N,))`` in the array dtype), keep_n =
    u_n >= p, y[n] = keep_n * x[n] -- NO rescaling at train time (the paper's form, as the
    seeds cite it); saved "keep" (N,) holds 0/1.  eval: y = (1-p) * x, the expected value of
    the branch (the paper's test-time rule: scale by the survival probability).
    Backward: dx[n] = keep_n * dy[n]; an eval forward sets a given "keep" buffer to 1-p, so
    the backward after it is (1-p)*dy."""
    name = "stochastic_depth"
    random = True

    def out_shape(self, in_shapes, attrs):
        return tuple(in_shapes[0])

    def saved_specs(self, in_shapes, attrs):
        return {"keep": ((in_shapes[0][0],), "float")}

    def ref_forward(self, xs, attrs, train=False, rng=None):
        x, p = xs[0], float(attrs.get("p", 0.5))
        if not train:
            return x * x.dtype.type(1.0 - p), {"keep": np.full(x.shape[:1], 1.0 - p, x.dtype)}
        keep = (rng.random((x.shape[0],), dtype=x.dtype) >= p).astype(x.dtype)
        return x * keep.reshape((-1,) + (1,) * (x.ndim - 1)), {"keep": keep}

    def ref_backward(self, xs, y, saved, dy, attrs):
        return [dy * saved["keep"].reshape((-1,) + (1,) * (dy.ndim - 1))]

    def forward(self, xs, y, saved, ws, attrs, train, rng=None):
        x = xs[0]
        N = x.shape[0]
        p = float(attrs.get("p", 0.5))
        k = kernels("elementwise")
        if not train:
            k.scale(view(x, -1), 1.0 - p, view(y, -1))
            if "keep" in saved:
                saved["keep"].fill(1.0 - p)
            return
        keep = saved["keep"]
        rng.random(out=keep, dtype=keep.dtype)
        k.sdepth_fwd(view(x, (N, -1)), p, keep, view(y, (N, -1)))

    def backward(self, xs, y, saved, dy, dxs, ws, attrs):
        if dxs[0] is not None:
            N = dy.shape[0]
            kernels("elementwise").rowscale(view(dy, (N, -1)), saved["keep"], view(dxs[0], (N, -1)))
