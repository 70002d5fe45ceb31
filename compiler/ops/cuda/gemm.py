"""CUDA launchers of the GEMM-shaped ops: conv2d (implicit GEMM, any stride / padding /
dilation / groups), conv_transpose2d (the adjoint, same kernels with roles swapped) and
linear (the tiled GEMM).  Kernels: templates/cuda_gemm.py.j2.

conv2d      forward  conv_fwd_r{1,2,4} (register-blocked; bias + relu epilogue)
            backward dW: conv_dw_r{1,2,4} split-K over the (n, oh, ow) columns + sum_splits,
                     dX: phase_weights + conv_fwd_r* per output phase (stride-1 convs);
                     dilated strided convs: conv_dx gather; db: per-channel block
                     reduction; dy is masked by
                     y > 0 while loading when the relu is fused.
conv_transpose2d  forward = the dX launches of the underlying conv (plus bias + relu);
            backward dX = conv_fwd_r* of the masked dy, dW = conv_dw_r* with x := masked dy,
                     dz := x.
linear      y = x W^T + b (gemm tb), dX = dz W, dW = dz^T x (gemm ta), db block reduction.
"""
from __future__ import annotations

from compiler.ops.conv import conv_attrs

from .common import SIM, TARGET_BLOCKS, TILE, CudaOp, Launch, as_shape, dummy, grid1, kernels, register
from .reduce import chan_reduce

T = "cuda_gemm"
# Split-K of the weight gradient: its GEMM is short and wide (M x N = O x Cg*KH*KW, K = the
# N*OH*OW columns), so without splits a ResNet-20 16-channel layer is 9 blocks of 256 threads
# on a 132-SM H100 (measured 1.07 ms a launch).  Splits are chosen to give about
# TARGET_BLOCKS blocks, each split at least MIN_CHUNK columns long.
MIN_CHUNK = 64 if SIM else 128
MIN_BLOCKS = 1 if SIM else 264           # conv_fwd_r*: at least 2 blocks per SM (H100: 132)
MAX_SPLITS = 256
RN = 4                  # columns per thread of conv_fwd_r* (the template's RN)


def _cdiv(a, b):
    return -(-a // b)


def _rows_per_thread(rows, col_blocks=None, groups=1):
    """Rows per thread of the register-blocked kernels: the smallest of 1, 2, 4 whose
    rows*TILE covers the GEMM's rows (the output channels of a group), else 4 -- but, given
    the column blocks, no more than leaves MIN_BLOCKS blocks (more rows per thread reuse
    more, fewer blocks hide less latency: ResNet-20's 64-channel 8x8 layers at B=128 would
    be 128 blocks with 4 rows)."""
    rm = 1 if rows <= TILE else 2 if rows <= 2 * TILE else 4
    while col_blocks is not None and rm > 1 and _cdiv(rows, rm * TILE) * col_blocks * groups < MIN_BLOCKS:
        rm //= 2
    return rm


def conv_forward(x, w, b, y, geo, relu, xm=None, ctx=None, rm=None, phase=None):
    """Launch of y = conv(x[masked by xm > 0], w) + b (relu); ``rm`` forces the rows per
    thread (tests).  ``phase`` = (OH, OW, sy, oy, sx, ox): compute an OH x OW output grid and
    write it to y[..., oh*sy + oy, ow*sx + ox] (one phase of a strided conv's dX)."""
    sh, sw, pt, pl, dh, dw, G = geo
    N, O = y.shape[:2]
    OH, OW, sy, oy, sx, ox = phase or (y.shape[2], y.shape[3], 1, 0, 1, 0)
    w2 = as_shape(w, (O, w.size // O))
    dt = y.dtype
    rm = rm or _rows_per_thread(O // G, _cdiv(N * OH * OW, RN * TILE), G)
    grid = (_cdiv(N * OH * OW, RN * TILE), _cdiv(O // G, rm * TILE), G)
    return Launch(getattr(kernels(T, dt), f"conv_fwd_r{rm}"), grid, (TILE, TILE),
                  (x, w2, b if b is not None else dummy(ctx, dt), b is not None, y, G, w.shape[2], w.shape[3],
                   sh, sw, pt, pl, dh, dw, bool(relu), xm if xm is not None else x, xm is not None,
                   OH, OW, sy, oy, sx, ox))


def conv_weight_grad(ctx, x, dz, dw, geo, zm=None, xm=None):
    """Launches of dw (O, Cg, KH, KW) = sum over columns of dz[masked] x im2col(x[masked])."""
    sh, sw, pt, pl, dh, dwl, G = geo
    N, O, OH, OW = dz.shape
    Kg = dw.size // O
    cols = N * OH * OW
    rm = _rows_per_thread(O // G)
    base = _cdiv(Kg, RN * TILE) * _cdiv(O // G, rm * TILE) * G          # blocks of one split
    S = max(1, min(MAX_SPLITS, _cdiv(TARGET_BLOCKS, base), cols // MIN_CHUNK))
    chunk = _cdiv(cols, S)
    S = _cdiv(cols, chunk)
    dt = dz.dtype
    k = kernels(T, dt)
    part = ctx.array((S, O, Kg), dt) if S > 1 else as_shape(dw, (1, O, Kg))
    grid = (_cdiv(Kg, RN * TILE), _cdiv(O // G, rm * TILE), G * S)
    out = [Launch(getattr(k, f"conv_dw_r{rm}"), grid, (TILE, TILE),
                  (x, xm if xm is not None else x, xm is not None, dz, zm if zm is not None else dz,
                   zm is not None, part, G, dw.shape[2], dw.shape[3], sh, sw, pt, pl, dh, dwl, chunk))]
    if S > 1:
        g, b = grid1(O * Kg)
        out.append(Launch(k.sum_splits, g, b, (part, as_shape(dw, (O, Kg)))))
    return out


def conv_input_grad(ctx, dz, w, dx, geo, zm=None, bias=None, relu=False):
    """Launches of dx = conv-adjoint(dz[masked by zm > 0]) (+ bias, relu).

    The adjoint of a conv is a sum of stride-1 convs of dz, one per output phase: dx rows
    ih = sh*u + r (r < sh) see only the taps ki = k0 + sh*j with k0 = (r + pt) mod sh, i.e.
    dx_r[u] = sum_j dz[u + q - j] w[k0 + sh*j], q = (r + pt - k0) / sh -- a stride-1 conv with
    those taps flipped and transposed (``phase_weights``) and padding KHp - 1 - q, run on the
    tiled implicit GEMM ``conv_fwd_r*`` writing every sh-th row from r (likewise columns).
    Stride 1 is the one-phase case (pad' = dilation*(K-1) - pad; dilation kept).  Measured on
    an H100, ResNet-20 B=128: the per-element gather (``conv_dx``, still used for dilated
    strided convs, and where a phase without taps would need the bias) took 1.31 ms for a
    16-channel 3x3 dX that conv_fwd does in 0.29 ms."""
    sh, sw, pt, pl, dh, dw, G = geo
    O, Cg, KH, KW = w.shape
    N, C, H, W = dx.shape
    dt = dx.dtype
    k = kernels(T, dt)
    if sh == 1 and sw == 1:      # padding may come out negative: conv_fwd_r* only offsets by it
        phases = [((H, 0, 0, KH, dh * (KH - 1) - pt), (W, 0, 0, KW, dw * (KW - 1) - pl))]
    elif dh == 1 and dw == 1:
        phases = [(_phase(H, sh, pt, KH, r), _phase(W, sw, pl, KW, c)) for r in range(sh) for c in range(sw)]
        phases = [(a, b) for a, b in phases if a[0] > 0 and b[0] > 0]      # phases with rows
    else:
        phases = None
    empty = phases is not None and any(a[3] == 0 or b[3] == 0 for a, b in phases)
    if phases is None or (empty and bias is not None):
        g, b = grid1(dx.size)
        return [Launch(k.conv_dx, g, b,
                       (dz, zm if zm is not None else dz, zm is not None, w, dx, G, sh, sw, pt, pl, dh, dw,
                        bias if bias is not None else dummy(ctx, dt), bias is not None, bool(relu)))]
    out = []
    if empty:                              # a phase without taps (1x1 stride 2): dx is 0 there
        from .pointwise import fill
        out.append(fill(dx, 0.0))
    for (rows, r, k0h, khp, padh), (cols, c, k0w, kwp, padw) in phases:
        if khp == 0 or kwp == 0:
            continue
        wt = ctx.array((C, O // G, khp, kwp), dt)
        g, b = grid1(wt.size)
        out += [Launch(k.phase_weights, g, b, (w, wt, G, k0h, k0w, sh, sw)),
                conv_forward(dz, wt, bias, dx, (1, 1, padh, padw, dh, dw, G), relu, xm=zm, ctx=ctx,
                             phase=(rows, cols, sh, r, sw, c))]
    return out


def _phase(n, s, p, K, r):
    """One phase r of a stride-s adjoint along a dimension of n input positions:
    (rows u of dx at s*u + r, r, first tap k0, taps KHp, padding of the stride-1 conv)."""
    rows = -(-(n - r) // s)
    k0 = (r + p) % s
    taps = -(-(K - k0) // s) if k0 < K else 0
    q = (r + p - k0) // s
    return rows, r, k0, taps, taps - 1 - q


def _geo(attrs):
    sh, sw, pt, pb, pl, pr, dh, dw, G, act = conv_attrs(attrs)
    return (sh, sw, pt, pl, dh, dw, G), act == "relu"


def bias_grad(dy, y, db, relu):
    N, C = dy.shape[:2]
    sh = (N, C, dy.size // (N * C))
    return chan_reduce(as_shape(dy, sh), as_shape(y, sh), db, 2 if relu else 0)


@register
class Conv2d(CudaOp):
    name = "conv2d"

    def plan_forward(self, ctx, xs, y, saved, ws, attrs, train):
        x, w, b = xs
        geo, relu = _geo(attrs)
        return [conv_forward(x, w, b, y, geo, relu, ctx=ctx)]

    def plan_backward(self, ctx, xs, y, saved, dy, dxs, ws, attrs):
        x, w, b = xs
        dx, dW, db = dxs
        geo, relu = _geo(attrs)
        zm = y if relu else None
        out = []
        if db is not None:
            out.append(bias_grad(dy, y, db, relu))
        if dW is not None:
            out += conv_weight_grad(ctx, x, dy, dW, geo, zm=zm)
        if dx is not None:
            out += conv_input_grad(ctx, dy, w, dx, geo, zm=zm)
        return out


@register
class ConvTranspose2d(CudaOp):
    name = "conv_transpose2d"

    def plan_forward(self, ctx, xs, y, saved, ws, attrs, train):
        x, w, b = xs
        geo, relu = _geo(attrs)
        return conv_input_grad(ctx, x, w, y, geo, bias=b, relu=relu)

    def plan_backward(self, ctx, xs, y, saved, dy, dxs, ws, attrs):
        x, w, b = xs
        dx, dW, db = dxs
        geo, relu = _geo(attrs)
        ym = y if relu else None
        out = []
        if db is not None:
            out.append(bias_grad(dy, y, db, relu))
        if dW is not None:    # the underlying conv: input = masked dy, output-gradient = x
            out += conv_weight_grad(ctx, dy, x, dW, geo, xm=ym)
        if dx is not None:
            out.append(conv_forward(dy, w, None, dx, geo, False, xm=ym, ctx=ctx))
        return out


def gemm(C, A, B, ta=False, tb=False, bias=None, relu=False, am=None, ctx=None):
    M, N = C.shape
    dt = C.dtype
    return Launch(kernels(T, dt).gemm, (_cdiv(N, TILE), _cdiv(M, TILE)), (TILE, TILE),
                  (A, B, C, ta, tb, bias if bias is not None else dummy(ctx, dt), bias is not None,
                   bool(relu), am if am is not None else A, am is not None))


@register
class Linear(CudaOp):
    name = "linear"

    def plan_forward(self, ctx, xs, y, saved, ws, attrs, train):
        x, w, b = xs
        return [gemm(y, x, w, tb=True, bias=b, relu=attrs.get("act", "none") == "relu", ctx=ctx)]

    def plan_backward(self, ctx, xs, y, saved, dy, dxs, ws, attrs):
        x, w, b = xs
        dx, dW, db = dxs
        relu = attrs.get("act", "none") == "relu"
        am = y if relu else None
        out = []
        if db is not None:
            out.append(bias_grad(dy, y, db, relu))
        if dx is not None:
            out.append(gemm(dx, dy, w, am=am, ctx=ctx))
        if dW is not None:
            out.append(gemm(dW, dy, x, ta=True, am=am, ctx=ctx))
        return out
