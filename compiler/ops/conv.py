"""Convolution ops: conv2d, conv_transpose2d (PyTorch semantics); local2d lives in local.py.

Attrs (canonical): ``stride`` (sh, sw), ``pad`` (top, bottom, left, right), ``dilation``
(dh, dw), ``groups``, ``act`` ("none" | "relu": fused epilogue y = relu(conv + bias); backward
masks dy by (y > 0) first), conv_transpose2d also ``output_padding`` (oh, ow).  conv2d may
carry ``pool`` (ph, pw), set by passes/fuse_maxpool.py: y is then the non-overlapping
(stride = window) floor-mode max pool of act(conv + bias), argmax saved as maxpool2d saves it
(flat index within the conv-output plane); CPU wide-row kernels only.  conv2d may also take
a fourth input ``residual`` (same shape as y, set by passes/fuse_residual.py):
y = act(conv + bias + residual), its gradient the masked dy; CPU wide-row kernels only.

CPU kernels, chosen per layer (measured; see conv_wide.py for the numbers):
* ungrouped stride-1 and stride-2 convs (every conv of LeNet and ResNet): "wide-row"
  implicit GEMM in compiler/ops/conv_wide.py (no im2col, no col2im; a register-blocked
  LLVM micro-kernel for forward, dX and, where the channels allow, dW, else BLAS per tap,
  called from inside nogil kernels; batch split over two threads); its 3x3 stride-1 pad-1
  convs run row Winograd F(4,3) (compiler/ops/conv_wino.py: half the multiplies);
* everything else (grouped, other strides, conv_transpose2d) below: im2col
  over a chunk of images (njit, serial) + one BLAS GEMM per group from Python with a
  preallocated ``out=`` (DESIGN §5: np.dot from Python was 2x faster than inside njit),
  then an njit epilogue (bias + act, scatter into NCHW).  The chunk size
  (``chunk_images``) keeps the column buffer under ``COLS_BUDGET`` elements; conv2d's
  batch is split over ``parallel.WORKERS`` threads (own scratch and dW/db accumulators).
Backward per chunk: gather dY (masked) into (O, nb*P) and accumulate db; dW += dY·colsᵀ;
dcols = Wᵀ·dY; dX = col2im(dcols).  Only grads whose ``dxs`` entry is not None are computed.
Depthwise convs (groups == C, any channel multiplier) skip im2col and the G tiny GEMMs:
direct njit loops, for stride 1 on zero-padded "wide" rows so that every tap is one long
contiguous axpy / dot (workspace: two padded planes and one wide plane).
"""
from __future__ import annotations

import functools

import numpy as np

from compiler.codegen.kernel_cache import load_kernels
from compiler.ops import conv_wide, parallel
from compiler.ops.base import Op, register_op, stand_in

COLS_BUDGET = 1 << 18   # im2col elements per chunk (1 MiB f32: stays in L2 between im2col and GEMM)



@functools.lru_cache(maxsize=None)   # load_kernels re-renders and hashes (~0.2 ms): once per variant
def kernels(act="none"):
    """The conv kernel module for ``act``; act-free kernels come from the "none" variant."""
    return load_kernels("conv", act=act)


@functools.lru_cache(maxsize=None)
def direct_kernels(act="none"):
    """local2d and depthwise kernels (templates/conv_direct.py.j2)."""
    return load_kernels("conv_direct", act=act)


def conv_attrs(attrs):
    sh, sw = attrs.get("stride", (1, 1))
    pt, pb, pl, pr = attrs.get("pad", (0, 0, 0, 0))
    dh, dw = attrs.get("dilation", (1, 1))
    return sh, sw, pt, pb, pl, pr, dh, dw, attrs.get("groups", 1), attrs.get("act", "none")


def conv_out_hw(H, W, kh, kw, attrs):
    sh, sw, pt, pb, pl, pr, dh, dw, _, _ = conv_attrs(attrs)
    return ((H + pt + pb - dh * (kh - 1) - 1) // sh + 1,
            (W + pl + pr - dw * (kw - 1) - 1) // sw + 1)


def chunk_images(N, per_image):
    """Images per chunk so that the column buffer holds at most COLS_BUDGET elements."""
    return int(max(1, min(N, COLS_BUDGET // max(per_image, 1))))


def relu_mask(dy, y, act):
    return dy * (y > 0) if act == "relu" else dy


def _act(y, act):
    return np.maximum(y, 0) if act == "relu" else y


def ref_conv(x, w, b, attrs):
    """Plain numpy conv2d (cross-correlation, PyTorch layout), bias, act."""
    sh, sw, pt, pb, pl, pr, dh, dw, G, act = conv_attrs(attrs)
    N, C, H, W = x.shape
    O, Cg, kh, kw = w.shape
    OH, OW = conv_out_hw(H, W, kh, kw, attrs)
    Og = O // G
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    y = np.zeros((N, O, OH, OW), dtype=x.dtype)
    for g in range(G):
        for ki in range(kh):
            for kj in range(kw):
                patch = xp[:, g * Cg:(g + 1) * Cg, ki * dh:ki * dh + sh * (OH - 1) + 1:sh,
                           kj * dw:kj * dw + sw * (OW - 1) + 1:sw]
                y[:, g * Og:(g + 1) * Og] += np.einsum("nchw,oc->nohw", patch,
                                                       w[g * Og:(g + 1) * Og, :, ki, kj])
    if b is not None:
        y += b[None, :, None, None]
    return _act(y, act)


def ref_conv_grads(x, w, dz, attrs):
    """(dx, dw) of the plain conv (no bias/act) given dz = dL/d(conv output)."""
    sh, sw, pt, pb, pl, pr, dh, dw_, G, _ = conv_attrs(attrs)
    N, C, H, W = x.shape
    O, Cg, kh, kw = w.shape
    OH, OW = dz.shape[2:]
    Og = O // G
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for g in range(G):
        dzg = dz[:, g * Og:(g + 1) * Og]
        for ki in range(kh):
            for kj in range(kw):
                sl = (slice(None), slice(g * Cg, (g + 1) * Cg),
                      slice(ki * dh, ki * dh + sh * (OH - 1) + 1, sh),
                      slice(kj * dw_, kj * dw_ + sw * (OW - 1) + 1, sw))
                dw[g * Og:(g + 1) * Og, :, ki, kj] = np.einsum("nchw,nohw->oc", xp[sl], dzg)
                dxp[sl] += np.einsum("nohw,oc->nchw", dzg, w[g * Og:(g + 1) * Og, :, ki, kj])
    return dxp[:, :, pt:pt + H, pl:pl + W], dw


def _parts(N, macs):
    """Batch ranges, one per thread when the conv is big enough to pay the hand-off."""
    return parallel.split(N, parallel.WORKERS if macs >= conv_wide.PAR_MIN_MACS else 1)


def _dot_acc(a, b, out, tmp, first):
    """out (+)= a @ b without allocating: the first chunk writes out, later ones go via tmp."""
    if first:
        np.dot(a, b, out=out)
    else:
        np.dot(a, b, out=tmp)
        out += tmp


@register_op
class Conv2d(Op):
    """conv2d: x (N,C,H,W), weight (O, C/groups, kh, kw), bias (O,)?, residual (N,O,OH,OW)?
    -> y (N,O,OH,OW) (pooled by attrs["pool"] when present)."""
    name = "conv2d"
    inputs = ("x", "weight", "bias?", "residual?")

    def out_shape(self, in_shapes, attrs):
        N, C, H, W = in_shapes[0]
        O, _, kh, kw = in_shapes[1]
        OH, OW = conv_out_hw(H, W, kh, kw, attrs)
        if "pool" in attrs:
            ph, pw = attrs["pool"]
            return (N, O, OH // ph, OW // pw)
        return (N, O, OH, OW)

    def saved_specs(self, in_shapes, attrs):
        if "pool" in attrs:
            return {"argmax": (self.out_shape(in_shapes, attrs), "int32")}
        return {}

    def _geom(self, in_shapes, attrs):
        N, C, H, W = in_shapes[0]
        O, Cg, kh, kw = in_shapes[1]
        OH, OW = conv_out_hw(H, W, kh, kw, attrs)
        P = OH * OW
        K = C * kh * kw
        return N, C, O, Cg, kh, kw, OH, OW, P, K, chunk_images(-(-N // parallel.WORKERS), K * P)

    @staticmethod
    def depthwise(in_shapes, attrs):
        """groups == C (one input channel per group): direct loops instead of G tiny GEMMs."""
        G = attrs.get("groups", 1)
        return G > 1 and in_shapes[1][1] == 1 and G == in_shapes[0][1]

    def workspace(self, in_shapes, attrs):
        if self.depthwise(in_shapes, attrs):
            if tuple(attrs.get("stride", (1, 1))) != (1, 1):
                return {}
            _, _, kh, kw = in_shapes[1]
            OH, OW = conv_out_hw(*in_shapes[0][2:], kh, kw, attrs)
            dh, dw = attrs.get("dilation", (1, 1))
            Wp, Hp = OW + dw * (kw - 1), OH + dh * (kh - 1)
            n = Hp * Wp + dw * (kw - 1) + 1     # + the tail read by the last wide row's taps
            return {"xpad": (n,), "dxpad": (n,), "wide": (OH * Wp,)}
        if conv_wide.usable(in_shapes[0], in_shapes[1], attrs):
            return conv_wide.workspace(in_shapes[0], in_shapes[1], attrs)
        N, C, O, Cg, kh, kw, OH, OW, P, K, nb = self._geom(in_shapes, attrs)
        T = parallel.WORKERS     # one scratch set per thread (see _parts)
        return {"cols": (T * K * nb * P,), "gemm": (T * O * nb * P,), "dw": (2 * T * O * Cg * kh * kw,),
                "db2": (T * O,)}

    def ref_forward(self, xs, attrs, train=False, rng=None):
        r = _residual(xs)
        if r is not None:        # act(conv + bias + residual)
            z = ref_conv(xs[0], xs[1], xs[2], dict(attrs, act="none")) + r
            return _act(z, attrs.get("act", "none")), {}
        y = ref_conv(xs[0], xs[1], xs[2], attrs)
        if "pool" in attrs:      # conv, then maxpool2d's own reference
            return _maxpool_ref().ref_forward([y], _pool_attrs(attrs))
        return y, {}

    def ref_backward(self, xs, y, saved, dy, attrs):
        x, w, b = xs[:3]
        dz = relu_mask(dy, y, attrs.get("act", "none"))
        if "pool" in attrs:      # the pooled gradient lands on each window's argmax
            N, O = y.shape[:2]
            OH, OW = conv_out_hw(*x.shape[2:], *w.shape[2:], attrs)
            full = np.zeros((N, O, OH, OW), dtype=dz.dtype)
            dz = _maxpool_ref().ref_backward([full], y, saved, dz, _pool_attrs(attrs))[0]
        dx, dw = ref_conv_grads(x, w, dz, attrs)
        grads = [dx, dw, None if b is None else dz.sum(axis=(0, 2, 3))]
        return grads + ([dz.copy() if xs[3] is not None else None] if len(xs) > 3 else [])

    def forward(self, xs, y, saved, ws, attrs, train, rng=None):
        x, w, b = xs[:3]
        if conv_wide.usable(x.shape, w.shape, attrs):
            conv_wide.forward(x, w, b, y, ws, attrs, saved.get("argmax"), train, _residual(xs))
            return
        _no_pool(attrs, xs)
        sh, sw, pt, pb, pl, pr, dh, dw, G, act = conv_attrs(attrs)
        N, C, O, Cg, kh, kw, OH, OW, P, K, nb = self._geom([x.shape, w.shape], attrs)
        k0, ka = kernels(), kernels(act)
        w2 = w.reshape(O, Cg * kh * kw)
        Og, Kg = O // G, Cg * kh * kw
        bias = stand_in(x.dtype) if b is None else b
        if self.depthwise([x.shape, w.shape], attrs):
            kd, args = direct_kernels(act), (x, w.reshape(O, kh, kw), bias, b is not None, y, O // C)
            if (sh, sw) == (1, 1):
                kd.dw_fwd_s1(*args, pt, pl, dh, dw, ws["xpad"], ws["wide"])
            else:
                kd.dw_fwd(*args, sh, sw, pt, pl, dh, dw)
            return
        y3 = y.reshape(N, O, P)
        parts = _parts(N, N * O * Kg * P)

        def run(p):
            for n0, m, cols, gm in _chunks(ws, p, parts[p], K, O, nb, P):
                k0.im2col(x, n0, m, cols, kh, kw, sh, sw, pt, pl, dh, dw, OH, OW)
                for g in range(G):
                    np.dot(w2[g * Og:(g + 1) * Og], cols[g * Kg:(g + 1) * Kg], out=gm[g * Og:(g + 1) * Og])
                ka.epilogue(gm, n0, m, bias, b is not None, y3)

        parallel.run(run, len(parts))

    def backward(self, xs, y, saved, dy, dxs, ws, attrs):
        x, w, b = xs[:3]
        dx, dW, db = dxs[:3]
        if conv_wide.usable(x.shape, w.shape, attrs):
            conv_wide.backward(x, w, y, dy, dx, dW, db, ws, attrs, saved.get("argmax"), _residual(dxs))
            return
        _no_pool(attrs, xs)
        sh, sw, pt, pb, pl, pr, dh, dw, G, act = conv_attrs(attrs)
        N, C, O, Cg, kh, kw, OH, OW, P, K, nb = self._geom([x.shape, w.shape], attrs)
        k0, ka = kernels(), kernels(act)
        if self.depthwise([x.shape, w.shape], attrs):
            d = stand_in(x.dtype)
            args = (x, w.reshape(O, kh, kw), y, dy, d.reshape(1, 1, 1, 1) if dx is None else dx,
                    d.reshape(1, 1, 1) if dW is None else dW.reshape(O, kh, kw), d if db is None else db,
                    dx is not None, dW is not None, db is not None, O // C)
            if (sh, sw) == (1, 1):
                direct_kernels(act).dw_bwd_s1(*args, pt, pl, dh, dw, ws["xpad"], ws["wide"], ws["dxpad"])
            else:
                direct_kernels(act).dw_bwd(*args, sh, sw, pt, pl, dh, dw)
            return
        w2 = w.reshape(O, Cg * kh * kw)
        Og, Kg = O // G, Cg * kh * kw
        parts = _parts(N, N * O * Kg * P)
        nparts = len(parts)
        dwp = ws["dw"].reshape(2, -1, O, Kg)      # [0]: per-thread dW accumulators, [1]: tmp
        db2 = ws["db2"].reshape(-1, O)
        want_db = db is not None
        db2[:nparts] = 0
        dy3, y3 = dy.reshape(N, O, P), y.reshape(N, O, P)

        def run(p):
            lo = parts[p][0]
            for n0, m, cols, gm in _chunks(ws, p, parts[p], K, O, nb, P):
                ka.gather(dy3, y3, n0, m, gm, db2[p], want_db)
                if dW is not None:
                    k0.im2col(x, n0, m, cols, kh, kw, sh, sw, pt, pl, dh, dw, OH, OW)
                    for g in range(G):
                        og, kg = slice(g * Og, (g + 1) * Og), slice(g * Kg, (g + 1) * Kg)
                        _dot_acc(gm[og], cols[kg].T, dwp[0, p, og], dwp[1, p, og], n0 == lo)
                if dx is not None:
                    for g in range(G):
                        og, kg = slice(g * Og, (g + 1) * Og), slice(g * Kg, (g + 1) * Kg)
                        np.dot(w2[og].T, gm[og], out=cols[kg])
                    k0.col2im(cols, n0, m, dx, kh, kw, sh, sw, pt, pl, dh, dw, OH, OW)

        parallel.run(run, nparts)
        if dW is not None:
            np.sum(dwp[0, :nparts], axis=0, out=dW.reshape(O, Kg))
        if want_db:
            np.sum(db2[:nparts], axis=0, out=db)


def _no_pool(attrs, xs=()):
    # passes/fuse_maxpool.py and fuse_residual.py fuse only convs the wide kernels run
    if "pool" in attrs or _residual(xs) is not None:
        raise ValueError("conv2d with a fused pool or residual runs on the wide-row kernels only")


def _residual(xs):
    return xs[3] if len(xs) > 3 else None


def _maxpool_ref():
    from compiler.ops import OPS
    return OPS["maxpool2d"]


def _pool_attrs(attrs):
    ph, pw = attrs["pool"]
    return {"kernel": (ph, pw), "stride": (ph, pw), "pad": (0, 0, 0, 0), "dilation": (1, 1), "ceil_mode": False}


def _chunks(ws, p, part, K, O, nb, P):
    """Image chunks of worker ``p``'s batch part: (first image, count, column view (K, m·P),
    GEMM view (O, m·P)), the views carved from that worker's slice of the workspace."""
    lo, hi = part
    cbuf = ws["cols"][p * K * nb * P:(p + 1) * K * nb * P]
    gbuf = ws["gemm"][p * O * nb * P:(p + 1) * O * nb * P]
    for n0 in range(lo, hi, nb):
        m = min(nb, hi - n0)
        yield n0, m, cbuf[:K * m * P].reshape(K, m * P), gbuf[:O * m * P].reshape(O, m * P)


def convt_out_hw(H, W, kh, kw, attrs):
    sh, sw, pt, pb, pl, pr, dh, dw, _, _ = conv_attrs(attrs)
    oph, opw = attrs.get("output_padding", (0, 0))
    return ((H - 1) * sh - pt - pb + dh * (kh - 1) + oph + 1,
            (W - 1) * sw - pl - pr + dw * (kw - 1) + opw + 1)


@register_op
class ConvTranspose2d(Op):
    """conv_transpose2d: x (N,Cin,H,W), weight (Cin, Cout/groups, kh, kw), bias (Cout,)?
    -> y (N, Cout, OH, OW), OH = (H-1)*sh - pt - pb + dh*(kh-1) + output_padding_h + 1.

    PyTorch ConvTranspose2d semantics (the adjoint of conv2d with the same stride, padding,
    dilation and groups; output_padding adds rows/cols at the bottom/right).  Forward is
    conv2d's dX computation: per chunk cols = Wᵀ·x, y = col2im(cols), then bias + act.
    """
    name = "conv_transpose2d"
    inputs = ("x", "weight", "bias?")

    def out_shape(self, in_shapes, attrs):
        N, Cin, H, W = in_shapes[0]
        _, Coutg, kh, kw = in_shapes[1]
        return (N, Coutg * attrs.get("groups", 1)) + convt_out_hw(H, W, kh, kw, attrs)

    def _geom(self, in_shapes, attrs):
        N, Cin, H, W = in_shapes[0]
        _, Coutg, kh, kw = in_shapes[1]
        G = attrs.get("groups", 1)
        Cout = Coutg * G
        OH, OW = convt_out_hw(H, W, kh, kw, attrs)
        HW = H * W
        K = Cout * kh * kw
        return N, Cin, H, W, Cout, Coutg, kh, kw, OH, OW, HW, K, chunk_images(N, K * HW)

    def workspace(self, in_shapes, attrs):
        N, Cin, H, W, Cout, Coutg, kh, kw, OH, OW, HW, K, nb = self._geom(in_shapes, attrs)
        return {"cols": (K * nb * HW,), "xc": (Cin * nb * HW,), "dw": (Cin * Coutg * kh * kw,)}

    def ref_forward(self, xs, attrs, train=False, rng=None):
        x, w, b = xs
        sh, sw, pt, pb, pl, pr, dh, dw, G, act = conv_attrs(attrs)
        N, Cin, H, W = x.shape
        _, Cg, kh, kw = w.shape
        OH, OW = convt_out_hw(H, W, kh, kw, attrs)
        Ig = Cin // G
        full = np.zeros((N, Cg * G, max(OH + pt, (H - 1) * sh + dh * (kh - 1) + 1),
                         max(OW + pl, (W - 1) * sw + dw * (kw - 1) + 1)), dtype=x.dtype)
        for g in range(G):
            for ki in range(kh):
                for kj in range(kw):
                    full[:, g * Cg:(g + 1) * Cg, ki * dh:ki * dh + sh * (H - 1) + 1:sh,
                         kj * dw:kj * dw + sw * (W - 1) + 1:sw] += np.einsum(
                        "nchw,co->nohw", x[:, g * Ig:(g + 1) * Ig], w[g * Ig:(g + 1) * Ig, :, ki, kj])
        y = full[:, :, pt:pt + OH, pl:pl + OW].copy()
        if b is not None:
            y += b[None, :, None, None]
        return _act(y, act), {}

    def ref_backward(self, xs, y, saved, dy, attrs):
        x, w, b = xs
        sh, sw, pt, pb, pl, pr, dh, dw_, G, act = conv_attrs(attrs)
        N, Cin, H, W = x.shape
        _, Cg, kh, kw = w.shape
        OH, OW = y.shape[2:]
        Ig = Cin // G
        dz = relu_mask(dy, y, act)
        full = np.zeros((N, Cg * G, max(OH + pt, (H - 1) * sh + dh * (kh - 1) + 1),
                         max(OW + pl, (W - 1) * sw + dw_ * (kw - 1) + 1)), dtype=x.dtype)
        full[:, :, pt:pt + OH, pl:pl + OW] = dz
        dx = np.zeros_like(x)
        dw = np.zeros_like(w)
        for g in range(G):
            for ki in range(kh):
                for kj in range(kw):
                    d = full[:, g * Cg:(g + 1) * Cg, ki * dh:ki * dh + sh * (H - 1) + 1:sh,
                             kj * dw_:kj * dw_ + sw * (W - 1) + 1:sw]
                    gi = slice(g * Ig, (g + 1) * Ig)
                    dx[:, gi] += np.einsum("nohw,co->nchw", d, w[gi, :, ki, kj])
                    dw[gi, :, ki, kj] = np.einsum("nchw,nohw->co", x[:, gi], d)
        return [dx, dw, None if b is None else dz.sum(axis=(0, 2, 3))]

    def forward(self, xs, y, saved, ws, attrs, train, rng=None):
        x, w, b = xs
        sh, sw, pt, pb, pl, pr, dh, dw, G, act = conv_attrs(attrs)
        N, Cin, H, W, Cout, Cg, kh, kw, OH, OW, HW, K, nb = self._geom([x.shape, w.shape], attrs)
        k0, ka = kernels(), kernels(act)
        Ig, Kg = Cin // G, Cg * kh * kw
        w2 = w.reshape(Cin, Kg)
        x3, y3 = x.reshape(N, Cin, HW), y.reshape(N, Cout, OH * OW)
        bias = stand_in(x.dtype) if b is None else b
        for n0 in range(0, N, nb):
            m = min(nb, N - n0)
            cols = ws["cols"][:K * m * HW].reshape(K, m * HW)
            xc = ws["xc"][:Cin * m * HW].reshape(Cin, m * HW)
            k0.gather(x3, x3, n0, m, xc, bias, False)
            for g in range(G):
                ig, kg = slice(g * Ig, (g + 1) * Ig), slice(g * Kg, (g + 1) * Kg)
                np.dot(w2[ig].T, xc[ig], out=cols[kg])
            # col2im's geometry is that of the conv y -> x: "input" y (OH, OW), "output" (H, W)
            k0.col2im(cols, n0, m, y, kh, kw, sh, sw, pt, pl, dh, dw, H, W)
            ka.bias_act_inplace(y3, n0, m, bias, b is not None)

    def backward(self, xs, y, saved, dy, dxs, ws, attrs):
        x, w, b = xs
        dx, dW, db = dxs
        sh, sw, pt, pb, pl, pr, dh, dw, G, act = conv_attrs(attrs)
        N, Cin, H, W, Cout, Cg, kh, kw, OH, OW, HW, K, nb = self._geom([x.shape, w.shape], attrs)
        k0, ka = kernels(), kernels(act)
        Ig, Kg = Cin // G, Cg * kh * kw
        w2 = w.reshape(Cin, Kg)
        dW2 = None if dW is None else dW.reshape(Cin, Kg)
        tmp = ws["dw"].reshape(Cin, Kg)
        x3 = x.reshape(N, Cin, HW)
        if db is not None:
            ka.bias_grad(dy.reshape(N, Cout, OH * OW), y.reshape(N, Cout, OH * OW), db)
        if dx is None and dW is None:
            return
        d0 = stand_in(x.dtype)
        for n0 in range(0, N, nb):
            m = min(nb, N - n0)
            cols = ws["cols"][:K * m * HW].reshape(K, m * HW)
            xc = ws["xc"][:Cin * m * HW].reshape(Cin, m * HW)
            ka.im2col_act(dy, y, n0, m, cols, kh, kw, sh, sw, pt, pl, dh, dw, H, W)
            if dW is not None:
                k0.gather(x3, x3, n0, m, xc, d0, False)
                for g in range(G):
                    ig, kg = slice(g * Ig, (g + 1) * Ig), slice(g * Kg, (g + 1) * Kg)
                    _dot_acc(xc[ig], cols[kg].T, dW2[ig], tmp[ig], n0 == 0)
            if dx is not None:
                for g in range(G):
                    ig, kg = slice(g * Ig, (g + 1) * Ig), slice(g * Kg, (g + 1) * Kg)
                    np.dot(w2[ig], cols[kg], out=xc[ig])
                k0.epilogue(xc, n0, m, d0, False, dx.reshape(N, Cin, HW))
