"""Dense ops: linear, dropconnect_linear, weight_norm.

linear / dropconnect_linear: x (N, F), weight (O, F) (PyTorch layout), bias (O,)?,
attr ``act`` ("none" | "relu", fused: y = relu(x W^T + b); backward masks dy by y > 0).
The GEMMs go through BLAS with preallocated outputs: from ``PAR_MIN_MACS`` multiply-adds
on, the output rows are split over the worker threads (``_gemm``: each part one BLAS call
by address, BLAS itself single-threaded as everywhere in a step), else one numpy call;
bias/act epilogue, dy masking and bias gradient are njit kernels from templates/dense.py.j2.
"""
from __future__ import annotations

import functools

import numpy as np

from compiler.codegen.kernel_cache import load_kernels
from compiler.ops import parallel
from compiler.ops.base import Op, register_op, stand_in

# From this many multiply-adds a dense GEMM splits its output rows over the two worker
# threads.  Measured forward + backward (ms, serial -> split): 64x400->120 (3M MACs) 0.14 ->
# 0.20 (the hand-off and per-part BLAS packing cost more), 64x400->400 0.43 -> 0.44,
# 64x800->500 1.06 -> 0.90, 128x1024->512 2.54 -> 1.76, 128x4096->4096 86 -> 50.
PAR_MIN_MACS = 16_000_000



@functools.lru_cache(maxsize=None)   # load_kernels re-renders and hashes (~0.2 ms): once per variant
def kernels(act="none"):
    return load_kernels("dense", act=act)


def _act(y, act):
    return np.maximum(y, 0) if act == "relu" else y


def _gemm(a, b, out, ta=False, tb=False):
    """out (M, N) = op(a) @ op(b), op = transpose where ta / tb; a, b, out C-contiguous 2-D.
    Large products split out's rows over parallel.WORKERS threads, each one BLAS ?gemm on
    raw addresses (compiler/ops/conv_wide.py's BLAS pointer, nogil); otherwise numpy."""
    M, N = out.shape
    K = a.shape[0] if ta else a.shape[1]
    if M * N * K < PAR_MIN_MACS or parallel.WORKERS < 2 or M < 2 or not (
            a.flags.c_contiguous and b.flags.c_contiguous and out.flags.c_contiguous):
        np.dot(a.T if ta else a, b.T if tb else b, out=out)
        return
    parts = parallel.split(M, parallel.WORKERS)
    from compiler.ops import conv_wide
    fn, gemm, isz = conv_wide.gemm_address(out.dtype.char), conv_wide.layout().gemm_rm, out.itemsize
    lda, ldb = a.shape[1], b.shape[1]
    one, zero = out.dtype.type(1), out.dtype.type(0)
    pa, pb, pc = a.ctypes.data, b.ctypes.data, out.ctypes.data

    def run(p):
        lo, hi = parts[p]      # rows lo..hi of op(a): row offset (N) or column offset (T) of a
        gemm(fn, 84 if ta else 78, 84 if tb else 78, hi - lo, N, K, one, pa + (lo if ta else lo * lda) * isz,
             lda, pb, ldb, zero, pc + lo * N * isz, N)

    parallel.run(run, len(parts))


def _linear_bwd_common(x, w_eff, y, dy, dxs, ws, act):
    """Shared backward of linear layers: dz = mask(dy); dx = dz W_eff; dW = dz^T x; db."""
    dx, dW, db = dxs
    ka = kernels(act)
    if act == "relu":
        dz = ws["dz"]
        ka.gather_rows(dy, y, dz, stand_in(x.dtype) if db is None else db, db is not None)
    else:
        dz = dy
        if db is not None:
            kernels().col_sum(dy, db)
    if dx is not None:
        _gemm(dz, w_eff, dx)
    if dW is not None:
        _gemm(dz, x, dW, ta=True)


@register_op
class Linear(Op):
    """linear: y = act(x @ weight.T + bias); x (N, F), weight (O, F), bias (O,)? -> (N, O)."""
    name = "linear"
    inputs = ("x", "weight", "bias?")

    def out_shape(self, in_shapes, attrs):
        return (in_shapes[0][0], in_shapes[1][0])

    def workspace(self, in_shapes, attrs):
        if attrs.get("act", "none") == "relu":
            return {"dz": self.out_shape(in_shapes, attrs)}
        return {}

    def ref_forward(self, xs, attrs, train=False, rng=None):
        x, w, b = xs
        y = x @ w.T
        if b is not None:
            y = y + b
        return _act(y, attrs.get("act", "none")), {}

    def ref_backward(self, xs, y, saved, dy, attrs):
        x, w, b = xs
        dz = dy * (y > 0) if attrs.get("act", "none") == "relu" else dy
        return [dz @ w, dz.T @ x, None if b is None else dz.sum(axis=0)]

    def forward(self, xs, y, saved, ws, attrs, train, rng=None):
        x, w, b = xs
        _gemm(x, w, y, tb=True)
        kernels(attrs.get("act", "none")).bias_act(y, stand_in(x.dtype) if b is None else b,
                                                   b is not None)

    def backward(self, xs, y, saved, dy, dxs, ws, attrs):
        x, w, b = xs
        _linear_bwd_common(x, w, y, dy, dxs, ws, attrs.get("act", "none"))


@register_op
class DropConnectLinear(Op):
    """dropconnect_linear (Wan et al., ICML 2013), attrs ``p`` (drop probability), ``act``.

    The seeds' regularisation pattern: *training* adds random noise, *testing* marginalises
    over it (y = E_z[f(x, z)]).  Implemented as *inverted* DropConnect (like the seeds'
    "inverted dropout", so test time is unchanged):

    * train: one Bernoulli keep-mask M over the weight matrix per forward call (shared by the
      whole mini-batch, as in common implementations), keep probability 1 - p, drawn as
      ``u = rng.random(out=saved["mask"])`` (array dtype), M = (u >= p);
      y = act(x @ (M ⊙ W / (1 - p)).T + b).  The bias is not dropped.
    * test: the expectation over M of the pre-activation: y = act(x @ W.T + b).
      (Wan et al.'s Gaussian moment-matching inference through the nonlinearity is not used.)

    saved["mask"] (O, F) float holds M / (1 - p); backward requires a train-mode forward:
    dx = dz @ (M ⊙ W / (1 - p)), dW = (dz^T x) ⊙ M / (1 - p), db = sum dz.
    """
    name = "dropconnect_linear"
    inputs = ("x", "weight", "bias?")
    random = True

    def out_shape(self, in_shapes, attrs):
        return (in_shapes[0][0], in_shapes[1][0])

    def saved_specs(self, in_shapes, attrs):
        return {"mask": (tuple(in_shapes[1]), "float")}

    def workspace(self, in_shapes, attrs):
        ws = {"w_eff": tuple(in_shapes[1])}
        if attrs.get("act", "none") == "relu":
            ws["dz"] = self.out_shape(in_shapes, attrs)
        return ws

    def ref_forward(self, xs, attrs, train=False, rng=None):
        x, w, b = xs
        p = float(attrs.get("p", 0.5))
        saved = {}
        if train:
            u = rng.random(w.shape, dtype=w.dtype)
            mask = np.where(u >= p, w.dtype.type(1.0 / (1.0 - p)), w.dtype.type(0))
            saved["mask"] = mask
            w = w * mask
        y = x @ w.T
        if b is not None:
            y = y + b
        return _act(y, attrs.get("act", "none")), saved

    def ref_backward(self, xs, y, saved, dy, attrs):
        x, w, b = xs
        m = saved.get("mask", 1)   # eval mode: the expectation, W itself
        dz = dy * (y > 0) if attrs.get("act", "none") == "relu" else dy
        return [dz @ (w * m), (dz.T @ x) * m, None if b is None else dz.sum(axis=0)]

    def forward(self, xs, y, saved, ws, attrs, train, rng=None):
        x, w, b = xs
        p = float(attrs.get("p", 0.5))
        if train:
            m = saved["mask"]
            rng.random(out=m, dtype=m.dtype)
            kernels().keep_mask(m, m.dtype.type(p), m.dtype.type(1.0 / (1.0 - p)))
            weff = ws["w_eff"]
            np.multiply(w, m, out=weff)
            w = weff
        _gemm(x, w, y, tb=True)
        kernels(attrs.get("act", "none")).bias_act(y, stand_in(x.dtype) if b is None else b,
                                                   b is not None)

    def backward(self, xs, y, saved, dy, dxs, ws, attrs):
        x, w, b = xs
        m = saved["mask"]
        weff = ws["w_eff"]
        if dxs[0] is not None:
            np.multiply(w, m, out=weff)
        _linear_bwd_common(x, weff, y, dy, dxs, ws, attrs.get("act", "none"))
        if dxs[1] is not None:
            dxs[1] *= m


@register_op
class WeightNorm(Op):
    """weight_norm (Salimans & Kingma 2016; PyTorch weight_norm with dim=0):
    inputs v (O, ...) and g (O, 1, ..., 1) (e.g. (O,1,1,1) for conv, (O,1) for linear);
    w = g * v / ||v||, the norm taken per output unit over all dims but 0.  Output: v's shape.
    Backward: dg = <dw, v>/||v||, dv = g/||v|| (dw - v <dw, v>/||v||^2)."""
    name = "weight_norm"
    inputs = ("v", "g")

    def out_shape(self, in_shapes, attrs):
        return tuple(in_shapes[0])

    def ref_forward(self, xs, attrs, train=False, rng=None):
        v, g = xs
        axes = tuple(range(1, v.ndim))
        nrm = np.sqrt(np.sum(v * v, axis=axes, keepdims=True))
        return g.reshape((-1,) + (1,) * (v.ndim - 1)) * v / nrm, {}

    def ref_backward(self, xs, y, saved, dy, attrs):
        v, g = xs
        axes = tuple(range(1, v.ndim))
        gg = g.reshape((-1,) + (1,) * (v.ndim - 1))
        nrm = np.sqrt(np.sum(v * v, axis=axes, keepdims=True))
        d = np.sum(dy * v, axis=axes, keepdims=True)
        dv = gg / nrm * (dy - v * d / nrm ** 2)
        return [dv, (d / nrm).reshape(g.shape)]

    def forward(self, xs, y, saved, ws, attrs, train, rng=None):
        v, g = xs
        O = v.shape[0]
        kernels().wn_fwd(v.reshape(O, -1), g.reshape(O), y.reshape(O, -1))

    def backward(self, xs, y, saved, dy, dxs, ws, attrs):
        v, g = xs
        dv, dg = dxs
        O = v.shape[0]
        d2 = stand_in(v.dtype).reshape(1, 1)
        kernels().wn_bwd(v.reshape(O, -1), g.reshape(O), dy.reshape(O, -1),
                         d2 if dv is None else dv.reshape(O, -1),
                         stand_in(v.dtype) if dg is None else dg.reshape(O), dv is not None, dg is not None)
