"""Pooling ops: maxpool2d, avgpool2d, global_pool, fractional_maxpool2d, maxout.

Attrs (canonical): ``kernel`` (kh, kw), ``stride`` (sh, sw), ``pad`` (top, bottom, left,
right), ``dilation`` (dh, dw) (maxpool only), ``ceil_mode``, ``count_include_pad``
(avgpool).  Output sizes follow PyTorch's pooling_output_shape (with ceil_mode, a last
window that would start in the bottom/right padding is dropped).  Max-type ops save int32
argmax indices (flat h*W + w within the plane; maxout: the index within the group) in
train mode for backward.  Kernels: templates/pool.py.j2 (serial njit).
"""
from __future__ import annotations

import functools

import numpy as np

from compiler.codegen.kernel_cache import load_kernels
from compiler.ops import parallel
from compiler.ops.base import Op, register_op

_DUMMY = {}


def _dummy_i32(ndim):
    d = _DUMMY.get(ndim)
    if d is None:
        d = _DUMMY[ndim] = np.zeros((1,) * ndim, dtype=np.int32)
    return d


@functools.lru_cache(maxsize=None)   # load_kernels re-renders and hashes (~0.2 ms): once per variant
def kernels():
    return load_kernels("pool")


def pool_out(size, k, s, p0, p1, d, ceil_mode):
    """PyTorch pooling_output_shape with pads (p0 before, p1 after)."""
    num = size + p0 + p1 - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)
    out = num // s + 1
    if ceil_mode and (out - 1) * s >= size + p0:
        out -= 1
    return out


def _pattrs(attrs):
    kh, kw = attrs["kernel"]
    sh, sw = attrs.get("stride") or (kh, kw)
    pt, pb, pl, pr = attrs.get("pad", (0, 0, 0, 0))
    dh, dw = attrs.get("dilation", (1, 1))
    return kh, kw, sh, sw, pt, pb, pl, pr, dh, dw, bool(attrs.get("ceil_mode", False))


def _pool_shape(in_shape, attrs):
    N, C, H, W = in_shape
    kh, kw, sh, sw, pt, pb, pl, pr, dh, dw, cm = _pattrs(attrs)
    return (N, C, pool_out(H, kh, sh, pt, pb, dh, cm), pool_out(W, kw, sw, pl, pr, dw, cm))


POOL_SPLIT_MIN = 1 << 16   # input elements from which the batch is split over the worker threads


def _batch_parts(x):
    if x.size < POOL_SPLIT_MIN or x.shape[0] < 2:
        return [(0, x.shape[0])]
    return parallel.split(x.shape[0], parallel.WORKERS)


def _argmax_bwd(dy, arg, dx):
    N, C = dx.shape[:2]
    k, dy3, a3, dx3 = kernels(), dy.reshape(N, C, -1), arg.reshape(N, C, -1), dx.reshape(N, C, -1)
    parts = _batch_parts(dx)
    parallel.run(lambda p: k.argmax_bwd(dy3[slice(*parts[p])], a3[slice(*parts[p])], dx3[slice(*parts[p])]),
                 len(parts))


def _ref_argmax_bwd(x, dy, arg):
    N, C = x.shape[:2]
    dx = np.zeros((N, C, x.shape[2] * x.shape[3]), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            a, d = arg[n, c].reshape(-1), dy[n, c].reshape(-1)
            np.add.at(dx[n, c], a[a >= 0], d[a >= 0])
    return dx.reshape(x.shape)


@register_op
class MaxPool2d(Op):
    """maxpool2d: x (N,C,H,W) -> (N,C,OH,OW); padding is -inf; saved argmax (int32)."""
    name = "maxpool2d"

    def out_shape(self, in_shapes, attrs):
        return _pool_shape(in_shapes[0], attrs)

    def saved_specs(self, in_shapes, attrs):
        return {"argmax": (self.out_shape(in_shapes, attrs), "int32")}

    def ref_forward(self, xs, attrs, train=False, rng=None):
        x = xs[0]
        N, C, H, W = x.shape
        kh, kw, sh, sw, pt, pb, pl, pr, dh, dw, _ = _pattrs(attrs)
        _, _, OH, OW = self.out_shape([x.shape], attrs)
        y = np.empty((N, C, OH, OW), dtype=x.dtype)
        arg = np.empty((N, C, OH, OW), dtype=np.int32)
        flat = x.reshape(N, C, H * W)
        for i in range(OH):
            for j in range(OW):
                rows = [i * sh - pt + a * dh for a in range(kh)]
                cols = [j * sw - pl + b * dw for b in range(kw)]
                idx = np.array([r * W + c for r in rows if 0 <= r < H for c in cols if 0 <= c < W],
                               dtype=np.int64)
                if idx.size == 0:                           # no tap in the image: -inf, argmax -1
                    y[:, :, i, j], arg[:, :, i, j] = -np.inf, -1
                    continue
                vals = flat[:, :, idx]                      # window taps in row-major order
                k = np.argmax(vals, axis=2)                 # first maximum
                arg[:, :, i, j] = idx[k]
                y[:, :, i, j] = np.take_along_axis(vals, k[..., None], axis=2)[..., 0]
        return y, {"argmax": arg}   # the reference always returns it

    def ref_backward(self, xs, y, saved, dy, attrs):
        return [_ref_argmax_bwd(xs[0], dy, saved["argmax"])]

    def forward(self, xs, y, saved, ws, attrs, train, rng=None):
        kh, kw, sh, sw, pt, pb, pl, pr, dh, dw, _ = _pattrs(attrs)
        arg = saved["argmax"] if train else _dummy_i32(4)
        x = xs[0]
        if ((kh, kw, sh, sw, pt, pl, dh, dw) == (2, 2, 2, 2, 0, 0, 1, 1)
                and 2 * y.shape[2] <= x.shape[2] and 2 * y.shape[3] <= x.shape[3]):
            k, parts = kernels(), _batch_parts(x)
            a = (lambda s: arg[s]) if train else (lambda s: arg)
            parallel.run(lambda p: k.maxpool_2x2(x[slice(*parts[p])], y[slice(*parts[p])],
                                                 a(slice(*parts[p])), train), len(parts))
            return
        kernels().maxpool_fwd(x, y, arg, train, kh, kw, sh, sw, pt, pl, dh, dw)

    def backward(self, xs, y, saved, dy, dxs, ws, attrs):
        if dxs[0] is not None:
            _argmax_bwd(dy, saved["argmax"], dxs[0])


@register_op
class AvgPool2d(Op):
    """avgpool2d with PyTorch semantics (ceil_mode windows clipped at the padded border;
    count_include_pad divides by the clipped window size, else by the real pixel count)."""
    name = "avgpool2d"

    def out_shape(self, in_shapes, attrs):
        return _pool_shape(in_shapes[0], attrs)

    def _windows(self, x_shape, attrs):
        """Yields (oh, ow, h0, h1, w0, w1, divisor) per output position."""
        N, C, H, W = x_shape
        kh, kw, sh, sw, pt, pb, pl, pr, _, _, _ = _pattrs(attrs)
        cip = bool(attrs.get("count_include_pad", True))
        _, _, OH, OW = self.out_shape([x_shape], attrs)
        for i in range(OH):
            for j in range(OW):
                hs, ws = i * sh - pt, j * sw - pl
                he, we = min(hs + kh, H + pb), min(ws + kw, W + pr)
                h0, h1, w0, w1 = max(hs, 0), min(he, H), max(ws, 0), min(we, W)
                div = (he - hs) * (we - ws) if cip else (h1 - h0) * (w1 - w0)
                yield i, j, h0, h1, w0, w1, div

    def ref_forward(self, xs, attrs, train=False, rng=None):
        x = xs[0]
        y = np.zeros(self.out_shape([x.shape], attrs), dtype=x.dtype)
        for i, j, h0, h1, w0, w1, div in self._windows(x.shape, attrs):
            if h0 < h1 and w0 < w1:
                y[:, :, i, j] = x[:, :, h0:h1, w0:w1].sum(axis=(2, 3)) / div
        return y, {}

    def ref_backward(self, xs, y, saved, dy, attrs):
        x = xs[0]
        dx = np.zeros_like(x)
        for i, j, h0, h1, w0, w1, div in self._windows(x.shape, attrs):
            if h0 < h1 and w0 < w1:
                dx[:, :, h0:h1, w0:w1] += (dy[:, :, i, j] / div)[:, :, None, None]
        return [dx]

    def _run(self, x, y, dy, dx, backward, attrs):
        kh, kw, sh, sw, pt, pb, pl, pr, _, _, _ = _pattrs(attrs)
        kernels().avgpool(x, y, dy, dx, backward, kh, kw, sh, sw, pt, pb, pl, pr,
                          bool(attrs.get("count_include_pad", True)))

    def forward(self, xs, y, saved, ws, attrs, train, rng=None):
        self._run(xs[0], y, y, y, False, attrs)

    def backward(self, xs, y, saved, dy, dxs, ws, attrs):
        if dxs[0] is not None:
            self._run(dy, dy, dy, dxs[0], True, attrs)


@register_op
class GlobalPool(Op):
    """global_pool: attr mode "avg" | "max"; x (N,C,H,W) -> (N,C,1,1).  "max" saves the
    argmax (int32, flat within the plane) in train mode."""
    name = "global_pool"

    def out_shape(self, in_shapes, attrs):
        return tuple(in_shapes[0][:2]) + (1, 1)

    def saved_specs(self, in_shapes, attrs):
        if attrs.get("mode", "avg") == "max":
            return {"argmax": (self.out_shape(in_shapes, attrs), "int32")}
        return {}

    def ref_forward(self, xs, attrs, train=False, rng=None):
        x = xs[0]
        N, C = x.shape[:2]
        if attrs.get("mode", "avg") == "avg":
            return x.mean(axis=(2, 3), keepdims=True), {}
        flat = x.reshape(N, C, -1)
        arg = np.argmax(flat, axis=2).astype(np.int32)
        y = np.take_along_axis(flat, arg[..., None].astype(np.int64), axis=2)
        return y.reshape(N, C, 1, 1), {"argmax": arg.reshape(N, C, 1, 1)}

    def ref_backward(self, xs, y, saved, dy, attrs):
        x = xs[0]
        if attrs.get("mode", "avg") == "avg":
            return [np.broadcast_to(dy / (x.shape[2] * x.shape[3]), x.shape).copy()]
        return [_ref_argmax_bwd(x, dy, saved["argmax"])]

    def forward(self, xs, y, saved, ws, attrs, train, rng=None):
        x = xs[0]
        N, C = x.shape[:2]
        if attrs.get("mode", "avg") == "avg":
            kernels().global_avg(x.reshape(N, C, -1), y.reshape(N, C))
        else:
            arg = saved["argmax"].reshape(N, C) if train else _dummy_i32(2)
            kernels().global_max(x.reshape(N, C, -1), y.reshape(N, C), arg, train)

    def backward(self, xs, y, saved, dy, dxs, ws, attrs):
        dx = dxs[0]
        if dx is None:
            return
        N, C = dx.shape[:2]
        if attrs.get("mode", "avg") == "avg":
            kernels().global_avg_bwd(dy.reshape(N, C), dx.reshape(N, C, -1))
        else:
            _argmax_bwd(dy, saved["argmax"], dx)


def frac_intervals(s, size, pool, out):
    """torch's generate_intervals in the dtype of the sample ``s`` (a numpy scalar):
    start[i] = int((i + s) * alpha) - int(s * alpha), alpha = (size - pool) / (out - 1),
    and the last window starts at size - pool."""
    t = type(s)
    seq = np.empty(out, dtype=np.int64)
    if out > 1:
        alpha = t(size - pool) / t(out - 1)
        for i in range(out - 1):
            seq[i] = int((t(i) + s) * alpha) - int(s * alpha)
    seq[out - 1] = size - pool
    return seq


@register_op
class FractionalMaxPool2d(Op):
    """fractional_maxpool2d (Graham 2014; torch.nn.FractionalMaxPool2d): attrs ``kernel``
    (kh, kw) and ``out_size`` (oh, ow).  Train: one uniform sample pair per (n, c) plane,
    ``saved["u"]`` (N, C, 2) = rng.random (array dtype; [..., 0] drives columns, [..., 1]
    rows, as in torch), window starts from torch's interval formula (``frac_intervals``),
    pseudo-random overlapping kh x kw windows.  Eval: deterministic regions from u = 0.5
    (torch itself keeps sampling in eval; we use the centred fixed regions so inference is
    reproducible).  Saved argmax (int32) for backward (train only)."""
    name = "fractional_maxpool2d"
    random = True

    def out_shape(self, in_shapes, attrs):
        return tuple(in_shapes[0][:2]) + tuple(attrs["out_size"])

    def saved_specs(self, in_shapes, attrs):
        N, C = in_shapes[0][:2]
        return {"u": ((N, C, 2), "float"), "argmax": (self.out_shape(in_shapes, attrs), "int32")}

    def ref_forward(self, xs, attrs, train=False, rng=None):
        x = xs[0]
        N, C, H, W = x.shape
        kh, kw = attrs["kernel"]
        OH, OW = attrs["out_size"]
        t = x.dtype.type
        u = rng.random((N, C, 2), dtype=x.dtype) if train else np.full((N, C, 2), 0.5, x.dtype)
        y = np.empty((N, C, OH, OW), dtype=x.dtype)
        arg = np.empty((N, C, OH, OW), dtype=np.int32)
        for n in range(N):
            for c in range(C):
                rs = frac_intervals(t(u[n, c, 1]), H, kh, OH)
                cs = frac_intervals(t(u[n, c, 0]), W, kw, OW)
                for i in range(OH):
                    for j in range(OW):
                        win = x[n, c, rs[i]:rs[i] + kh, cs[j]:cs[j] + kw]
                        k = int(np.argmax(win))
                        y[n, c, i, j] = win.reshape(-1)[k]
                        arg[n, c, i, j] = (rs[i] + k // kw) * W + cs[j] + k % kw
        return y, {"u": u, "argmax": arg}

    def ref_backward(self, xs, y, saved, dy, attrs):
        return [_ref_argmax_bwd(xs[0], dy, saved["argmax"])]

    def forward(self, xs, y, saved, ws, attrs, train, rng=None):
        x = xs[0]
        N, C, H, W = x.shape
        kh, kw = attrs["kernel"]
        OH, OW = attrs["out_size"]
        t = x.dtype.type
        ah = t(H - kh) / t(OH - 1) if OH > 1 else t(0)
        aw = t(W - kw) / t(OW - 1) if OW > 1 else t(0)
        fih, fiw = np.arange(OH, dtype=x.dtype), np.arange(OW, dtype=x.dtype)   # tiny
        if train:
            u, arg = saved["u"], saved["argmax"]
            rng.random(out=u, dtype=u.dtype)
        else:
            u, arg = np.zeros((1, 1, 1), x.dtype), _dummy_i32(4)
        kernels().frac_maxpool_fwd(x, y, u, train, t(0.5), fih, fiw, ah, aw, kh, kw, arg, train)

    def backward(self, xs, y, saved, dy, dxs, ws, attrs):
        if dxs[0] is not None:
            _argmax_bwd(dy, saved["argmax"], dxs[0])


def _k(attrs):
    return int(attrs["k"] if "k" in attrs else attrs["pieces"])


@register_op
class Maxout(Op):
    """maxout (Goodfellow et al. 2013): attr ``k`` (``pieces`` accepted as an alias);
    x (N, C, ...) -> (N, C/k, ...), y[:, j] = max over x[:, j*k:(j+1)*k] (first maximum);
    saved argmax (int32) = index within the group."""
    name = "maxout"

    def out_shape(self, in_shapes, attrs):
        s = tuple(in_shapes[0])
        return (s[0], s[1] // _k(attrs)) + s[2:]

    def saved_specs(self, in_shapes, attrs):
        return {"argmax": (self.out_shape(in_shapes, attrs), "int32")}

    def ref_forward(self, xs, attrs, train=False, rng=None):
        x = xs[0]
        k = _k(attrs)
        x4 = x.reshape(x.shape[0], x.shape[1] // k, k, -1)
        arg = np.argmax(x4, axis=2)
        y = np.take_along_axis(x4, arg[:, :, None], axis=2)[:, :, 0]
        shape = self.out_shape([x.shape], attrs)
        return y.reshape(shape), {"argmax": arg.astype(np.int32).reshape(shape)}

    def ref_backward(self, xs, y, saved, dy, attrs):
        x = xs[0]
        k = _k(attrs)
        arg = saved["argmax"].reshape(x.shape[0], x.shape[1] // k, 1, -1)
        onehot = np.arange(k)[None, None, :, None] == arg
        return [(onehot * dy.reshape(arg.shape)).reshape(x.shape)]

    def forward(self, xs, y, saved, ws, attrs, train, rng=None):
        x = xs[0]
        k = _k(attrs)
        N, G = x.shape[0], x.shape[1] // k
        arg = saved["argmax"].reshape(N, G, -1) if train else _dummy_i32(3)
        kernels().maxout_fwd(x.reshape(N, G, k, -1), y.reshape(N, G, -1), arg, train)

    def backward(self, xs, y, saved, dy, dxs, ws, attrs):
        dx = dxs[0]
        if dx is not None:
            k = _k(attrs)
            N, G = dx.shape[0], dx.shape[1] // k
            kernels().maxout_bwd(dy.reshape(N, G, -1), saved["argmax"].reshape(N, G, -1),
                                 dx.reshape(N, G, k, -1))


_ADAPTIVE: dict = {}


def adaptive_matrix(n_in: int, n_out: int, dtype) -> np.ndarray:
    """(n_out, n_in) averaging matrix of adaptive average pooling along one axis: row i
    averages inputs floor(i*n_in/n_out) .. ceil((i+1)*n_in/n_out) - 1 (PyTorch's windows)."""
    key = (n_in, n_out, np.dtype(dtype).str)
    m = _ADAPTIVE.get(key)
    if m is None:
        m = np.zeros((n_out, n_in), dtype)
        for i in range(n_out):
            a, b = (i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)
            m[i, a:b] = 1.0 / (b - a)
        m.setflags(write=False)
        _ADAPTIVE[key] = m
    return m


@register_op
class AdaptiveAvgPool(Op):
    """adaptive_avgpool2d: x (N,C,H,W) -> (N,C,oh,ow), attr out_size.  Separable, so
    y = Ph . x . Pw^T with the averaging matrices Ph (oh,H), Pw (ow,W) of adaptive_matrix:
    two broadcast GEMMs (numpy matmul with out=, nothing to compile); backward
    dx = Ph^T . dy . Pw.  workspace "mid" (N*C*oh*W) holds the half-way product."""
    name = "adaptive_avgpool2d"

    def out_shape(self, in_shapes, attrs):
        return tuple(in_shapes[0][:2]) + tuple(attrs["out_size"])

    def workspace(self, in_shapes, attrs):
        N, C, H, W = in_shapes[0]
        return {"mid": (N * C * attrs["out_size"][0] * W,)}

    def _mats(self, x_shape, attrs, dtype):
        (oh, ow), (H, W) = attrs["out_size"], x_shape[2:]
        return adaptive_matrix(H, oh, dtype), adaptive_matrix(W, ow, dtype)

    def ref_forward(self, xs, attrs, train=False, rng=None):
        ph, pw = self._mats(xs[0].shape, attrs, xs[0].dtype)
        return np.einsum("ih,nchw,jw->ncij", ph, xs[0], pw), {}

    def ref_backward(self, xs, y, saved, dy, attrs):
        ph, pw = self._mats(xs[0].shape, attrs, xs[0].dtype)
        return [np.einsum("ih,ncij,jw->nchw", ph, dy, pw)]

    def forward(self, xs, y, saved, ws, attrs, train, rng=None):
        x = xs[0]
        N, C, H, W = x.shape
        ph, pw = self._mats(x.shape, attrs, x.dtype)
        mid = ws["mid"].reshape(N, C, ph.shape[0], W)
        np.matmul(ph, x, out=mid)              # (oh, H) @ (N, C, H, W) -> (N, C, oh, W)
        np.matmul(mid, pw.T, out=y)            # (N, C, oh, W) @ (W, ow) -> (N, C, oh, ow)

    def backward(self, xs, y, saved, dy, dxs, ws, attrs):
        dx = dxs[0]
        if dx is None:
            return
        N, C, H, W = dx.shape
        ph, pw = self._mats(dx.shape, attrs, dx.dtype)
        mid = ws["mid"].reshape(N, C, ph.shape[0], W)
        np.matmul(dy, pw, out=mid)             # (N, C, oh, ow) @ (ow, W) -> (N, C, oh, W)
        np.matmul(ph.T, mid, out=dx)           # (H, oh) @ (N, C, oh, W) -> (N, C, H, W)
