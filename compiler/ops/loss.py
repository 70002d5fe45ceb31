"""Loss ops: softmax_cross_entropy, hinge, bce_with_logits, mse.

Each returns y of shape (1,) -- the mean (over the batch for the classification losses,
over all elements for bce_with_logits and mse, as PyTorch's reduction='mean').  Backward
receives dy (1,) and writes only d(first input); the target (input 1) is never
differentiated (dxs[1] is None, ref_backward returns None for it).  Backward reads the
inputs (and, for cross-entropy, the saved softmax probabilities when present).
Kernels: ``templates/loss.py.j2``.
"""
from __future__ import annotations

import numpy as np

from compiler.ops.base import Op, register_op
from compiler.ops.elementwise import empty, kernels, view


class _Loss(Op):
    inputs = ("x", "target")

    def out_shape(self, in_shapes, attrs):
        self.validate(in_shapes)
        return (1,)

    def validate(self, in_shapes):
        if tuple(in_shapes[0]) != tuple(in_shapes[1]):
            raise ValueError(f"{self.name}: input {in_shapes[0]} and target {in_shapes[1]} differ")

    def backward_reads(self, attrs):
        return ("x", "target")


class _ClassLoss(_Loss):
    inputs = ("logits", "target")

    def validate(self, in_shapes):
        x, t = in_shapes
        if len(x) != 2 or tuple(t) != (x[0],):
            raise ValueError(f"{self.name}: need logits (N, K) and target (N,), got {in_shapes}")


def positions(a):
    """(N, K, *S) as an (N, prod(S), K) view: one row of K class scores per position, in the
    targets' flat order (N, *S).  The one place the per-pixel layout is written down."""
    N, K = a.shape[:2]
    return a.reshape(N, K, -1).transpose(0, 2, 1)


def position_rows(z):
    """(N, K, *S) -> (N*prod(S), K), a contiguous copy (per-pixel cross-entropy's rows;
    runtime.ensemble's pixel probabilities)."""
    return np.ascontiguousarray(positions(z)).reshape(-1, z.shape[1])


def _unrows(r, shape):
    """Inverse of position_rows: (N*S, K) -> ``shape`` (N, K, *S)."""
    out = np.empty(shape, r.dtype)
    positions(out)[...] = r.reshape(shape[0], -1, shape[1])
    return out


@register_op
class SoftmaxCrossEntropy(_ClassLoss):
    """mean_n [ -sum_k q_nk log softmax(z_n)_k ], q = (1-ls)*onehot(t) + ls/K
    (PyTorch CrossEntropyLoss(label_smoothing=ls), no class weights, no ignore_index;
    targets must lie in [0, K)).  attrs label_smoothing (0.0).
    Per-position form (semantic segmentation, torch's "K-dimensional" case): logits
    (N, K, *S) and targets (N, *S), the mean over all N*prod(S) positions; the kernels see
    the positions as rows (``positions``, through the workspace).
    saved "prob" (rows, K): softmax(z), written by forward whenever the buffer is given."""
    name = "softmax_cross_entropy"

    def validate(self, in_shapes):
        x, t = in_shapes
        if len(x) < 2 or tuple(t) != (x[0], *x[2:]):
            raise ValueError(f"{self.name}: need logits (N, K, ...) and target (N, ...), got {in_shapes}")

    @staticmethod
    def _rows_shape(shape):
        n = 1
        for s in shape[2:]:
            n *= s
        return (shape[0] * n, shape[1])

    def saved_specs(self, in_shapes, attrs):
        return {"prob": (self._rows_shape(tuple(in_shapes[0])), "float")}

    def workspace(self, in_shapes, attrs):
        x = tuple(in_shapes[0])
        return {} if len(x) == 2 else {"zt": self._rows_shape(x), "dt": self._rows_shape(x)}

    def ref_forward(self, xs, attrs, train=False, rng=None):
        z, t = xs
        if z.ndim > 2:
            return self.ref_forward([position_rows(z), t.reshape(-1)], attrs)
        N, K = z.shape
        ls = attrs.get("label_smoothing", 0.0)
        zm = z - z.max(axis=1, keepdims=True)
        logp = zm - np.log(np.exp(zm).sum(axis=1, keepdims=True))
        q = np.full(z.shape, ls / K) + (1.0 - ls) * np.eye(K)[t]
        loss = -(q * logp).sum() / N
        return np.array([loss], dtype=z.dtype), {"prob": np.exp(logp)}

    def ref_backward(self, xs, y, saved, dy, attrs):
        z, t = xs
        if z.ndim > 2:
            return [_unrows(self.ref_backward([position_rows(z), t.reshape(-1)], y, saved, dy, attrs)[0], z.shape),
                    None]
        N, K = z.shape
        ls = attrs.get("label_smoothing", 0.0)
        q = np.full(z.shape, ls / K) + (1.0 - ls) * np.eye(K)[t]
        zm = z - z.max(axis=1, keepdims=True)
        p = np.exp(zm) / np.exp(zm).sum(axis=1, keepdims=True)
        return [dy[0] / N * (p - q), None]

    @staticmethod
    def _as_rows(z, t, ws):
        """The kernels' (rows, K) logits and (rows,) targets: z itself, or its positions
        copied into the workspace."""
        if z.ndim == 2:
            return z, t
        zt = ws["zt"].reshape(-1, z.shape[1])
        zt.reshape(z.shape[0], -1, z.shape[1])[...] = positions(z)
        return zt, t.reshape(-1)

    def forward(self, xs, y, saved, ws, attrs, train, rng=None):
        z, t = self._as_rows(*xs, ws)
        kernels("loss").ce_fwd(z, t, float(attrs.get("label_smoothing", 0.0)), y,
                               saved.get("prob", empty(z.dtype, 2)))

    def backward(self, xs, y, saved, dy, dxs, ws, attrs):
        dx = dxs[0]
        if dx is not None:
            z, t = self._as_rows(*xs, ws)
            d = dx if dx.ndim == 2 else ws["dt"].reshape(-1, dx.shape[1])
            kernels("loss").ce_bwd(z, t, float(attrs.get("label_smoothing", 0.0)),
                                   saved.get("prob", empty(z.dtype, 2)), dy, d)
            if d is not dx:
                positions(dx)[...] = d.reshape(dx.shape[0], -1, dx.shape[1])


@register_op
class Hinge(_ClassLoss):
    """Multiclass SVM loss (Weston-Watkins, as in CS231n):
    mean_n sum_{j != t_n} max(0, s_nj - s_nt + margin).  attrs margin (1.0).
    (PyTorch's MultiMarginLoss is this divided by K.)  Subgradient 0 where the term is 0."""
    name = "hinge"

    def ref_forward(self, xs, attrs, train=False, rng=None):
        s, t = xs
        N = s.shape[0]
        st = s[np.arange(N), t][:, None]
        marg = np.maximum(0, s - st + attrs.get("margin", 1.0))
        marg[np.arange(N), t] = 0
        return np.array([marg.sum() / N], dtype=s.dtype), {}

    def ref_backward(self, xs, y, saved, dy, attrs):
        s, t = xs
        N = s.shape[0]
        st = s[np.arange(N), t][:, None]
        mask = (s - st + attrs.get("margin", 1.0) > 0).astype(s.dtype)
        mask[np.arange(N), t] = 0
        mask[np.arange(N), t] = -mask.sum(axis=1)
        return [mask * dy[0] / N, None]

    def forward(self, xs, y, saved, ws, attrs, train, rng=None):
        kernels("loss").hinge_fwd(xs[0], xs[1], float(attrs.get("margin", 1.0)), y)

    def backward(self, xs, y, saved, dy, dxs, ws, attrs):
        if dxs[0] is not None:
            kernels("loss").hinge_bwd(xs[0], xs[1], float(attrs.get("margin", 1.0)), dy, dxs[0])


@register_op
class BCEWithLogits(_Loss):
    """PyTorch BCEWithLogitsLoss (mean over all elements): logits and float target of one
    shape; loss = max(z, 0) - z*t + log(1 + exp(-|z|)) (never overflows)."""
    name = "bce_with_logits"

    def ref_forward(self, xs, attrs, train=False, rng=None):
        z, t = xs
        el = np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))
        return np.array([el.mean()], dtype=z.dtype), {}

    def ref_backward(self, xs, y, saved, dy, attrs):
        z, t = xs
        return [dy[0] / z.size * (1.0 / (1.0 + np.exp(-z)) - t), None]

    def forward(self, xs, y, saved, ws, attrs, train, rng=None):
        kernels("loss").bce_fwd(view(xs[0], -1), view(xs[1], -1), y)

    def backward(self, xs, y, saved, dy, dxs, ws, attrs):
        if dxs[0] is not None:
            kernels("loss").bce_bwd(view(xs[0], -1), view(xs[1], -1), dy, view(dxs[0], -1))


@register_op
class MSE(_Loss):
    """PyTorch MSELoss(reduction='mean'): mean over all elements of (pred - target)^2."""
    name = "mse"
    inputs = ("pred", "target")

    def ref_forward(self, xs, attrs, train=False, rng=None):
        p, t = xs
        return np.array([((p - t) ** 2).mean()], dtype=p.dtype), {}

    def ref_backward(self, xs, y, saved, dy, attrs):
        p, t = xs
        return [2.0 * dy[0] / p.size * (p - t), None]

    def forward(self, xs, y, saved, ws, attrs, train, rng=None):
        kernels("loss").mse_fwd(view(xs[0], -1), view(xs[1], -1), y)

    def backward(self, xs, y, saved, dy, dxs, ws, attrs):
        if dxs[0] is not None:
            kernels("loss").mse_bwd(view(xs[0], -1), view(xs[1], -1), dy, view(dxs[0], -1))
