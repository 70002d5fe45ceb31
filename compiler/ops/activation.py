"""Activation ops: activation (relu/sigmoid/tanh/leaky_relu/elu/relu6/hardsigmoid/hardswish/
silu/gelu/softplus), prelu, softmax (axis 1).
(maxout lives in compiler/ops/pool.py with the other argmax ops.)

Kernels: ``templates/activation.py.j2`` rendered per kind.  ``backward_reads(attrs)`` names
what the backward reads besides dy ("x" and/or "y"): relu, sigmoid, tanh, leaky_relu with
slope >= 0 and elu with alpha >= 0 need only y, so the compiler may run them in place.
"""
from __future__ import annotations

import numpy as np

from compiler.ops.base import Op, register_op
from compiler.ops import parallel as _parallel
from compiler.ops.elementwise import SPLIT_MIN, empty, kernels, opt, view

import math

FROM_Y = {"relu", "sigmoid", "tanh", "relu6", "hardsigmoid"}   # derivative from y alone
_erf = np.vectorize(math.erf, otypes=[np.float64])


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


# numpy references, one row per kind: forward f(x) and derivative f'(x) (PyTorch's choices
# at the kinks); attrs a: slope (leaky_relu), alpha (elu)
REF_F = {
    "relu": lambda x, a: np.maximum(x, 0),
    "sigmoid": lambda x, a: _sig(x),
    "tanh": lambda x, a: np.tanh(x),
    "leaky_relu": lambda x, a: np.where(x > 0, x, a.get("slope", 0.01) * x),
    "elu": lambda x, a: np.where(x > 0, x, a.get("alpha", 1.0) * np.expm1(np.minimum(x, 0))),
    "relu6": lambda x, a: np.clip(x, 0, 6),
    "hardsigmoid": lambda x, a: np.clip(x + 3, 0, 6) / 6,
    "hardswish": lambda x, a: x * np.clip(x + 3, 0, 6) / 6,
    "silu": lambda x, a: x * _sig(x),
    "gelu": lambda x, a: 0.5 * x * (1 + _erf(x / math.sqrt(2))),
    "softplus": lambda x, a: np.where(x > 20, x, np.log1p(np.exp(np.minimum(x, 20)))),
}
REF_D = {
    "relu": lambda x, a: (x > 0).astype(x.dtype),
    "sigmoid": lambda x, a: _sig(x) * (1 - _sig(x)),
    "tanh": lambda x, a: 1 - np.tanh(x) ** 2,
    "leaky_relu": lambda x, a: np.where(x > 0, 1.0, a.get("slope", 0.01)),
    "elu": lambda x, a: np.where(x > 0, 1.0, a.get("alpha", 1.0) * np.exp(np.minimum(x, 0))),
    "relu6": lambda x, a: ((x > 0) & (x < 6)).astype(float),
    "hardsigmoid": lambda x, a: ((x > -3) & (x < 3)) / 6.0,
    "hardswish": lambda x, a: np.where(x <= -3, 0.0, np.where(x < 3, x / 3 + 0.5, 1.0)),   # torch 2.13
    "silu": lambda x, a: _sig(x) * (1 + x * (1 - _sig(x))),
    "gelu": lambda x, a: 0.5 * (1 + _erf(x / math.sqrt(2))) + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi),
    "softplus": lambda x, a: np.where(x > 20, 1.0, _sig(np.minimum(x, 20))),
}
KINDS = tuple(REF_F)


def _flat_parts(n):
    """Ranges of a flat array for the nogil worker threads (whole array when small)."""
    if n < SPLIT_MIN:
        return [(0, n)]
    return _parallel.split(n, _parallel.WORKERS)


def _from_y(attrs) -> bool:
    kind = attrs.get("kind", "relu")
    if kind == "leaky_relu":
        return float(attrs.get("slope", 0.01)) >= 0.0
    if kind == "elu":
        return float(attrs.get("alpha", 1.0)) >= 0.0
    return kind in FROM_Y


def _ncs(shape):
    S = int(np.prod(shape[2:], dtype=np.int64)) if len(shape) > 2 else 1
    return shape[0], shape[1], S


@register_op
class Activation(Op):
    """Pointwise activation, attrs kind in relu | sigmoid | tanh | leaky_relu | elu,
    slope (leaky_relu, 0.01 as PyTorch), alpha (elu, 1.0).
    relu max(0, x); sigmoid 1/(1+e^-x); tanh; leaky_relu x if x > 0 else slope*x;
    elu x if x > 0 else alpha*(e^x - 1).  Derivative at 0 taken from the left, as PyTorch.
    Backward from y: relu 1[y>0], sigmoid y(1-y), tanh 1-y^2, leaky 1[y>0] | slope
    (slope >= 0), elu 1[y>0] | y+alpha (alpha >= 0); otherwise from x."""
    name = "activation"

    def out_shape(self, in_shapes, attrs):
        if attrs.get("kind", "relu") not in KINDS:
            raise ValueError(f"activation kind {attrs.get('kind')!r} not in {KINDS}")
        return tuple(in_shapes[0])

    def backward_reads(self, attrs):
        return ("y",) if _from_y(attrs) else ("x",)

    def ref_forward(self, xs, attrs, train=False, rng=None):
        x = xs[0]
        return REF_F[attrs.get("kind", "relu")](x, attrs).astype(x.dtype, copy=False), {}

    def ref_backward(self, xs, y, saved, dy, attrs):
        x = xs[0]
        return [(dy * REF_D[attrs.get("kind", "relu")](x, attrs)).astype(x.dtype, copy=False)]

    def _k(self, attrs):
        return kernels("activation", kind=attrs.get("kind", "relu"), from_y=_from_y(attrs))

    def forward(self, xs, y, saved, ws, attrs, train, rng=None):
        k, x1, y1 = self._k(attrs), view(xs[0], -1), view(y, -1)
        sl, al = float(attrs.get("slope", 0.01)), float(attrs.get("alpha", 1.0))
        parts = _flat_parts(y1.shape[0])
        _parallel.run(lambda p: k.act_fwd(x1[slice(*parts[p])], sl, al, y1[slice(*parts[p])]), len(parts))

    def backward(self, xs, y, saved, dy, dxs, ws, attrs):
        if dxs[0] is None:
            return
        k, y1, dy1, dx1 = self._k(attrs), view(y, -1), view(dy, -1), view(dxs[0], -1)
        x1 = y1 if _from_y(attrs) or xs[0] is None else view(xs[0], -1)
        sl, al = float(attrs.get("slope", 0.01)), float(attrs.get("alpha", 1.0))
        parts = _flat_parts(y1.shape[0])

        def run(p):
            s = slice(*parts[p])
            k.act_bwd(x1[s], y1[s], dy1[s], sl, al, dx1[s])
        _parallel.run(run, len(parts))


@register_op
class PReLU(Op):
    """Parametric ReLU (He et al. 2015): y = x if x > 0 else a*x, learned a: weight (1,)
    shared, or (C,) per channel (axis 1).  Backward: dx and d weight; reads x."""
    name = "prelu"
    inputs = ("x", "weight")

    def out_shape(self, in_shapes, attrs):
        x, w = in_shapes
        if len(w) != 1 or w[0] not in (1, x[1]):
            raise ValueError(f"prelu weight {w} must be (1,) or ({x[1]},)")
        return tuple(x)

    def backward_reads(self, attrs):
        return ("x",)

    def _wb(self, x, w):
        return w.reshape((1, -1) + (1,) * (x.ndim - 2)) if w.shape[0] > 1 else w[0]

    def ref_forward(self, xs, attrs, train=False, rng=None):
        x, w = xs
        return np.where(x > 0, x, self._wb(x, w) * x), {}

    def ref_backward(self, xs, y, saved, dy, attrs):
        x, w = xs
        dx = np.where(x > 0, dy, self._wb(x, w) * dy)
        contrib = np.where(x > 0, 0.0, dy * x)
        if w.shape[0] > 1:
            dw = contrib.sum(axis=tuple(i for i in range(x.ndim) if i != 1))
        else:
            dw = np.array([contrib.sum()])
        return [dx, dw.astype(w.dtype)]

    def forward(self, xs, y, saved, ws, attrs, train, rng=None):
        x, w = xs
        sh = _ncs(x.shape)
        kernels("activation", kind="prelu", from_y=False).prelu_fwd(view(x, sh), w, view(y, sh))

    def backward(self, xs, y, saved, dy, dxs, ws, attrs):
        x, w = xs
        sh = _ncs(x.shape)
        if dxs[0] is None and dxs[1] is None:
            return
        kernels("activation", kind="prelu", from_y=False).prelu_bwd(
            view(x, sh), w, view(dy, sh), opt(dxs[0], sh, x.dtype),
            dxs[1] if dxs[1] is not None else empty(x.dtype))


@register_op
class Softmax(Op):
    """Softmax over axis 1 (classes / channels) of (N, K) or (N, K, H, W), max-subtracted.
    Backward dx = y*(dy - sum_k dy*y); reads y only."""
    name = "softmax"

    def out_shape(self, in_shapes, attrs):
        return tuple(in_shapes[0])

    def backward_reads(self, attrs):
        return ("y",)

    def ref_forward(self, xs, attrs, train=False, rng=None):
        x = xs[0]
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True), {}

    def ref_backward(self, xs, y, saved, dy, attrs):
        return [y * (dy - (dy * y).sum(axis=1, keepdims=True))]

    def forward(self, xs, y, saved, ws, attrs, train, rng=None):
        sh = _ncs(xs[0].shape)
        kernels("activation", kind="softmax", from_y=True).softmax_fwd(view(xs[0], sh), view(y, sh))

    def backward(self, xs, y, saved, dy, dxs, ws, attrs):
        if dxs[0] is not None:
            sh = _ncs(y.shape)
            kernels("activation", kind="softmax", from_y=True).softmax_bwd(
                view(y, sh), view(dy, sh), view(dxs[0], sh))

