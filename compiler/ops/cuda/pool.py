"""CUDA launchers of maxpool2d, avgpool2d, global_pool, maxout, adaptive_avgpool2d (kernels:
templates/cuda_pool.py.j2).
Same attrs, output sizes (PyTorch ceil_mode rules) and int32 argmax convention as
compiler/ops/pool.py, whose ``_pattrs`` parses the attrs."""
from __future__ import annotations

import numpy as np

from compiler.ops.pool import _k, _pattrs

from .common import CudaOp, Launch, as_shape, dummy, grid1, gridx, kernels, register

T = "cuda_pool"


def argmax_bwd(dy, arg, dx):
    N, C = dx.shape[:2]
    g, b = gridx(N * C)
    return Launch(kernels(T, dx.dtype).argmax_bwd, g, b,
                  (as_shape(dy, (N, C, dy.size // (N * C))), as_shape(arg, (N, C, arg.size // (N * C))),
                   as_shape(dx, (N, C, dx.size // (N * C)))))


@register
class MaxPool2d(CudaOp):
    name = "maxpool2d"

    def plan_forward(self, ctx, xs, y, saved, ws, attrs, train):
        kh, kw, sh, sw, pt, pb, pl, pr, dh, dw, _ = _pattrs(attrs)
        arg = saved["argmax"] if train else dummy(ctx, np.int32, 4)
        g, b = grid1(y.size)
        return [Launch(kernels(T, y.dtype).maxpool_fwd, g, b,
                       (xs[0], y, arg, bool(train), kh, kw, sh, sw, pt, pl, dh, dw))]

    def plan_backward(self, ctx, xs, y, saved, dy, dxs, ws, attrs):
        dx = dxs[0]
        if dx is None:
            return []
        kh, kw, sh, sw, pt, pb, pl, pr, dh, dw, _ = _pattrs(attrs)
        if dh * (kh - 1) + 1 > sh or dw * (kw - 1) + 1 > sw:
            return [argmax_bwd(dy, saved["argmax"], dx)]         # overlapping windows
        # windows that do not overlap: each dx element has at most one window, so one thread
        # per dx element can gather (the per-plane scatter was 2 blocks for LeNet-5's first
        # pool at B=64: 0.30 ms on an H100)
        N, C, H, W = dx.shape
        g, b = grid1(dx.size)
        q = (N, C, dy.size // (N * C))
        return [Launch(kernels(T, dx.dtype).argmax_gather, g, b,
                       (as_shape(dy, q), as_shape(saved["argmax"], q), as_shape(dx, (N, C, H * W)),
                        dy.shape[3], W, sh, sw, pt, pl))]


@register
class AvgPool2d(CudaOp):
    name = "avgpool2d"

    def _geo(self, attrs):
        kh, kw, sh, sw, pt, pb, pl, pr, _, _, _ = _pattrs(attrs)
        return (kh, kw, sh, sw, pt, pb, pl, pr, bool(attrs.get("count_include_pad", True)))

    def plan_forward(self, ctx, xs, y, saved, ws, attrs, train):
        g, b = grid1(y.size)
        return [Launch(kernels(T, y.dtype).avgpool_fwd, g, b, (xs[0], y, *self._geo(attrs)))]

    def plan_backward(self, ctx, xs, y, saved, dy, dxs, ws, attrs):
        if dxs[0] is None:
            return []
        g, b = grid1(dxs[0].size)
        return [Launch(kernels(T, dy.dtype).avgpool_bwd, g, b, (dy, dxs[0], *self._geo(attrs)))]


@register
class GlobalPool(CudaOp):
    name = "global_pool"

    def plan_forward(self, ctx, xs, y, saved, ws, attrs, train):
        x = xs[0]
        N, C = x.shape[:2]
        k = kernels(T, x.dtype)
        x3, y2 = as_shape(x, (N, C, x.size // (N * C))), as_shape(y, (N, C))
        g, b = gridx(N * C)
        if attrs.get("mode", "avg") == "avg":
            return [Launch(k.global_avg, g, b, (x3, y2))]
        arg = as_shape(saved["argmax"], (N, C)) if train else dummy(ctx, np.int32, 2)
        return [Launch(k.global_max, g, b, (x3, y2, arg, bool(train)))]

    def plan_backward(self, ctx, xs, y, saved, dy, dxs, ws, attrs):
        dx = dxs[0]
        if dx is None:
            return []
        if attrs.get("mode", "avg") == "max":
            return [argmax_bwd(dy, saved["argmax"], dx)]
        N, C = dx.shape[:2]
        g, b = grid1(dx.size)
        return [Launch(kernels(T, dx.dtype).global_avg_bwd, g, b,
                       (as_shape(dy, (N, C)), as_shape(dx, (N, C, dx.size // (N * C)))))]


@register
class Maxout(CudaOp):
    """maxout: y[:, j] = max over x[:, j*k:(j+1)*k] (first maximum; saved argmax = index in
    the group), as compiler/ops/pool.py Maxout."""
    name = "maxout"

    def plan_forward(self, ctx, xs, y, saved, ws, attrs, train):
        x = xs[0]
        k = _k(attrs)
        N, G = x.shape[0], x.shape[1] // k
        S = x.size // (N * G * k)
        arg = as_shape(saved["argmax"], (N, G, S)) if train else dummy(ctx, np.int32, 3)
        g, b = grid1(y.size)
        return [Launch(kernels(T, y.dtype).maxout_fwd, g, b,
                       (as_shape(x, (N, G, k, S)), as_shape(y, (N, G, S)), arg, bool(train)))]

    def plan_backward(self, ctx, xs, y, saved, dy, dxs, ws, attrs):
        dx = dxs[0]
        if dx is None:
            return []
        k = _k(attrs)
        N, G = dx.shape[0], dx.shape[1] // k
        S = dx.size // (N * G * k)
        g, b = grid1(dx.size)
        return [Launch(kernels(T, dx.dtype).maxout_bwd, g, b,
                       (as_shape(dy, (N, G, S)), as_shape(saved["argmax"], (N, G, S)),
                        as_shape(dx, (N, G, k, S))))]


@register
class AdaptiveAvgPool2d(CudaOp):
    """adaptive_avgpool2d (PyTorch's windows: rows floor(i*H/oh) .. ceil((i+1)*H/oh) - 1):
    forward one thread per output, backward one thread per input gathering its windows."""
    name = "adaptive_avgpool2d"

    def plan_forward(self, ctx, xs, y, saved, ws, attrs, train):
        g, b = grid1(y.size)
        return [Launch(kernels(T, y.dtype).adaptive_avg_fwd, g, b, (xs[0], y))]

    def plan_backward(self, ctx, xs, y, saved, dy, dxs, ws, attrs):
        dx = dxs[0]
        if dx is None:
            return []
        g, b = grid1(dx.size)
        return [Launch(kernels(T, dx.dtype).adaptive_avg_bwd, g, b, (dy, dx))]
