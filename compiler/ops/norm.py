"""Normalisation ops: batchnorm, layernorm, instancenorm, groupnorm, lrn.

Every op views its input as (N, C, S) (S = H*W, or 1 for (N, F) vectors) and runs the
kernels of ``templates/norm.py.j2`` (static config: fused relu, parallel).  The numpy
references below follow the seeds' formulas literally (BatchNorm: the lecture's full
training-mode backward through mu_B and sigma_B^2; running variance with the unbiased
m/(m-1) correction).
"""
from __future__ import annotations

import numpy as np

from compiler.ops import parallel
from compiler.ops.base import Op, register_op
from compiler.ops.elementwise import empty, kernels, opt, use_parallel, view

# Elements from which BatchNorm splits its channels over the worker threads (the kernels
# are nogil and own their channels); below it the hand-off costs more than it saves.
BN_SPLIT_MIN = 1 << 16
# The forward (two light passes) pays for the hand-off only from 4x that (measured, us, one
# thread vs two: (64, 32, 8, 8) 48 vs 59, (64, 64, 8, 8) 117 vs 76; backward at
# (64, 32, 8, 8) 120 vs 71)
BN_SPLIT_MIN_FWD = 1 << 18
# Planes smaller than this (H*W) run the "flat" BatchNorm kernels: each sample's (c, s) row
# as one contiguous loop with per-position accumulators, instead of per-channel loops of S
# elements.  Measured (fwd / bwd us): (64, 120) vectors 29 / 37 -> 14 / 26; but on image
# planes the accumulator traffic loses, (64, 32, 8, 8) 61 / 88 -> 108 / 223, (64, 64, 4, 4)
# 58 / 66 -> 71 / 116 -- so only BatchNorm1d-style (N, F) inputs take it.
FLAT_S = 2


def _channel_parts(x_size, C, split_min):
    if x_size < split_min or C < 2 or use_parallel(x_size, C):   # prange kernels: not from 2 threads
        return [(0, C)]
    return parallel.split(C, parallel.WORKERS)


def _flat(x_size, C, S) -> bool:
    """Whether BatchNorm takes the flat kernels (serial only: not when _kern picks prange)."""
    return S < FLAT_S and not use_parallel(x_size, C)


def _ncs(shape):
    N, C = shape[0], shape[1]
    S = int(np.prod(shape[2:], dtype=np.int64)) if len(shape) > 2 else 1
    return N, C, S


def _bshape(x, C):
    """Broadcast shape of a per-channel (C,) vector against x."""
    return (1, C) + (1,) * (x.ndim - 2)


def _kern(x_size: int, n_items: int, relu: bool = False):
    return kernels("norm", relu=bool(relu), parallel=use_parallel(x_size, n_items))


@register_op
class BatchNorm(Op):
    """Batch normalisation over N (and H, W) per channel; x (N, C, H, W) or (N, F).

    inputs: x, weight? (C,), bias? (C,), running_mean (C,), running_var (C,), residual? (the
    shape of x; set by passes/fuse_residual.py, CPU kernels only, image planes only):
    y = act(bn(x) + residual), its gradient the masked dy.
    attrs: eps (1e-5), momentum (0.1), act "none" | "relu" (fused epilogue y = max(0, bn(x))).
    train: batch statistics (biased variance for normalising); running_mean/running_var are
    UPDATED IN PLACE, r = (1-momentum)*r + momentum*stat, with the unbiased variance
    var*m/(m-1), m = N*H*W (PyTorch convention; m = 1 uses m/1).
    eval: running statistics.  global_stats (True): eval behaviour in training too (running
    statistics used and not updated; backward treats them as constants).
    saved: mean (C,), istd (C,) = 1/sqrt(var+eps) of the statistics used, train (1,) uint8.
    backward reads x, y (only with act=relu: dy is masked by y > 0) and saved.  After a
    train forward it is the full batch-statistics backward; after an eval forward (saved
    filled) it treats the running statistics as constants."""
    name = "batchnorm"
    inputs = ("x", "weight?", "bias?", "running_mean", "running_var", "residual?")

    def out_shape(self, in_shapes, attrs):
        return tuple(in_shapes[0])

    def saved_specs(self, in_shapes, attrs):
        C = in_shapes[0][1]
        return {"mean": ((C,), "float"), "istd": ((C,), "float"), "train": ((1,), "uint8")}

    def backward_reads(self, attrs):
        return ("x", "y") if attrs.get("act", "none") == "relu" else ("x",)

    def workspace(self, in_shapes, attrs):
        """The flat kernels' scratch (per-position float64 accumulators and coefficients),
        8 floats per (c, s) position: 4 hold 2 float64 (or 4, in a float64 net), 4 the
        coefficients; none for image planes."""
        N, C, S = _ncs(in_shapes[0])
        return {"flat": (8 * C * S,)} if _flat(N * C * S, C, S) else {}

    # --- reference -------------------------------------------------------------
    def ref_forward(self, xs, attrs, train=False, rng=None):
        x, w, b, rm, rv = xs[:5]
        r = _residual(xs)
        train = train and not attrs.get("global_stats", False)
        eps, mom = attrs.get("eps", 1e-5), attrs.get("momentum", 0.1)
        C = x.shape[1]
        axes = tuple(i for i in range(x.ndim) if i != 1)
        bs = _bshape(x, C)
        if train:
            mu = x.mean(axis=axes)
            var = ((x - mu.reshape(bs)) ** 2).mean(axis=axes)
            m = x.size // C
            rm[...] = (1 - mom) * rm + mom * mu
            rv[...] = (1 - mom) * rv + mom * var * m / max(m - 1, 1)
        else:
            mu, var = rm.copy(), rv.copy()
        istd = 1.0 / np.sqrt(var + eps)
        y = (x - mu.reshape(bs)) * istd.reshape(bs)
        if w is not None:
            y = y * w.reshape(bs)
        if b is not None:
            y = y + b.reshape(bs)
        if r is not None:
            y = y + r
        if attrs.get("act", "none") == "relu":
            y = np.maximum(y, 0)
        return y, {"mean": mu, "istd": istd, "train": np.array([train], dtype=np.uint8)}

    def ref_backward(self, xs, y, saved, dy, attrs):
        x, w = xs[0], xs[1]
        C = x.shape[1]
        axes = tuple(i for i in range(x.ndim) if i != 1)
        bs = _bshape(x, C)
        m = x.size // C
        g = dy * (y > 0) if attrs.get("act", "none") == "relu" else dy
        mu, istd = saved["mean"].reshape(bs), saved["istd"].reshape(bs)
        xmu = x - mu
        xhat = xmu * istd
        dxhat = g * w.reshape(bs) if w is not None else g
        if saved["train"][0]:
            # the seeds' formula; (var + eps)^(-3/2) = istd^3
            dvar = np.sum(dxhat * xmu, axis=axes, keepdims=True) * -0.5 * istd ** 3
            dmu = (np.sum(dxhat * -istd, axis=axes, keepdims=True)
                   + dvar * np.sum(-2.0 * xmu, axis=axes, keepdims=True) / m)
            dx = dxhat * istd + dvar * 2.0 * xmu / m + dmu / m
        else:
            dx = dxhat * istd
        dw = np.sum(g * xhat, axis=axes) if w is not None else None
        db = np.sum(g, axis=axes) if xs[2] is not None else None
        return [dx, dw, db, None, None] + ([None if _residual(xs) is None else g.copy()] if len(xs) > 5 else [])

    # --- CPU kernels -------------------------------------------------------------
    def forward(self, xs, y, saved, ws, attrs, train, rng=None):
        x, w, b, rm, rv = xs[:5]
        r = _residual(xs)
        train = train and not attrs.get("global_stats", False)
        N, C, S = _ncs(x.shape)
        dt = x.dtype
        k = _kern(x.size, C, attrs.get("act", "none") == "relu")
        x3, y3 = view(x, (N, C, S)), view(y, (N, C, S))
        r3 = x3 if r is None else view(r, (N, C, S))
        _no_flat_residual(x.size, C, S, r)
        w1, b1 = opt(w, (C,), dt), opt(b, (C,), dt)
        eps = float(attrs.get("eps", 1e-5))
        parts = _channel_parts(x.size, C, BN_SPLIT_MIN_FWD)
        if train:
            mom = float(attrs.get("momentum", 0.1))
            args = (x3, w1, b1, rm, rv, eps, mom, y3, saved["mean"], saved["istd"])
            if _flat(x.size, C, S):
                run = lambda p: k.bn_fwd_train_flat(*args, *parts[p], *_flat_scratch(ws, S, *parts[p]))
            else:
                run = lambda p: k.bn_fwd_train(*args, *parts[p], r3, r is not None)
        else:
            mean, istd = saved.get("mean", empty(dt)), saved.get("istd", empty(dt))
            run = lambda p: k.bn_fwd_eval(x3, w1, b1, rm, rv, eps, y3, mean, istd, *parts[p], r3, r is not None)
        parallel.run(run, len(parts))
        if "train" in saved:
            saved["train"][0] = bool(train)

    def backward(self, xs, y, saved, dy, dxs, ws, attrs):
        x, w = xs[0], xs[1]
        N, C, S = _ncs(x.shape)
        dt = x.dtype
        relu = attrs.get("act", "none") == "relu"
        k = _kern(x.size, C, relu)
        x3 = view(x, (N, C, S))
        y3 = view(y, (N, C, S)) if relu else x3
        args = (x3, opt(w, (C,), dt), y3, view(dy, (N, C, S)), saved["mean"], saved["istd"],
                bool(saved["train"][0]), opt(dxs[0], (N, C, S), dt), opt(dxs[1], (C,), dt),
                opt(dxs[2], (C,), dt))
        parts = _channel_parts(x.size, C, BN_SPLIT_MIN)
        dres = _residual(dxs)      # the residual's gradient slot
        _no_flat_residual(x.size, C, S, dres)
        if _flat(x.size, C, S):
            parallel.run(lambda p: k.bn_bwd_flat(*args, *parts[p], *_flat_scratch(ws, S, *parts[p])), len(parts))
        else:
            d3 = x3 if dres is None else view(dres, (N, C, S))
            parallel.run(lambda p: k.bn_bwd(*args, *parts[p], d3, dres is not None), len(parts))


def _residual(xs):
    return xs[5] if len(xs) > 5 else None


def _flat_scratch(ws, S, c0, c1):
    """Channels [c0, c1)'s share of ws["flat"]: (float64 accumulators, coefficients)."""
    f = ws["flat"]
    L, n = (c1 - c0) * S, f.shape[0] // 8       # n = C*S positions
    acc = f[:4 * n].view(np.float64)          # >= 2n float64 (4n of them in a float64 net)
    tmp = f[4 * n:]
    return acc[2 * c0 * S:2 * c0 * S + 2 * L], tmp[4 * c0 * S:4 * c0 * S + 4 * L]


def _no_flat_residual(size, C, S, r):
    # passes/fuse_residual.py fuses only BatchNorms on image planes (never the flat kernels)
    if r is not None and _flat(size, C, S):
        raise ValueError("batchnorm with a fused residual needs image planes (H*W >= 2)")


class _GroupFamily(Op):
    """Shared machinery: x viewed as (N, Cv, Sv) split into G groups of Cv//G channels;
    statistics per (n, group); affine per channel v (weight/bias flattened to (Cv,)).
    saved (and workspace, used when saved is absent): mean, rstd (N, G).
    backward reads x and saved."""
    inputs = ("x", "weight?", "bias?")

    def layout(self, shape, attrs):
        """-> (N, Cv, Sv, G, affine_shape)."""
        raise NotImplementedError

    def out_shape(self, in_shapes, attrs):
        self.layout(in_shapes[0], attrs)   # validates
        return tuple(in_shapes[0])

    def saved_specs(self, in_shapes, attrs):
        N, _, _, G, _ = self.layout(in_shapes[0], attrs)
        return {"mean": ((N, G), "float"), "rstd": ((N, G), "float")}

    def workspace(self, in_shapes, attrs):
        N, _, _, G, _ = self.layout(in_shapes[0], attrs)
        return {"mean": (N, G), "rstd": (N, G)}

    def backward_reads(self, attrs):
        return ("x",)

    def ref_forward(self, xs, attrs, train=False, rng=None):
        x, w, b = xs
        N, Cv, Sv, G, ashape = self.layout(x.shape, attrs)
        x3 = x.reshape(N, G, -1)
        mu = x3.mean(axis=2, keepdims=True)
        var = ((x3 - mu) ** 2).mean(axis=2, keepdims=True)
        rstd = 1.0 / np.sqrt(var + attrs.get("eps", 1e-5))
        y = ((x3 - mu) * rstd).reshape(N, Cv, Sv)
        if w is not None:
            y = y * w.reshape(1, Cv, 1)
        if b is not None:
            y = y + b.reshape(1, Cv, 1)
        return y.reshape(x.shape), {"mean": mu[:, :, 0], "rstd": rstd[:, :, 0]}

    def ref_backward(self, xs, y, saved, dy, attrs):
        x, w, b = xs
        N, Cv, Sv, G, ashape = self.layout(x.shape, attrs)
        mu, rstd = saved["mean"][:, :, None], saved["rstd"][:, :, None]
        xhat = ((x.reshape(N, G, -1) - mu) * rstd)
        dy3 = dy.reshape(N, Cv, Sv)
        gh = (dy3 * w.reshape(1, Cv, 1) if w is not None else dy3).reshape(N, G, -1)
        dx = rstd * (gh - gh.mean(axis=2, keepdims=True)
                     - xhat * (gh * xhat).mean(axis=2, keepdims=True))
        xh3 = xhat.reshape(N, Cv, Sv)
        dw = np.sum(dy3 * xh3, axis=(0, 2)).reshape(ashape) if w is not None else None
        db = np.sum(dy3, axis=(0, 2)).reshape(ashape) if b is not None else None
        return [dx.reshape(x.shape), dw, db]

    def forward(self, xs, y, saved, ws, attrs, train, rng=None):
        x, w, b = xs
        N, Cv, Sv, G, _ = self.layout(x.shape, attrs)
        dt = x.dtype
        st = saved if "mean" in saved else ws
        k = _kern(x.size, N * G)
        k.gn_fwd(view(x, (N, Cv, Sv)), opt(w, (Cv,), dt), opt(b, (Cv,), dt), G,
                 float(attrs.get("eps", 1e-5)), view(y, (N, Cv, Sv)), st["mean"], st["rstd"])

    def backward(self, xs, y, saved, dy, dxs, ws, attrs):
        x, w, b = xs
        N, Cv, Sv, G, _ = self.layout(x.shape, attrs)
        dt = x.dtype
        k = _kern(x.size, N * G)
        k.gn_bwd(view(x, (N, Cv, Sv)), opt(w, (Cv,), dt), view(dy, (N, Cv, Sv)), saved["mean"],
                 saved["rstd"], G, opt(dxs[0], (N, Cv, Sv), dt), opt(dxs[1], (Cv,), dt),
                 opt(dxs[2], (Cv,), dt))


@register_op
class LayerNorm(_GroupFamily):
    """nn.LayerNorm(x.shape[1:]): statistics per sample over all non-batch dims; weight?
    and bias? have shape x.shape[1:] (elementwise affine).  attrs eps (1e-5)."""
    name = "layernorm"

    def layout(self, shape, attrs):
        D = int(np.prod(shape[1:], dtype=np.int64))
        return shape[0], D, 1, 1, tuple(shape[1:])

    # own kernels: the group kernels' per-channel affine loop would run with S = 1 (9x slower)
    def forward(self, xs, y, saved, ws, attrs, train, rng=None):
        x, w, b = xs
        N, D = x.shape[0], x.size // x.shape[0]
        st = saved if "mean" in saved else ws
        _kern(x.size, N).ln_fwd(view(x, (N, D)), opt(w, (D,), x.dtype), opt(b, (D,), x.dtype),
                                float(attrs.get("eps", 1e-5)), view(y, (N, D)), st["mean"], st["rstd"])

    def backward(self, xs, y, saved, dy, dxs, ws, attrs):
        x, w, b = xs
        N, D = x.shape[0], x.size // x.shape[0]
        dt = x.dtype
        _kern(x.size, N).ln_bwd(view(x, (N, D)), opt(w, (D,), dt), view(dy, (N, D)), saved["mean"],
                                saved["rstd"], opt(dxs[0], (N, D), dt), opt(dxs[1], (D,), dt),
                                opt(dxs[2], (D,), dt))


@register_op
class InstanceNorm(_GroupFamily):
    """nn.InstanceNorm2d semantics (no running statistics, so train == eval): statistics per
    (n, c) over H, W; optional per-channel weight?/bias? (C,) (PyTorch's affine=True).
    attrs eps (1e-5)."""
    name = "instancenorm"

    def layout(self, shape, attrs):
        N, C, S = _ncs(shape)
        return N, C, S, C, (C,)


@register_op
class GroupNorm(_GroupFamily):
    """nn.GroupNorm(groups, C): statistics per (n, group of C//groups channels) over those
    channels and H, W; per-channel weight?/bias? (C,).  attrs groups, eps (1e-5)."""
    name = "groupnorm"

    def layout(self, shape, attrs):
        N, C, S = _ncs(shape)
        G = int(attrs["groups"])
        if G < 1 or C % G:
            raise ValueError(f"groupnorm: {C} channels not divisible into {G} groups")
        return N, C, S, G, (C,)


@register_op
class LRN(Op):
    """torch.nn.LocalResponseNorm(size, alpha, beta, k) across channels:
    scale_c = k + alpha/size * sum_{c' = c - size//2}^{c + (size-1)//2} x_{c'}^2 (zero padded),
    y = x * scale^-beta.  attrs size, alpha (1e-4), beta (0.75), k (1.0).
    saved "scale" (shape of x); backward reads x, y, saved."""
    name = "lrn"

    def out_shape(self, in_shapes, attrs):
        return tuple(in_shapes[0])

    def saved_specs(self, in_shapes, attrs):
        return {"scale": (tuple(in_shapes[0]), "float")}

    def backward_reads(self, attrs):
        return ("x", "y")

    @staticmethod
    def _params(attrs):
        return (int(attrs["size"]), float(attrs.get("alpha", 1e-4)), float(attrs.get("beta", 0.75)),
                float(attrs.get("k", 1.0)))

    @staticmethod
    def _window_sum(a, before, after, size):
        pad = [(0, 0), (before, after)] + [(0, 0)] * (a.ndim - 2)
        ap = np.pad(a, pad)
        C = a.shape[1]
        return sum(ap[:, i:i + C] for i in range(size))

    def ref_forward(self, xs, attrs, train=False, rng=None):
        x = xs[0]
        size, alpha, beta, k = self._params(attrs)
        scale = k + alpha / size * self._window_sum(x * x, size // 2, (size - 1) // 2, size)
        return x * scale ** -beta, {"scale": scale}

    def ref_backward(self, xs, y, saved, dy, attrs):
        x = xs[0]
        size, alpha, beta, k = self._params(attrs)
        scale = saved["scale"]
        t = dy * y / scale                       # dy_c * x_c * scale_c^(-beta-1)
        ts = self._window_sum(t, (size - 1) // 2, size // 2, size)   # over c with j in win(c)
        return [dy * scale ** -beta - 2.0 * alpha * beta / size * x * ts]

    def forward(self, xs, y, saved, ws, attrs, train, rng=None):
        x = xs[0]
        N, C, S = _ncs(x.shape)
        size, alpha, beta, k = self._params(attrs)
        y3 = view(y, (N, C, S))
        scale = view(saved["scale"], (N, C, S)) if "scale" in saved else y3
        _kern(x.size * size, N).lrn_fwd(view(x, (N, C, S)), size, alpha, beta, k, y3, scale)

    def backward(self, xs, y, saved, dy, dxs, ws, attrs):
        if dxs[0] is None:
            return
        x = xs[0]
        N, C, S = _ncs(x.shape)
        size, alpha, beta, k = self._params(attrs)
        sh = (N, C, S)
        _kern(x.size * size, N).lrn_bwd(view(x, sh), view(y, sh), view(dy, sh),
                                        view(saved["scale"], sh), size, alpha, beta, view(dxs[0], sh))
