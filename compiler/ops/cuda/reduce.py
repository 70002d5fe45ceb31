"""CUDA launchers of the reduction ops (kernels: templates/cuda_reduce.py.j2): batchnorm,
layernorm / instancenorm / groupnorm, lrn, weight_norm and the BN-folding helpers (softmax
and the losses: loss.py).  Reductions are one block per output with a shared-memory tree (no
atomics, deterministic) -- BatchNorm's per-channel sums are split over (channel, split)
blocks plus an in-order finishing launch, since a channel alone is too few blocks for a GPU;
the elementwise halves are flat grid-stride kernels.
"""
from __future__ import annotations

import numpy as np

from compiler.ops import OPS
from compiler.ops.norm import _ncs

from .common import (RBLOCK, TARGET_BLOCKS, CudaOp, Launch, as_shape, dummy, flat, grid1, gridx,
                     kernels, register)

T = "cuda_reduce"


def K(dtype):
    return kernels(T, dtype)


def chan_reduce(a3, b3, out, mode):
    """out[c] = per-channel sum of a3 (N, C, S) (modes: see the template)."""
    return Launch(K(a3.dtype).chan_reduce, (a3.shape[1],), (RBLOCK,), (a3, b3, out, mode))


def _splits(m, C):
    """Splits per channel of a BatchNorm reduction over m = N*S values: about TARGET_BLOCKS
    blocks in all, each split at least 2*RBLOCK values (one block per channel alone was 16
    blocks for a ResNet-20 16-channel layer, 0.14 ms for bn_stats on an H100)."""
    return max(1, min(-(-TARGET_BLOCKS // C), m // (2 * RBLOCK)))


def _opt(ctx, a, dtype):
    return (a, True) if a is not None else (dummy(ctx, dtype), False)


@register
class BatchNorm(CudaOp):
    name = "batchnorm"

    def plan_forward(self, ctx, xs, y, saved, ws, attrs, train):
        from .pointwise import pw
        x, w, b, rm, rv = xs
        train = train and not attrs.get("global_stats", False)
        N, C, S = _ncs(x.shape)
        dt = x.dtype
        mean = saved.get("mean") if "mean" in saved else ctx.array((C,), dt)
        istd = saved.get("istd") if "istd" in saved else ctx.array((C,), dt)
        tflag = saved["train"] if "train" in saved else ctx.array((0,), np.uint8)
        w1, hw = _opt(ctx, w, dt)
        b1, hb = _opt(ctx, b, dt)
        x3 = as_shape(x, (N, C, S))
        P = _splits(N * S, C) if train else 1
        part = ctx.array((P, C, 2), np.float64)
        gc, bc = gridx(C)
        stats = [Launch(K(dt).bn_part_stats, (C, P), (RBLOCK,), (x3, part))] if train else []
        return stats + [
            Launch(K(dt).bn_finish_stats, gc, bc, (x3, part, rm, rv, mean, istd, tflag,
                                                 float(attrs.get("eps", 1e-5)),
                                                 float(attrs.get("momentum", 0.1)), bool(train))),
            pw("bn_apply", x.size, flat(x), mean, istd, w1, b1, flat(y), hw, hb, C, S,
               attrs.get("act", "none") == "relu", dtype=dt)]

    def plan_backward(self, ctx, xs, y, saved, dy, dxs, ws, attrs):
        x, w = xs[0], xs[1]
        N, C, S = _ncs(x.shape)
        dt = x.dtype
        relu = attrs.get("act", "none") == "relu"
        sh = (N, C, S)
        x3, dy3 = as_shape(x, sh), as_shape(dy, sh)
        y3 = as_shape(y, sh) if relu else x3
        sums = ctx.array((2, C), dt)
        dw, hdw = _opt(ctx, dxs[1], dt)
        db, hdb = _opt(ctx, dxs[2], dt)
        w1, hw = _opt(ctx, w, dt)
        P = _splits(N * S, C)
        part = ctx.array((P, C, 2), np.float64)
        gc, bc = gridx(C)
        out = [Launch(K(dt).bn_part_bwd, (C, P), (RBLOCK,), (x3, dy3, y3, saved["mean"], saved["istd"],
                                                            relu, part)),
               Launch(K(dt).bn_finish_bwd, gc, bc, (part, sums, dw, db, hdw, hdb))]
        if dxs[0] is not None:
            g, b = grid1(x.size)
            out.append(Launch(K(dt).bn_bwd_dx, g, b, (x3, dy3, y3, saved["mean"], saved["istd"], w1, hw,
                                                     relu, sums, saved["train"], as_shape(dxs[0], sh))))
        return out


class _Group(CudaOp):
    """layernorm / instancenorm / groupnorm: rows of (N*G, L) contiguous groups."""

    def _layout(self, x, attrs):
        N, Cv, Sv, G, _ = OPS[self.name].layout(tuple(x.shape), attrs)
        return N, Cv, Sv, G, (Cv // G) * Sv

    def plan_forward(self, ctx, xs, y, saved, ws, attrs, train):
        from .pointwise import pw
        x, w, b = xs
        N, Cv, Sv, G, L = self._layout(x, attrs)
        st = saved if "mean" in saved else ws
        dt = x.dtype
        w1, hw = _opt(ctx, flat(w) if w is not None else None, dt)
        b1, hb = _opt(ctx, flat(b) if b is not None else None, dt)
        return [Launch(K(dt).gn_stats, (N * G,), (RBLOCK,),
                       (flat(x), flat(st["mean"]), flat(st["rstd"]), L, float(attrs.get("eps", 1e-5)))),
                pw("gn_apply", x.size, flat(x), st["mean"], st["rstd"], w1, b1, flat(y), hw, hb, Cv, Sv, G,
                   dtype=dt)]

    def plan_backward(self, ctx, xs, y, saved, dy, dxs, ws, attrs):
        x, w, b = xs
        N, Cv, Sv, G, L = self._layout(x, attrs)
        dt = x.dtype
        w1, hw = _opt(ctx, flat(w) if w is not None else None, dt)
        mean, rstd = flat(saved["mean"]), flat(saved["rstd"])
        out = []
        if dxs[0] is not None:
            out.append(Launch(K(dt).gn_bwd_dx, (N * G,), (RBLOCK,),
                              (flat(x), flat(dy), w1, hw, mean, rstd, L, Sv, flat(dxs[0]))))
        if dxs[1] is not None or dxs[2] is not None:
            dw, hdw = _opt(ctx, flat(dxs[1]) if dxs[1] is not None else None, dt)
            db, hdb = _opt(ctx, flat(dxs[2]) if dxs[2] is not None else None, dt)
            out.append(Launch(K(dt).gn_bwd_wb, (Cv,), (RBLOCK,),
                              (flat(x), flat(dy), mean, rstd, N, Cv, Sv, G, dw, db, hdw, hdb)))
        return out


for _n in ("layernorm", "instancenorm", "groupnorm"):
    register(type(f"Cuda_{_n}", (_Group,), {"name": _n}))


@register
class LRN(CudaOp):
    name = "lrn"

    def plan_forward(self, ctx, xs, y, saved, ws, attrs, train):
        x = xs[0]
        N, C, S = _ncs(x.shape)
        size, alpha, beta, k = OPS["lrn"]._params(attrs)
        t, sh = x.dtype.type, (N, C, S)
        scale = as_shape(saved["scale"], sh) if "scale" in saved else dummy(ctx, x.dtype, 3)
        g, b = grid1(x.size)
        return [Launch(K(x.dtype).lrn_fwd, g, b, (as_shape(x, sh), size, t(alpha), t(beta), t(k),
                                                 as_shape(y, sh), scale, "scale" in saved))]

    def plan_backward(self, ctx, xs, y, saved, dy, dxs, ws, attrs):
        if dxs[0] is None:
            return []
        x = xs[0]
        N, C, S = _ncs(x.shape)
        size, alpha, beta, k = OPS["lrn"]._params(attrs)
        t, sh = x.dtype.type, (N, C, S)
        g, b = grid1(x.size)
        return [Launch(K(x.dtype).lrn_bwd, g, b, tuple(as_shape(a, sh) for a in (x, y, dy, saved["scale"]))
                       + (size, t(alpha), t(beta), as_shape(dxs[0], sh)))]


@register
class WeightNorm(CudaOp):
    name = "weight_norm"

    def plan_forward(self, ctx, xs, y, saved, ws, attrs, train):
        v, g = xs
        O = v.shape[0]
        return [Launch(K(v.dtype).wn_fwd, (O,), (RBLOCK,), (as_shape(v, (O, v.size // O)), flat(g),
                                                            as_shape(y, (O, v.size // O))))]

    def plan_backward(self, ctx, xs, y, saved, dy, dxs, ws, attrs):
        v, g = xs
        dv, dg = dxs
        if dv is None and dg is None:
            return []
        O, R = v.shape[0], v.size // v.shape[0]
        dv2 = as_shape(dv, (O, R)) if dv is not None else dummy(ctx, v.dtype, 2)
        dg1 = flat(dg) if dg is not None else dummy(ctx, v.dtype)
        return [Launch(K(v.dtype).wn_bwd, (O,), (RBLOCK,), (as_shape(v, (O, R)), flat(g), as_shape(dy, (O, R)),
                                                            dv2, dg1, dv is not None, dg is not None))]


@register
class BnFoldWeight(CudaOp):
    name = "bn_fold_weight"

    def plan_forward(self, ctx, xs, y, saved, ws, attrs, train):
        w, gamma, var = xs
        O = w.shape[0]
        g1, hg = _opt(ctx, gamma, w.dtype)
        g, b = grid1(w.size)
        return [Launch(K(w.dtype).fold_weight, g, b, (as_shape(w, (O, w.size // O)), g1, hg, var,
                                                      float(attrs["eps"]), as_shape(y, (O, w.size // O))))]


@register
class BnFoldBias(CudaOp):
    name = "bn_fold_bias"

    def plan_forward(self, ctx, xs, y, saved, ws, attrs, train):
        b, gamma, beta, mean, var = xs
        dt = mean.dtype
        b1, hb = _opt(ctx, b, dt)
        g1, hg = _opt(ctx, gamma, dt)
        be, hbe = _opt(ctx, beta, dt)
        g, bl = gridx(y.size)
        return [Launch(K(dt).fold_bias, g, bl, (b1, hb, g1, hg, be, hbe, mean, var, float(attrs["eps"]), y))]
