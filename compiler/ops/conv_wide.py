"""Stride-1 conv2d as "wide-row" implicit GEMM (kernels: templates/conv_wide.py.j2).

For stride 1 and groups 1, zero-padding a chunk of images into one (C, nb*Hp*Wp) matrix
makes every tap (ki, kj) a column shift of the same matrix, so the conv is kh*kw GEMMs on
strided views: no im2col (which cost ~2x the GEMM at 16 channels, measured) and, in
backward, no col2im: dX is the adjoint GEMM accumulated into shifted views of a padded
buffer (the "flipped weights" conv of DESIGN §5 without materialising the flip).  The GEMMs
are BLAS ?gemm called from inside the nogil kernels (address from scipy.linalg.cython_blas),
so each chunk is one Python call, and the batch is split over ``parallel.WORKERS`` threads,
each with its own scratch and its own dW/db accumulators (summed at the end).

Cost model: the GEMMs also compute Hp*Wp - OH*OW junk columns per image, so the path is
chosen only while that overhead is moderate (``usable``); otherwise conv.py keeps im2col +
BLAS.  Small GEMM depth (C=1..16) turned out not to matter: the im2col copy it saves is
what dominated (measured in the table above the constants).
"""
from __future__ import annotations

import functools

import numpy as np

from compiler.codegen.kernel_cache import load_kernels
from compiler.ops import parallel

WIDE_BUDGET = 1 << 15      # scratch elements (xpad + yw) per chunk: 128 KiB f32 (measured best: 1-2 images)
MIN_CHANNELS = 1           # measured: even C=1 (rank-1 GEMMs, LeNet conv1) beats im2col and
                           # direct numba loops (1.1 vs 1.5 vs 3.1 ms fwd, B=64)
MAX_WASTE = 2.5            # padded-plane / output-plane area above this: im2col wins (LeNet
                           # conv2, 14x14 -> 10x10, waste 1.96: wide 0.8 ms vs im2col 1.7 ms)
PAR_MIN_MACS = 2_000_000   # below this a second thread's hand-off costs more than it saves


@functools.lru_cache(maxsize=None)
def kernels(act="none"):
    return load_kernels("conv_wide", act=act)


@functools.lru_cache(maxsize=None)
def _gemm_addr(dtype_char: str) -> int:
    from numba.extending import get_cython_function_address
    return get_cython_function_address("scipy.linalg.cython_blas", {"f": "sgemm", "d": "dgemm"}[dtype_char])


def usable(x_shape, w_shape, attrs) -> bool:
    N, C, H, W = x_shape
    O, Cg, kh, kw = w_shape
    if tuple(attrs.get("stride", (1, 1))) != (1, 1) or attrs.get("groups", 1) != 1 or C < MIN_CHANNELS:
        return False
    pt, pb, pl, pr = attrs.get("pad", (0, 0, 0, 0))
    Hp, Wp = H + pt + pb, W + pl + pr
    dh, dw = attrs.get("dilation", (1, 1))
    OH, OW = Hp - dh * (kh - 1), Wp - dw * (kw - 1)
    return OH > 0 and OW > 0 and Hp * Wp <= MAX_WASTE * OH * OW


def _geom(x_shape, w_shape, attrs):
    N, C, H, W = x_shape
    O, _, kh, kw = w_shape
    pt, pb, pl, pr = attrs.get("pad", (0, 0, 0, 0))
    dh, dw = attrs.get("dilation", (1, 1))
    Hp, Wp = H + pt + pb, W + pl + pr
    S = Hp * Wp
    nparts = parallel.WORKERS
    per_part = -(-N // nparts)
    nb = int(max(1, min(per_part, WIDE_BUDGET // ((C + O) * S))))
    tail = dw * (kw - 1)
    return N, C, O, kh, kw, pt, pl, dh, dw, Hp, Wp, S, nb, tail


def workspace(x_shape, w_shape, attrs) -> dict:
    N, C, O, kh, kw, pt, pl, dh, dw, Hp, Wp, S, nb, tail = _geom(x_shape, w_shape, attrs)
    P = parallel.WORKERS
    return {"wide": (P * (C * (nb * S + tail) + O * nb * S),), "wt": (kh * kw * O * C,),
            "dwt": (P * kh * kw * O * C,), "db2": (P * O,)}


def _part_views(ws, p, C, O, nb, S, tail):
    """Part p's (xpad, yw) flat scratch (sliced to the chunk size by the caller)."""
    per = C * (nb * S + tail) + O * nb * S
    base = ws["wide"][p * per:(p + 1) * per]
    return base[:C * (nb * S + tail)], base[C * (nb * S + tail):]


def _parts(N, macs):
    return parallel.split(N, parallel.WORKERS if macs >= PAR_MIN_MACS else 1)


def forward(x, w, b, y, ws, attrs):
    act = attrs.get("act", "none")
    N, C, O, kh, kw, pt, pl, dh, dw, Hp, Wp, S, nb, tail = _geom(x.shape, w.shape, attrs)
    k0, ka = kernels(), kernels(act)
    fn = _gemm_addr(x.dtype.char)
    one = x.dtype.type(1)
    wt = ws["wt"].reshape(kh * kw, O, C)
    k0.taps_weights(w, wt)
    bias = b if b is not None else ws["db2"][:1]
    parts = _parts(N, N * O * C * kh * kw * y.shape[2] * y.shape[3])

    def run(p):
        lo, hi = parts[p]
        xflat, yflat = _part_views(ws, p, C, O, nb, S, tail)
        for n0 in range(lo, hi, nb):
            m = min(nb, hi - n0)
            xpad = xflat[:C * (m * S + tail)].reshape(C, m * S + tail)
            yw = yflat[:O * m * S].reshape(O, m * S)
            ka.wide_fwd(fn, x, n0, m, wt, bias, b is not None, y, xpad, yw, kh, kw, pt, pl, dh, dw, one)

    parallel.run(run, len(parts))


def backward(x, w, y, dy, dx, dW, db, ws, attrs):
    act = attrs.get("act", "none")
    N, C, O, kh, kw, pt, pl, dh, dw, Hp, Wp, S, nb, tail = _geom(x.shape, w.shape, attrs)
    k0, ka = kernels(), kernels(act)
    fn = _gemm_addr(x.dtype.char)
    one, zero = x.dtype.type(1), x.dtype.type(0)
    T = kh * kw
    wt = ws["wt"].reshape(T, O, C)
    k0.taps_weights(w, wt)
    parts = _parts(N, N * O * C * T * y.shape[2] * y.shape[3])
    dwt = ws["dwt"].reshape(-1, T, O, C)
    db2 = ws["db2"].reshape(-1, O)
    db2[:len(parts)] = 0
    want_dx, want_dw, want_db = dx is not None, dW is not None, db is not None
    dxk = dx if want_dx else y[:1]
    nparts = len(parts)

    def run(p):
        lo, hi = parts[p]
        xflat, yflat = _part_views(ws, p, C, O, nb, S, tail)
        for n0 in range(lo, hi, nb):
            m = min(nb, hi - n0)
            xpad = xflat[:C * (m * S + tail)].reshape(C, m * S + tail)
            yw = yflat[:O * m * S].reshape(O, m * S)
            ka.wide_bwd(fn, x, wt, y, dy, n0, m, dxk, want_dx, dwt[p], want_dw,
                        zero if n0 == lo else one, db2[p], want_db, kh, kw, pt, pl, dh, dw, xpad, yw, one)

    parallel.run(run, nparts)
    if want_dw:
        k0.taps_grad_finish(dwt, nparts, dW)
    if want_db:
        np.sum(db2[:nparts], axis=0, out=db)

