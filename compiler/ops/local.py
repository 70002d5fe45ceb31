"""local2d: locally connected layer (unshared weights), the conv family's odd one out.

Attrs: ``stride`` (sh, sw), ``pad`` (top, bottom, left, right), ``act`` (conv.py's
conventions; no dilation, no groups).  Kernels: templates/conv_direct.py.j2.
"""
from __future__ import annotations

import numpy as np

from compiler.ops.base import Op, register_op, stand_in
from compiler.ops.conv import _act, conv_attrs, direct_kernels, relu_mask


@register_op
class Local2d(Op):
    """local2d (locally connected, unshared weights): x (N,C,H,W),
    weight (OH, OW, O, C, kh, kw), bias (O, OH, OW)? -> y (N, O, OH, OW);
    y[n,o,i,j] = act(sum_{c,ki,kj} w[i,j,o,c,ki,kj] x_pad[n,c,i*sh+ki,j*sw+kj] + b[o,i,j]).
    Attrs stride, pad, act (no dilation, no groups).  Direct serial njit loops: these layers
    are small, and the weight block of a location is reused over the batch."""
    name = "local2d"
    inputs = ("x", "weight", "bias?")

    def out_shape(self, in_shapes, attrs):
        N = in_shapes[0][0]
        OH, OW, O = in_shapes[1][:3]
        return (N, O, OH, OW)

    def workspace(self, in_shapes, attrs):
        _, _, _, C, kh, kw = in_shapes[1]
        return {"patch": (C * kh * kw,), "dpatch": (C * kh * kw,)}

    def ref_forward(self, xs, attrs, train=False, rng=None):
        x, w, b = xs
        sh, sw, pt, pb, pl, pr, _, _, _, act = conv_attrs(attrs)
        OH, OW, O, C, kh, kw = w.shape
        xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
        y = np.zeros((x.shape[0], O, OH, OW), dtype=x.dtype)
        for i in range(OH):
            for j in range(OW):
                patch = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
                y[:, :, i, j] = np.einsum("nckl,ockl->no", patch, w[i, j])
        if b is not None:
            y += b[None]
        return _act(y, act), {}

    def ref_backward(self, xs, y, saved, dy, attrs):
        x, w, b = xs
        sh, sw, pt, pb, pl, pr, _, _, _, act = conv_attrs(attrs)
        OH, OW, O, C, kh, kw = w.shape
        H, W = x.shape[2:]
        dz = relu_mask(dy, y, act)
        xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
        dxp = np.zeros_like(xp)
        dw = np.zeros_like(w)
        for i in range(OH):
            for j in range(OW):
                sl = (slice(None), slice(None), slice(i * sh, i * sh + kh), slice(j * sw, j * sw + kw))
                dw[i, j] = np.einsum("nckl,no->ockl", xp[sl], dz[:, :, i, j])
                dxp[sl] += np.einsum("no,ockl->nckl", dz[:, :, i, j], w[i, j])
        return [dxp[:, :, pt:pt + H, pl:pl + W], dw, None if b is None else dz.sum(axis=0)]

    def forward(self, xs, y, saved, ws, attrs, train, rng=None):
        x, w, b = xs
        sh, sw, pt, pb, pl, pr, _, _, _, act = conv_attrs(attrs)
        OH, OW, O, C, kh, kw = w.shape
        bias = _dummy3(x.dtype) if b is None else b
        direct_kernels(act).local_fwd(x, w.reshape(OH, OW, O, C * kh * kw), bias, b is not None, y,
                               kh, kw, sh, sw, pt, pl, ws["patch"])

    def backward(self, xs, y, saved, dy, dxs, ws, attrs):
        x, w, b = xs
        dx, dw, db = dxs
        sh, sw, pt, pb, pl, pr, _, _, _, act = conv_attrs(attrs)
        OH, OW, O, C, kh, kw = w.shape
        d4 = _dummy4(x.dtype)
        direct_kernels(act).local_bwd(
            x, w.reshape(OH, OW, O, C * kh * kw), y, dy, d4 if dx is None else dx,
            d4 if dw is None else dw.reshape(OH, OW, O, C * kh * kw),
            _dummy3(x.dtype) if db is None else db, dx is not None, dw is not None, db is not None,
            kh, kw, sh, sw, pt, pl, ws["patch"], ws["dpatch"])


def _dummy3(dtype):
    return stand_in(dtype).reshape(1, 1, 1)


def _dummy4(dtype):
    return stand_in(dtype).reshape(1, 1, 1, 1)
