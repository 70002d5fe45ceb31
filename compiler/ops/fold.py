"""Inference-only helper ops produced by the BatchNorm-folding pass (not differentiable).

bn_fold_weight: (W (O, ...), γ? (O,), σ² (O,))            -> W' = W · γ/√(σ²+ε)
bn_fold_bias:   (b? (O,), γ? (O,), β? (O,), μ (O,), σ² (O,)) -> b' = (b − μ) · γ/√(σ²+ε) + β
Parameter-sized, so plain numpy with out= is the right tool (no per-batch cost).
"""
from __future__ import annotations

import numpy as np

from .base import Op, register_op


def _scale(gamma, var, eps, dtype):
    s = 1.0 / np.sqrt(var.astype(np.float64) + eps)
    if gamma is not None:
        s = s * gamma
    return s.astype(dtype)


@register_op
class BnFoldWeight(Op):
    name = "bn_fold_weight"
    inputs = ("w", "gamma?", "var")
    differentiable = False

    def out_shape(self, in_shapes, attrs):
        return in_shapes[0]

    def ref_forward(self, xs, attrs, train=False, rng=None):
        w, gamma, var = xs
        s = _scale(gamma, var, attrs["eps"], w.dtype)
        return w * s.reshape((-1,) + (1,) * (w.ndim - 1)), {}

    def forward(self, xs, y, saved, ws, attrs, train, rng=None):
        w, gamma, var = xs
        s = _scale(gamma, var, attrs["eps"], w.dtype)
        np.multiply(w, s.reshape((-1,) + (1,) * (w.ndim - 1)), out=y)


@register_op
class BnFoldBias(Op):
    name = "bn_fold_bias"
    inputs = ("b?", "gamma?", "beta?", "mean", "var")
    differentiable = False

    def out_shape(self, in_shapes, attrs):
        return in_shapes[3]

    def ref_forward(self, xs, attrs, train=False, rng=None):
        b, gamma, beta, mean, var = xs
        s = _scale(gamma, var, attrs["eps"], mean.dtype)
        y = ((b if b is not None else 0) - mean) * s
        if beta is not None:
            y = y + beta
        return y.astype(mean.dtype), {}

    def forward(self, xs, y, saved, ws, attrs, train, rng=None):
        y[...] = self.ref_forward(xs, attrs)[0]
