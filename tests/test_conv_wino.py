"""Row-Winograd F(4,3) for 3x3 stride-1 pad-1 convs (compiler/ops/conv_wino.py,
templates/conv_wino.py.j2): the transforms against numpy, the path choice, and the conv op
(forward, dX, with bias / ReLU / fused residual, chunked and split over threads) against
the float64 reference in float32 and float64.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from opcheck import check_op  # noqa: E402

import compiler.ops.conv_wino as CWI  # noqa: E402


def conv(act="none", pad=(1, 1, 1, 1), stride=(1, 1)):
    return dict(stride=stride, pad=pad, dilation=(1, 1), groups=1, act=act)


def test_path_choice():
    s1 = conv()
    assert CWI.usable((128, 16, 32, 32), (16, 16, 3, 3), s1)
    assert CWI.usable((2, 4, 5, 12), (4, 4, 3, 3), conv(act="relu"))     # T = 3 tiles per row
    assert CWI.usable((128, 3, 32, 32), (16, 3, 3, 3), s1)               # a first layer: forward only
    assert not CWI.bwd_usable((16, 16, 32, 32), (4, 16, 3, 3), s1)       # backward: O >= BWD_MIN_OUT
    assert not CWI.usable((2, 16, 8, 6), (16, 16, 3, 3), s1)             # width not a multiple of 4:
    assert not CWI.usable((2, 16, 14, 14), (16, 16, 3, 3), s1)           # needs many channels (row-wise
    assert CWI.usable((2, 128, 14, 14), (128, 128, 3, 3), s1)            # transforms) and little junk
    assert CWI.usable((2, 256, 7, 7), (256, 256, 3, 3), s1)
    assert not CWI.usable((2, 256, 6, 6), (256, 256, 3, 3), s1)          # 8 columns for 6
    assert not CWI.usable((2, 16, 8, 8), (16, 16, 3, 3), conv(pad=(0, 0, 0, 0)))
    assert not CWI.usable((2, 16, 8, 8), (16, 16, 3, 3), conv(stride=(2, 2)))
    assert not CWI.usable((2, 16, 8, 8), (16, 16, 5, 5), conv(pad=(2, 2, 2, 2)))
    assert not CWI.usable((2, 16, 8, 8), (16, 16, 3, 3), dict(s1, pool=(2, 2)))
    assert not CWI.usable((2, 16, 8, 8), (16, 8, 3, 3), dict(s1, groups=2))


def _transform_ref(x, BT):
    """V[xi, row, t] = sum_j BT[xi, j] * xpad[row, 4t + j] for a (H, W) plane (zeros past W)."""
    H, W = x.shape
    T = -(-W // 4)
    xp = np.pad(x, ((0, 0), (1, 4 * T + 1 - W)))
    d = np.stack([xp[:, 4 * t:4 * t + 6] for t in range(T)], axis=1)       # (H, T, 6)
    return np.einsum("xj,htj->xht", np.array(BT), d).reshape(6, H * T)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("H,W", [(3, 4), (8, 8), (5, 12), (7, 20), (32, 32), (2, 72),
                                 (7, 7), (3, 14), (2, 1), (4, 70)])      # row by row: W % 4 != 0
def test_input_and_output_transforms(dtype, H, W):
    k = CWI.kernels()
    rng = np.random.default_rng(H * W)
    x = rng.standard_normal((H, W)).astype(dtype)
    mask = rng.standard_normal((H, W)).astype(dtype)
    T = -(-W // 4)
    nt = H * T
    for masked in (0, 1):
        V = np.full((6, nt + 3), 7, dtype)
        k.in_plane_at(x.ctypes.data, mask.ctypes.data, masked, nt, T, W, V.ctypes.data, V.shape[1], dtype(1))
        xm = np.where(mask > 0, x, 0) if masked else x
        np.testing.assert_allclose(V[:, :nt], _transform_ref(xm.astype(np.float64), k.BT), rtol=1e-5, atol=1e-5)
        assert np.all(V[:, nt:] == 7)                                       # nothing written past the plane
    M = rng.standard_normal((6, nt + 5)).astype(dtype)
    res = rng.standard_normal((H, W)).astype(dtype)
    for has_res, relu in ((0, 0), (1, 1), (0, 1)):
        y = np.full((H, W + 1), 9, dtype)        # one more column: nothing written past H*W
        k.out_plane_at(M.ctypes.data, M.shape[1], nt, T, W, y.ctypes.data, res.ctypes.data, has_res, dtype(0.5),
                       relu)
        ref = np.einsum("ix,xg->gi", np.array(k.AT), M[:, :nt].astype(np.float64)).reshape(H, 4 * T)[:, :W] + 0.5
        ref = ref + res if has_res else ref
        ref = np.maximum(ref, 0) if relu else ref
        np.testing.assert_allclose(y.reshape(-1)[:H * W], ref.reshape(-1), rtol=1e-5, atol=1e-5)
        assert np.all(y.reshape(-1)[H * W:] == 9)


CASES = [
    ([(3, 16, 8, 8), (16, 16, 3, 3), (16,)], conv(act="relu")),
    ([(2, 5, 5, 12), (7, 5, 3, 3), None], conv()),                   # T = 3, C and O not vector-sized
    ([(3, 6, 9, 8), (16, 6, 3, 3), (16,)], conv(act="relu")),        # dW on the transposed tap-GEMM
    ([(2, 32, 3, 20), (4, 32, 3, 3), (4,)], conv(act="relu")),       # O < 8: the micro-kernel's row rest
    ([(3, 16, 8, 8), (16, 16, 3, 3), (16,), (3, 16, 8, 8)], conv(act="relu")),    # fused residual
    ([(2, 12, 5, 8), (20, 12, 3, 3), (20,), (2, 20, 5, 8)], conv(act="relu")),    # dX only (dW wide)
    ([(2, 3, 6, 8), (8, 3, 3, 3), (8,)], conv(act="relu")),          # a first layer (C = 3)
    ([(2, 16, 4, 8), (1, 16, 3, 3), (1,)], conv()),                  # one output channel
]


@pytest.mark.parametrize("C,O,path", [(16, 8, "all"), (32, 8, "all"), (12, 8, "dx"), (20, 8, "dx"), (8, 8, "none"),
                                      (16, 4, "none")])
def test_backward_path_by_channels(monkeypatch, C, O, path):
    """C a multiple of 16: every gradient by Winograd; 12 <= C otherwise: dX only (dW on the
    wide kernels); fewer, or O < BWD_MIN_OUT: the wide kernels (measured faster there)."""
    used = []
    for name in ("backward", "dx_runner"):
        real = getattr(CWI, name)
        monkeypatch.setattr(CWI, name, lambda *a, _r=real, _n=name, **k: used.append(_n) or _r(*a, **k))
    check_op("conv2d", [(2, C, 4, 8), (O, C, 3, 3), (O,)], conv(act="relu"), gradcheck=False)
    assert used == {"all": ["backward"], "dx": ["dx_runner"], "none": []}[path]


ROWWISE = [    # W not a multiple of 4 (ROWWISE_MIN_CHANNELS lowered): the last tile of a row is junk
    ([(2, 16, 7, 7), (16, 16, 3, 3), (16,)], conv(act="relu")),
    ([(3, 16, 5, 14), (8, 16, 3, 3), None, (3, 8, 5, 14)], conv(act="relu")),
    ([(2, 12, 3, 10), (20, 12, 3, 3), (20,)], conv()),
]


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("shapes,attrs", CASES + ROWWISE, ids=[str(i) for i in range(len(CASES + ROWWISE))])
def test_wino_conv_op(monkeypatch, shapes, attrs, split):
    from compiler.ops import conv_wide, parallel
    monkeypatch.setattr(CWI, "ROWWISE_MIN_CHANNELS", 4)
    monkeypatch.setattr(CWI, "BWD_MIN_OUT", 1)       # the backward kernels on every O too
    assert CWI.usable(shapes[0], shapes[1], attrs)
    calls = []
    real = CWI.kernels()
    monkeypatch.setattr(CWI, "kernels", lambda: calls.append(1) or real)
    if split:        # two threads, 1-image chunks
        monkeypatch.setattr(conv_wide, "PAR_MIN_MACS", 0)
        monkeypatch.setattr(CWI, "WINO_BUDGET", 1)
        monkeypatch.setattr(parallel, "WORKERS", 2)
    for dtype, tol in ((np.float32, 1e-4), (np.float64, 1e-12)):
        res = check_op("conv2d", shapes, attrs, gradcheck=False, dtype=dtype, rtol=tol)
        assert res["fwd"] <= tol and res["bwd"] <= tol
        # dX alone (dW / db / dres not wanted) and dW alone
        check_op("conv2d", shapes, attrs, gradcheck=False, dtype=dtype, rtol=tol, needs=(0,))
        check_op("conv2d", shapes, attrs, gradcheck=False, dtype=dtype, rtol=tol, needs=(1,))
    assert calls, "the row-Winograd kernels were not used"


def test_switch_off_gives_the_wide_kernels(monkeypatch):
    """WINO = False: the same op on the wide-row kernels; both agree to float32 rounding."""
    shapes, attrs = CASES[0]
    on = check_op("conv2d", shapes, attrs, gradcheck=False)
    monkeypatch.setattr(CWI, "WINO", False)
    calls = []
    monkeypatch.setattr(CWI, "kernels", lambda: calls.append(1))
    off = check_op("conv2d", shapes, attrs, gradcheck=False)
    assert not calls and on["fwd"] <= 1e-5 and off["fwd"] <= 1e-5


@pytest.mark.parametrize("value,on", [("0", False), ("off", False), ("False", False), ("1", True), ("", True)])
def test_env_switch(monkeypatch, value, on):
    monkeypatch.setenv("NETSPEC_WINOGRAD", value)
    assert CWI._env_on() is on
