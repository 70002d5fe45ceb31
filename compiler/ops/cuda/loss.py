"""CUDA launchers of softmax and the losses (kernels: templates/cuda_loss.py.j2): a loss's
forward is one block for the whole batch (a deterministic shared-memory tree, no atomics),
its backward and softmax flat elementwise grids.
"""
from __future__ import annotations

from compiler.ops.norm import _ncs

from .common import RBLOCK, CudaOp, Launch, as_shape, flat, grid1, gridx, kernels, register

T = "cuda_loss"


def K(dtype):
    return kernels(T, dtype)


@register
class Softmax(CudaOp):
    name = "softmax"

    def plan_forward(self, ctx, xs, y, saved, ws, attrs, train):
        sh = _ncs(y.shape)
        g, b = gridx(sh[0] * sh[2])
        return [Launch(K(y.dtype).softmax_fwd, g, b, (as_shape(xs[0], sh), as_shape(y, sh)))]

    def plan_backward(self, ctx, xs, y, saved, dy, dxs, ws, attrs):
        if dxs[0] is None:
            return []
        sh = _ncs(y.shape)
        g, b = gridx(sh[0] * sh[2])
        return [Launch(K(y.dtype).softmax_bwd, g, b, tuple(as_shape(a, sh) for a in (y, dy, dxs[0])))]


@register
class SoftmaxCrossEntropy(CudaOp):
    name = "softmax_cross_entropy"

    def plan_forward(self, ctx, xs, y, saved, ws, attrs, train):
        z, t = xs
        prob = saved["prob"] if "prob" in saved else ctx.array(z.shape, z.dtype)
        return [Launch(K(z.dtype).ce_fwd, (1,), (RBLOCK,),
                       (z, t, float(attrs.get("label_smoothing", 0.0)), y, prob))]

    def plan_backward(self, ctx, xs, y, saved, dy, dxs, ws, attrs):
        if dxs[0] is None:
            return []
        z, t = xs
        g, b = grid1(z.size)
        return [Launch(K(z.dtype).ce_bwd, g, b,
                       (t, float(attrs.get("label_smoothing", 0.0)), saved["prob"], dy, dxs[0]))]


@register
class Hinge(CudaOp):
    name = "hinge"

    def plan_forward(self, ctx, xs, y, saved, ws, attrs, train):
        s, t = xs
        return [Launch(K(s.dtype).hinge_fwd, (1,), (RBLOCK,),
                       (s, t, s.dtype.type(attrs.get("margin", 1.0)), y))]

    def plan_backward(self, ctx, xs, y, saved, dy, dxs, ws, attrs):
        if dxs[0] is None:
            return []
        s, t = xs
        g, b = gridx(s.shape[0])
        return [Launch(K(s.dtype).hinge_bwd, g, b, (s, t, s.dtype.type(attrs.get("margin", 1.0)), dy, dxs[0]))]


class _FlatLoss(CudaOp):
    def plan_forward(self, ctx, xs, y, saved, ws, attrs, train):
        p, t = xs
        return [Launch(getattr(K(p.dtype), self.kname + "_fwd"), (1,), (RBLOCK,), (flat(p), flat(t), y))]

    def plan_backward(self, ctx, xs, y, saved, dy, dxs, ws, attrs):
        if dxs[0] is None:
            return []
        p, t = xs
        g, b = grid1(p.size)
        return [Launch(getattr(K(p.dtype), self.kname + "_bwd"), g, b, (flat(p), flat(t), dy, flat(dxs[0])))]


register(type("CudaBCE", (_FlatLoss,), {"name": "bce_with_logits", "kname": "bce"}))
register(type("CudaMSE", (_FlatLoss,), {"name": "mse", "kname": "mse"}))
