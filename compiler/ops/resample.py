"""Resampling / reshaping ops: upsample, center_crop, shortcut_pad, channel_shuffle,
channel_slice.

upsample matches torch.nn.functional.interpolate(size=out_size) -- or, with attr ``scale``
(set by lowering when floor(in*scale) is not exact), interpolate(scale_factor=scale), whose
coordinate scale is 1/scale -- for mode "nearest" (legacy
nearest: src = min(floor(dst * in/out), in - 1), in float32 as torch computes it) and
"bilinear" (align_corners true: src = dst*(in-1)/(out-1); false: src = max((dst+0.5)*in/out
- 0.5, 0); PyTorch's index/lambda guards).  Per-axis index and weight tables are tiny and
cached per (sizes, mode, dtype); the njit loops (templates/resample.py.j2) only gather and
scatter.  center_crop, shortcut_pad, channel_shuffle and channel_slice are strided copies
done with numpy slice assignment (no temporaries, nothing to compile).
"""
from __future__ import annotations

import functools

import numpy as np

from compiler.codegen.kernel_cache import load_kernels
from compiler.ops.base import Op, register_op

_TABLES: dict = {}


def nearest_index(size_in, size_out, scale_factor=None):
    """torch's nearest_idx: source index per output index (int64); with ``scale_factor``
    (interpolate(scale_factor=...)) the coordinate scale is 1/scale_factor, else in/out."""
    o = np.arange(size_out)
    if size_out == size_in:
        return o
    if size_out == 2 * size_in:
        return o >> 1
    scale = (np.float32(1.0 / scale_factor) if scale_factor
             else np.float32(size_in) / np.float32(size_out))
    return np.minimum(np.floor(o.astype(np.float32) * scale).astype(np.int64), size_in - 1)


def linear_tables(size_in, size_out, align_corners, dtype, scale_factor=None):
    """(i0, i1, l0, l1) per output index for linear interpolation along one axis, computed
    in ``dtype`` like torch's area_pixel_compute_scale / source_index / guard_index_and_lambda
    (``scale_factor``: 1/scale_factor is the coordinate scale unless align_corners)."""
    t = np.dtype(dtype).type
    if size_out == size_in:
        scale_factor = None      # torch leaves an axis of unchanged size alone, whatever the scale
    if align_corners:
        scale = t(size_in - 1) / t(size_out - 1) if size_out > 1 else t(0)
    elif scale_factor:
        scale = t(1.0 / scale_factor)
    else:
        scale = t(size_in) / t(size_out)
    dst = np.arange(size_out).astype(dtype)
    if align_corners:
        real = scale * dst
    else:
        real = np.maximum(scale * (dst + t(0.5)) - t(0.5), t(0))
    i0 = np.minimum(np.floor(real).astype(np.int64), size_in - 1)
    lam = np.clip(real - i0.astype(dtype), t(0), t(1)).astype(dtype)
    i1 = i0 + (i0 < size_in - 1)
    return i0, i1, (t(1) - lam).astype(dtype), lam


def _tables(H, W, attrs, dtype):
    mode = attrs.get("mode", "nearest")
    OH, OW = attrs["out_size"]
    ac = bool(attrs.get("align_corners", False))
    sh, sw = attrs.get("scale") or (None, None)
    key = (H, W, OH, OW, mode, ac, sh, sw, np.dtype(dtype).str)
    tab = _TABLES.get(key)
    if tab is None:
        if mode == "nearest":
            tab = (nearest_index(H, OH, sh), nearest_index(W, OW, sw))
        elif mode == "bilinear":
            tab = linear_tables(H, OH, ac, dtype, sh) + linear_tables(W, OW, ac, dtype, sw)
        else:
            raise ValueError(f"upsample: unknown mode {mode!r}")
        _TABLES[key] = tab
    return tab


@functools.lru_cache(maxsize=None)   # load_kernels re-renders and hashes (~0.2 ms): once per variant
def kernels():
    return load_kernels("resample")


@register_op
class Upsample(Op):
    """upsample: x (N,C,H,W) -> (N,C,oh,ow); attrs mode "nearest"|"bilinear", out_size
    (oh, ow), align_corners (bilinear only)."""
    name = "upsample"

    def out_shape(self, in_shapes, attrs):
        return tuple(in_shapes[0][:2]) + tuple(attrs["out_size"])

    def ref_forward(self, xs, attrs, train=False, rng=None):
        x = xs[0]
        tab = _tables(x.shape[2], x.shape[3], attrs, x.dtype)
        if len(tab) == 2:
            ih, iw = tab
            return x[:, :, ih][:, :, :, iw], {}
        h0, h1, a0, a1, w0, w1, b0, b1 = tab
        a0, a1 = a0[:, None], a1[:, None]
        y = (a0 * (b0 * x[:, :, h0][:, :, :, w0] + b1 * x[:, :, h0][:, :, :, w1])
             + a1 * (b0 * x[:, :, h1][:, :, :, w0] + b1 * x[:, :, h1][:, :, :, w1]))
        return y, {}

    def ref_backward(self, xs, y, saved, dy, attrs):
        x = xs[0]
        N, C, H, W = x.shape
        tab = _tables(H, W, attrs, x.dtype)
        dx = np.zeros_like(x)
        if len(tab) == 2:
            terms = [(tab[0], tab[1], 1.0)]
        else:
            h0, h1, a0, a1, w0, w1, b0, b1 = tab
            terms = [(h0, w0, a0[:, None] * b0), (h0, w1, a0[:, None] * b1),
                     (h1, w0, a1[:, None] * b0), (h1, w1, a1[:, None] * b1)]
        for ih, iw, wt in terms:
            ii, jj = np.meshgrid(ih, iw, indexing="ij")
            for n in range(N):
                for c in range(C):
                    np.add.at(dx[n, c], (ii, jj), dy[n, c] * wt)
        return [dx]

    def forward(self, xs, y, saved, ws, attrs, train, rng=None):
        x = xs[0]
        tab = _tables(x.shape[2], x.shape[3], attrs, x.dtype)
        if len(tab) == 2:
            kernels().nearest_fwd(x, y, *tab)
        else:
            kernels().bilinear_fwd(x, y, *tab)

    def backward(self, xs, y, saved, dy, dxs, ws, attrs):
        dx = dxs[0]
        if dx is None:
            return
        tab = _tables(dx.shape[2], dx.shape[3], attrs, dx.dtype)
        if len(tab) == 2:
            kernels().nearest_bwd(dy, dx, *tab)
        else:
            kernels().bilinear_bwd(dy, dx, *tab)


@register_op
class CenterCrop(Op):
    """center_crop: x (N,C,H,W) -> x[:, :, top:top+oh, left:left+ow]; attrs offset
    (top, left) (computed by the checker, e.g. (H - oh)//2 for U-Net skip crops) and
    out_size (oh, ow)."""
    name = "center_crop"

    def out_shape(self, in_shapes, attrs):
        return tuple(in_shapes[0][:2]) + tuple(attrs["out_size"])

    def _sl(self, attrs):
        t, l = attrs["offset"]
        oh, ow = attrs["out_size"]
        return (slice(None), slice(None), slice(t, t + oh), slice(l, l + ow))

    def ref_forward(self, xs, attrs, train=False, rng=None):
        return xs[0][self._sl(attrs)].copy(), {}

    def ref_backward(self, xs, y, saved, dy, attrs):
        dx = np.zeros_like(xs[0])
        dx[self._sl(attrs)] = dy
        return [dx]

    def forward(self, xs, y, saved, ws, attrs, train, rng=None):
        y[...] = xs[0][self._sl(attrs)]

    def backward(self, xs, y, saved, dy, dxs, ws, attrs):
        if dxs[0] is not None:
            dxs[0][...] = 0
            dxs[0][self._sl(attrs)] = dy


@register_op
class ShortcutPad(Op):
    """shortcut_pad: the parameter-free ResNet "option A" shortcut (He et al. 2016, as in the
    widely used akamaster/pytorch_resnet_cifar10: F.pad(x[:, :, ::2, ::2], (0,0,0,0,
    planes//4, planes//4))).  attrs stride (sh, sw), out (channels): y = x[:, :, ::sh, ::sw]
    with zero channels added, lo = (out - C)//2 before and out - C - lo after (symmetric when
    out - C is even, e.g. 16 -> 32).  x (N,C,H,W) -> (N, out, ceil(H/sh), ceil(W/sw))."""
    name = "shortcut_pad"

    def out_shape(self, in_shapes, attrs):
        N, C, H, W = in_shapes[0]
        sh, sw = attrs.get("stride", (1, 1))
        return (N, attrs["out"], -(-H // sh), -(-W // sw))

    def _parts(self, C, attrs):
        sh, sw = attrs.get("stride", (1, 1))
        lo = (attrs["out"] - C) // 2
        return (slice(None), slice(None), slice(None, None, sh), slice(None, None, sw)), lo

    def ref_forward(self, xs, attrs, train=False, rng=None):
        x = xs[0]
        sl, lo = self._parts(x.shape[1], attrs)
        y = np.zeros(self.out_shape([x.shape], attrs), dtype=x.dtype)
        y[:, lo:lo + x.shape[1]] = x[sl]
        return y, {}

    def ref_backward(self, xs, y, saved, dy, attrs):
        x = xs[0]
        sl, lo = self._parts(x.shape[1], attrs)
        dx = np.zeros_like(x)
        dx[sl] = dy[:, lo:lo + x.shape[1]]
        return [dx]

    def forward(self, xs, y, saved, ws, attrs, train, rng=None):
        x = xs[0]
        C = x.shape[1]
        sl, lo = self._parts(C, attrs)
        y[:, :lo] = 0
        y[:, lo + C:] = 0
        y[:, lo:lo + C] = x[sl]

    def backward(self, xs, y, saved, dy, dxs, ws, attrs):
        dx = dxs[0]
        if dx is not None:
            sl, lo = self._parts(dx.shape[1], attrs)
            dx[...] = 0
            dx[sl] = dy[:, lo:lo + dx.shape[1]]


def _shuffle_views(src, dst, groups):
    """(source, destination) 4-D views for channel_shuffle with ``groups``: y[n, j*g + i, s] =
    x[n, i*(C/g) + j, s] is dst (N, C/g, g, S) = src (N, g, C/g, S) transposed on axes 1, 2."""
    N, C = src.shape[:2]
    S = src.size // (N * C) if N * C else 0
    g = int(groups)
    return src.reshape(N, g, C // g, S).transpose(0, 2, 1, 3), dst.reshape(N, C // g, g, S)


@register_op
class ChannelShuffle(Op):
    """channel_shuffle: x (N, C, ...) -> same shape, torch.nn.functional.channel_shuffle:
    x.view(N, g, C/g, ...).transpose(1, 2).reshape(N, C, ...); attr groups g (divides C).
    The backward is the inverse permutation: a shuffle with C/g groups."""
    name = "channel_shuffle"

    def out_shape(self, in_shapes, attrs):
        return tuple(in_shapes[0])

    def ref_forward(self, xs, attrs, train=False, rng=None):
        x = xs[0]
        N, C = x.shape[:2]
        g = int(attrs["groups"])
        y = x.reshape(N, g, C // g, -1).transpose(0, 2, 1, 3).reshape(x.shape)
        return np.ascontiguousarray(y), {}

    def ref_backward(self, xs, y, saved, dy, attrs):
        N, C = dy.shape[:2]
        g = int(attrs["groups"])
        dx = dy.reshape(N, C // g, g, -1).transpose(0, 2, 1, 3).reshape(dy.shape)
        return [np.ascontiguousarray(dx)]

    def forward(self, xs, y, saved, ws, attrs, train, rng=None):
        src, dst = _shuffle_views(xs[0], y, attrs["groups"])
        np.copyto(dst, src)

    def backward(self, xs, y, saved, dy, dxs, ws, attrs):
        dx = dxs[0]
        if dx is not None:
            src, dst = _shuffle_views(dy, dx, dx.shape[1] // int(attrs["groups"]))
            np.copyto(dst, src)


@register_op
class ChannelSlice(Op):
    """channel_slice: x (N, C, ...) -> x[:, start:stop] (N, stop - start, ...); attrs start,
    stop (0 <= start < stop <= C, resolved by the checker).  The backward writes dy into
    those channels of dx and zeros elsewhere; two slices of one tensor (ShuffleNet's split)
    get their gradients summed by autodiff's fan-out accumulation."""
    name = "channel_slice"

    def out_shape(self, in_shapes, attrs):
        return (in_shapes[0][0], int(attrs["stop"]) - int(attrs["start"])) + tuple(in_shapes[0][2:])

    def ref_forward(self, xs, attrs, train=False, rng=None):
        return xs[0][:, int(attrs["start"]):int(attrs["stop"])].copy(), {}

    def ref_backward(self, xs, y, saved, dy, attrs):
        dx = np.zeros_like(xs[0])
        dx[:, int(attrs["start"]):int(attrs["stop"])] = dy
        return [dx]

    def forward(self, xs, y, saved, ws, attrs, train, rng=None):
        y[...] = xs[0][:, int(attrs["start"]):int(attrs["stop"])]

    def backward(self, xs, y, saved, dy, dxs, ws, attrs):
        dx = dxs[0]
        if dx is not None:
            a, b = int(attrs["start"]), int(attrs["stop"])
            dx[:, :a] = 0
            dx[:, b:] = 0
            dx[:, a:b] = dy
