"""CUDA launchers of the elementwise and copy ops (kernels: templates/cuda_pointwise.py.j2,
where every flat kernel is printed by one macro from one table).

activation, prelu, add, axpy, fill, dropout, stochastic_depth, concat, center_crop,
shortcut_pad, channel_shuffle, channel_slice, upsample, mul (a broadcasting gate).  Same attrs, saved tensors and math as compiler/ops/*.py.
"""
from __future__ import annotations

import numpy as np

from compiler.ops.activation import _from_y
from compiler.ops.resample import _tables

from .common import RBLOCK, CudaOp, Draw, Launch, as_shape, flat, grid1, gridx, kernels, register

T = "cuda_pointwise"


def pw(name, n, *args, dtype):
    """A Launch of flat kernel ``name`` over n elements."""
    g, b = grid1(n)
    return Launch(getattr(kernels(T, dtype), name), g, b, args)


def copy(src, dst):
    return pw("copy", dst.size, flat(src), flat(dst), dtype=dst.dtype)


def fill(dst, v):
    return pw("fill", dst.size, flat(dst), dst.dtype.type(v), dtype=dst.dtype)


def window(src, dst, region, s0=(0, 0, 0), sstep=(1, 1), d0=(0, 0, 0), dstep=(1, 1)):
    """window_copy over region (Cr, Hr, Wr) of 4-D arrays (see the template)."""
    Cr, Hr, Wr = region
    n = src.shape[0] * Cr * Hr * Wr
    g, b = grid1(n)
    return Launch(kernels(T, dst.dtype).window_copy, g, b,
                  (src, dst, Cr, Hr, Wr, *s0, *sstep, *d0, *dstep))


def as4(a):
    return as_shape(a, tuple(a.shape) + (1,) * (4 - a.ndim)) if a.ndim < 4 else a


@register
class Activation(CudaOp):
    name = "activation"

    def plan_forward(self, ctx, xs, y, saved, ws, attrs, train):
        t = y.dtype.type
        return [pw(f"act_fwd_{attrs.get('kind', 'relu')}", y.size, flat(xs[0]), flat(y),
                   t(attrs.get("slope", 0.01)), t(attrs.get("alpha", 1.0)), dtype=y.dtype)]

    def plan_backward(self, ctx, xs, y, saved, dy, dxs, ws, attrs):
        if dxs[0] is None:
            return []
        kind, t = attrs.get("kind", "relu"), y.dtype.type
        from_y = _from_y(attrs) or xs[0] is None
        s = y if from_y else xs[0]
        name = f"act_bwd_{kind}" + (("_y" if from_y else "_x") if kind == "elu" else "")
        return [pw(name, dy.size, flat(s), flat(dy), flat(dxs[0]), t(attrs.get("slope", 0.01)),
                   t(attrs.get("alpha", 1.0)), dtype=y.dtype)]


def _ncs(shape):
    S = int(np.prod(shape[2:], dtype=np.int64)) if len(shape) > 2 else 1
    return shape[0], shape[1], S


@register
class PReLU(CudaOp):
    name = "prelu"

    def plan_forward(self, ctx, xs, y, saved, ws, attrs, train):
        x, w = xs
        N, C, S = _ncs(x.shape)
        return [pw("prelu_fwd", y.size, flat(x), w, flat(y), C, S, w.shape[0] == 1, dtype=y.dtype)]

    def plan_backward(self, ctx, xs, y, saved, dy, dxs, ws, attrs):
        from .reduce import chan_reduce
        x, w = xs
        N, C, S = _ncs(x.shape)
        out = []
        if dxs[0] is not None:
            out.append(pw("prelu_bwd", dy.size, flat(x), w, flat(dy), flat(dxs[0]), C, S,
                          w.shape[0] == 1, dtype=y.dtype))
        if dxs[1] is not None:   # sum over x <= 0 of dy*x, per channel (or over everything)
            shp = (N, C, S) if w.shape[0] > 1 else (N, 1, C * S)
            out.append(chan_reduce(as_shape(dy, shp), as_shape(x, shp), dxs[1], mode=1))
        return out


@register
class Add(CudaOp):
    name = "add"

    def plan_forward(self, ctx, xs, y, saved, ws, attrs, train):
        out = [pw("add2", y.size, flat(xs[0]), flat(xs[1]), flat(y), dtype=y.dtype)]
        for x in xs[2:]:
            out.append(pw("add2", y.size, flat(y), flat(x), flat(y), dtype=y.dtype))
        if attrs.get("act", "none") == "relu":
            t = y.dtype.type
            out.append(pw("act_fwd_relu", y.size, flat(y), flat(y), t(0.01), t(1.0), dtype=y.dtype))
        return out

    def plan_backward(self, ctx, xs, y, saved, dy, dxs, ws, attrs):
        need = [dx for dx in dxs if dx is not None]
        if attrs.get("act", "none") != "relu" or not need:
            return [copy(dy, dx) for dx in need if dx is not dy]
        t = y.dtype.type
        src = dy if any(dx is dy for dx in need) else need[0]    # masked in place when aliased
        out = [pw("act_bwd_relu", dy.size, flat(y), flat(dy), flat(src), t(0.01), t(1.0),
                  dtype=y.dtype)]
        return out + [copy(src, dx) for dx in need if dx is not src]


@register
class Axpy(CudaOp):
    name = "axpy"

    def plan_forward(self, ctx, xs, y, saved, ws, attrs, train):
        return [pw("axpy", y.size, flat(xs[0]), flat(xs[1]), flat(y),
                   y.dtype.type(attrs.get("a", 1.0)), dtype=y.dtype)]

    def plan_backward(self, ctx, xs, y, saved, dy, dxs, ws, attrs):
        out = []
        if dxs[0] is not None:
            out.append(copy(dy, dxs[0]))
        if dxs[1] is not None:
            out.append(pw("scale", dy.size, flat(dy), flat(dxs[1]), dy.dtype.type(attrs.get("a", 1.0)),
                          dtype=dy.dtype))
        return out


@register
class Fill(CudaOp):
    name = "fill"

    def plan_forward(self, ctx, xs, y, saved, ws, attrs, train):
        return [fill(y, attrs.get("value", 0.0))]


@register
class Dropout(CudaOp):
    name = "dropout"
    random = True

    def plan_forward(self, ctx, xs, y, saved, ws, attrs, train):
        x = xs[0]
        if not train:
            out = [] if y is x else [copy(x, y)]
            if "mask" in saved:
                out.append(fill(saved["mask"], 1.0))
            return out
        p = float(attrs.get("p", 0.5))
        t, mask = y.dtype.type, saved["mask"]
        return [Draw(mask), pw("dropout_fwd", y.size, flat(x), flat(mask), flat(y), t(p),
                               t(1.0 / (1.0 - p) if p < 1.0 else 0.0), dtype=y.dtype)]

    def plan_backward(self, ctx, xs, y, saved, dy, dxs, ws, attrs):
        if dxs[0] is None:
            return []
        return [pw("mul", dy.size, flat(dy), flat(saved["mask"]), flat(dxs[0]), dtype=dy.dtype)]


@register
class StochasticDepth(CudaOp):
    name = "stochastic_depth"
    random = True

    def plan_forward(self, ctx, xs, y, saved, ws, attrs, train):
        x, p, t = xs[0], float(attrs.get("p", 0.5)), y.dtype.type
        if not train:
            out = [pw("scale", y.size, flat(x), flat(y), t(1.0 - p), dtype=y.dtype)]
            if "keep" in saved:
                out.append(fill(saved["keep"], 1.0 - p))
            return out
        keep = saved["keep"]
        return [Draw(keep), pw("keep_from_u", keep.size, keep, t(p), dtype=y.dtype),
                pw("rowscale", y.size, flat(x), keep, flat(y), y.size // y.shape[0], dtype=y.dtype)]

    def plan_backward(self, ctx, xs, y, saved, dy, dxs, ws, attrs):
        if dxs[0] is None:
            return []
        return [pw("rowscale", dy.size, flat(dy), saved["keep"], flat(dxs[0]), dy.size // dy.shape[0],
                   dtype=dy.dtype)]


@register
class Concat(CudaOp):
    name = "concat"

    def plan_forward(self, ctx, xs, y, saved, ws, attrs, train):
        out, off, y4 = [], 0, as4(y)
        for x in xs:
            x4 = as4(x)
            out.append(window(x4, y4, x4.shape[1:], d0=(off, 0, 0)))
            off += x.shape[1]
        return out

    def plan_backward(self, ctx, xs, y, saved, dy, dxs, ws, attrs):
        out, off, dy4 = [], 0, as4(dy)
        for x, dx in zip(xs, dxs):
            if dx is not None:
                dx4 = as4(dx)
                out.append(window(dy4, dx4, dx4.shape[1:], s0=(off, 0, 0)))
            off += x.shape[1]
        return out


@register
class CenterCrop(CudaOp):
    name = "center_crop"

    def plan_forward(self, ctx, xs, y, saved, ws, attrs, train):
        t, l = attrs["offset"]
        return [window(xs[0], y, y.shape[1:], s0=(0, t, l))]

    def plan_backward(self, ctx, xs, y, saved, dy, dxs, ws, attrs):
        if dxs[0] is None:
            return []
        t, l = attrs["offset"]
        return [fill(dxs[0], 0.0), window(dy, dxs[0], dy.shape[1:], d0=(0, t, l))]


@register
class ShortcutPad(CudaOp):
    name = "shortcut_pad"

    def plan_forward(self, ctx, xs, y, saved, ws, attrs, train):
        x = xs[0]
        sh, sw = attrs.get("stride", (1, 1))
        lo = (attrs["out"] - x.shape[1]) // 2
        return [fill(y, 0.0), window(x, y, (x.shape[1], y.shape[2], y.shape[3]), sstep=(sh, sw),
                                     d0=(lo, 0, 0))]

    def plan_backward(self, ctx, xs, y, saved, dy, dxs, ws, attrs):
        dx = dxs[0]
        if dx is None:
            return []
        sh, sw = attrs.get("stride", (1, 1))
        lo = (attrs["out"] - dx.shape[1]) // 2
        return [fill(dx, 0.0), window(dy, dx, (dx.shape[1], dy.shape[2], dy.shape[3]), s0=(lo, 0, 0),
                                      dstep=(sh, sw))]


@register
class ChannelShuffle(CudaOp):
    """One flat gather y[n, j*G + i] = x[n, i*(C/G) + j]; the backward is the same kernel
    with C/G groups (the inverse permutation)."""
    name = "channel_shuffle"

    @staticmethod
    def _launch(src, dst, groups):
        N, C = dst.shape[:2]
        G = int(groups)
        return pw("chan_shuffle", dst.size, flat(src), flat(dst), G, C // G, dst.size // (N * C),
                  dtype=dst.dtype)

    def plan_forward(self, ctx, xs, y, saved, ws, attrs, train):
        return [self._launch(xs[0], y, attrs["groups"])]

    def plan_backward(self, ctx, xs, y, saved, dy, dxs, ws, attrs):
        if dxs[0] is None:
            return []
        return [self._launch(dy, dxs[0], dy.shape[1] // int(attrs["groups"]))]


@register
class ChannelSlice(CudaOp):
    name = "channel_slice"

    def plan_forward(self, ctx, xs, y, saved, ws, attrs, train):
        y4 = as4(y)
        return [window(as4(xs[0]), y4, y4.shape[1:], s0=(int(attrs["start"]), 0, 0))]

    def plan_backward(self, ctx, xs, y, saved, dy, dxs, ws, attrs):
        if dxs[0] is None:
            return []
        dy4 = as4(dy)
        return [fill(dxs[0], 0.0),
                window(dy4, as4(dxs[0]), dy4.shape[1:], d0=(int(attrs["start"]), 0, 0))]


@register
class Upsample(CudaOp):
    name = "upsample"

    def _tabs(self, ctx, H, W, attrs, dtype):
        return [ctx.table(a) for a in _tables(H, W, attrs, dtype)]

    def plan_forward(self, ctx, xs, y, saved, ws, attrs, train):
        x = xs[0]
        tab = self._tabs(ctx, x.shape[2], x.shape[3], attrs, x.dtype)
        k = kernels(T, y.dtype)
        g, b = grid1(y.size)
        return [Launch(k.nearest_fwd if len(tab) == 2 else k.bilinear_fwd, g, b, (x, y, *tab))]

    def plan_backward(self, ctx, xs, y, saved, dy, dxs, ws, attrs):
        dx = dxs[0]
        if dx is None:
            return []
        tab = self._tabs(ctx, dx.shape[2], dx.shape[3], attrs, dx.dtype)
        k = kernels(T, dx.dtype)
        g, b = gridx(dx.shape[0] * dx.shape[1])
        return [Launch(k.nearest_bwd if len(tab) == 2 else k.bilinear_bwd, g, b, (dy, dx, *tab))]


@register
class Mul(CudaOp):
    """y = x * g, g broadcast along its dims of size 1 (compiler/ops/elementwise.py Mul);
    dx = dy * g, dg = dy * x summed over g's broadcast dims (``mul_dg``, a block per g
    element, in cuda_reduce.py.j2 beside the other block reductions) or elementwise where g has
    x's shape."""
    name = "mul"

    def plan_forward(self, ctx, xs, y, saved, ws, attrs, train):
        x, g = xs
        return [pw("mul_bcast", y.size, as4(x), as4(g), as4(y), dtype=y.dtype)]

    def plan_backward(self, ctx, xs, y, saved, dy, dxs, ws, attrs):
        x, g = xs
        dx, dg = dxs
        out = []
        if dg is not None:        # first: dg reads dy, which dx may overwrite were they aliased
            if tuple(dg.shape) == tuple(dy.shape):
                out.append(pw("mul_bcast", dg.size, as4(dy), as4(x), as4(dg), dtype=dg.dtype))
            else:
                out.append(Launch(kernels("cuda_reduce", dg.dtype).mul_dg, (dg.size,), (RBLOCK,),
                                  (as4(dy), as4(x), as4(dg))))
        if dx is not None:
            out.append(pw("mul_bcast", dx.size, as4(dy), as4(g), as4(dx), dtype=dx.dtype))
        return out
