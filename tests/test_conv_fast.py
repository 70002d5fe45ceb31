"""The fast conv2d paths (compiler/ops/conv_wide.py, compiler/ops/parallel.py): wide-row
implicit GEMM for stride 1 (per-tap and kernel-row variants) and stride 2 (phase planes),
batch split over the worker threads, partial chunks, first-layer backward (no dX).

Kernels in float32 against the float64 reference (opcheck); shapes kept few and small.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from opcheck import check_op  # noqa: E402


def conv(stride=(1, 1), pad=(0, 0, 0, 0), dilation=(1, 1), act="none"):
    return dict(stride=stride, pad=pad, dilation=dilation, groups=1, act=act)


CASES = [
    # per-tap GEMMs (C*kw > ROWS_MAX_K), stride 1, dilation, asymmetric pad
    ([(3, 12, 9, 8), (5, 12, 3, 2), (5,)], conv(pad=(1, 0, 2, 1), dilation=(2, 1), act="relu")),
    # kernel-row variant (C*kw small), 5x5 LeNet-like
    ([(3, 2, 9, 9), (4, 2, 5, 5), (4,)], conv(pad=(2, 2, 2, 2), act="relu")),
    # stride 2 on phase planes: 3x3 pad 1 (ResNet), even kernel, odd sizes
    ([(3, 5, 9, 7), (6, 5, 3, 3), None], conv(stride=(2, 2), pad=(1, 1, 1, 1), act="relu")),
    ([(2, 4, 10, 9), (3, 4, 4, 2), (3,)], conv(stride=(2, 2), pad=(1, 0, 2, 1))),
    ([(2, 6, 11, 10), (5, 6, 5, 5), (5,)], conv(stride=(2, 2), pad=(2, 2, 2, 2), act="relu")),
    # padding shared between neighbouring rows / images (conv_wide._planes) only where
    # legal: bottom > top and right > left keep their own zeros, 3x3 with pads (2,1,1,0)
    ([(3, 12, 7, 6), (4, 12, 3, 3), (4,)], conv(pad=(0, 1, 0, 1), act="relu")),
    ([(3, 12, 7, 6), (4, 12, 3, 3), None], conv(pad=(2, 1, 1, 0))),
    # dW on the tap-GEMM (C a multiple of 16: transposed chunk, conv_wide.dw_tap), with
    # shared padding and with dilation + asymmetric pads
    ([(3, 16, 7, 6), (5, 16, 3, 3), (5,)], conv(pad=(1, 1, 1, 1), act="relu")),
    ([(2, 32, 6, 5), (3, 32, 3, 2), None], conv(pad=(0, 1, 2, 1), dilation=(2, 1))),
    # ... and on stride-2 phase planes (ResNet's 3x3 pad 1; an even kernel, odd sizes)
    ([(3, 16, 9, 7), (5, 16, 3, 3), (5,)], conv(stride=(2, 2), pad=(1, 1, 1, 1), act="relu")),
    ([(2, 16, 10, 9), (3, 16, 4, 2), None], conv(stride=(2, 2), pad=(1, 0, 2, 1))),
    # 48 channels: three column vectors per tap in the all-taps dW (vec_gemm), stride 1 and 2;
    # Inception-v3's asymmetric 1x7 kernel on the tap-GEMM dW
    ([(2, 48, 9, 11), (20, 48, 3, 3), (20,)], conv(pad=(1, 1, 1, 1), act="relu")),
    ([(3, 48, 10, 9), (7, 48, 3, 3), None], conv(stride=(2, 2), pad=(1, 1, 1, 1))),
    ([(2, 16, 9, 40), (16, 16, 1, 7), (16,)], conv(pad=(0, 0, 3, 3))),
    # 1x1 stride 2 (ResNet projections): one phase plane of four, dX zero on the others
    ([(3, 16, 9, 8), (5, 16, 1, 1), (5,)], conv(stride=(2, 2))),
    ([(2, 6, 10, 7), (4, 6, 1, 1), None], conv(stride=(2, 2), act="relu")),
    # rows wider than 8 floats: the vector epilogue and dY gather (conv_rows.py.j2
    # _epilogue_plane / _gather_plane, a masked tail of 4 and 3 columns)
    ([(2, 16, 5, 20), (5, 16, 3, 3), (5,)], conv(pad=(1, 1, 1, 1), act="relu")),
    ([(2, 3, 6, 21), (4, 3, 3, 3), None], conv(pad=(1, 1, 1, 1))),
    # the transposed tap-GEMM dW (O a multiple of 16, C not: conv_wide.dw_tap_t), LeNet-5
    # conv2's shape class, stride 1 and 2
    ([(3, 6, 9, 8), (16, 6, 3, 3), (16,)], conv(pad=(1, 1, 1, 1), act="relu")),
    ([(2, 5, 9, 7), (32, 5, 3, 3), None], conv(stride=(2, 2), pad=(1, 1, 1, 1))),
    # a 1x1 padded plane (squeeze-excitation's 1x1 convs; 2x2 at stride 2): a one-image chunk
    # makes the transposed dW scratch a single row, which once read as "no scratch" and sent
    # dW through the per-tap BLAS layout while it was finished as the transposed one
    ([(1, 2, 1, 1), (32, 2, 1, 1), (32,)], conv()),
    ([(3, 2, 1, 1), (32, 2, 1, 1), (32,)], conv(act="relu")),
    ([(2, 3, 2, 2), (16, 3, 1, 1), None], conv(stride=(2, 2))),
    ([(1, 16, 1, 1), (4, 16, 1, 1), (4,)], conv()),
]


def _split(monkeypatch):
    """Two worker threads, 1-image chunks (several per thread)."""
    import compiler.ops.conv_wide as CW
    from compiler.ops import parallel
    monkeypatch.setattr(CW, "PAR_MIN_MACS", 0)
    monkeypatch.setattr(CW, "WIDE_BUDGET", 1)
    monkeypatch.setattr(parallel, "WORKERS", 2)


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("shapes,attrs", CASES, ids=[str(i) for i in range(len(CASES))])
def test_wide_conv(monkeypatch, shapes, attrs, split):
    import compiler.ops.conv_wide as CW
    assert CW.usable(shapes[0], shapes[1], attrs)
    if split:
        _split(monkeypatch)
    res = check_op("conv2d", shapes, attrs, gradcheck=False)
    assert res["fwd"] <= 1e-4 and res["bwd"] <= 1e-4
    # first-layer backward: no dX (the kernel-row variant is used then)
    res = check_op("conv2d", shapes, attrs, gradcheck=False, needs=(1,) + ((2,) if shapes[2] else ()))
    assert res["bwd"] <= 1e-4


def test_dw_tap_path_choice():
    import compiler.ops.conv_wide as CW
    s1, s2 = conv(pad=(1, 1, 1, 1)), conv(stride=(2, 2), pad=(1, 1, 1, 1))
    assert CW.dw_tap(16, 1) and CW.dw_tap(64, 1) and CW.dw_tap(16, 2) and not CW.dw_tap(12, 1)
    assert "xt" in CW.workspace((8, 16, 8, 8), (16, 16, 3, 3), s1)
    assert "xt" in CW.workspace((8, 16, 8, 8), (32, 16, 3, 3), s2)
    assert "xt" not in CW.workspace((8, 12, 8, 8), (32, 12, 3, 3), s2)
    assert CW.dw_tap_t(6, 16, 1) and CW.dw_tap_t(12, 32, 2) and not CW.dw_tap_t(16, 16, 1)
    assert not CW.dw_tap_t(6, 10, 1)
    assert "ywt" in CW.workspace((8, 12, 8, 8), (32, 12, 3, 3), s2)
    assert "xt" not in CW.workspace((8, 12, 8, 8), (16, 12, 3, 3), s1)


def test_shared_padding_geometry():
    import compiler.ops.conv_wide as CW
    # (s, Hp, Wp, OH, OW, extra rows): 3x3 pad 1 on 8x8 -> 9x9 per image, one extra row
    assert CW._planes((2, 4, 8, 8), (4, 4, 3, 3), conv(pad=(1, 1, 1, 1))) == (1, 9, 9, 8, 8, 1)
    # bottom > top, right > left: nothing shared, the full 9x9 padded plane, no extra rows
    assert CW._planes((2, 4, 8, 8), (4, 4, 3, 3), conv(pad=(0, 1, 0, 1))) == (1, 9, 9, 7, 7, 0)
    assert CW._planes((2, 4, 14, 14), (4, 4, 5, 5), conv())[1:3] == (14, 14)        # LeNet conv2
    assert CW._planes((2, 4, 9, 9), (4, 4, 3, 3), conv(stride=(2, 2), pad=(1, 1, 1, 1)))[1:3] == (6, 6)


def test_path_choice():
    import compiler.ops.conv_wide as CW
    s1 = conv(pad=(1, 1, 1, 1))
    assert CW.usable((128, 16, 32, 32), (16, 16, 3, 3), s1)
    assert CW.usable((64, 1, 28, 28), (6, 1, 5, 5), conv(pad=(2, 2, 2, 2)))
    assert CW.usable((128, 16, 32, 32), (32, 16, 3, 3), conv(stride=(2, 2), pad=(1, 1, 1, 1)))
    assert CW.usable((128, 16, 32, 32), (32, 16, 1, 1), conv(stride=(2, 2)))        # 1x1 s2: one phase plane
    assert not CW.usable((2, 8, 8, 8), (8, 4, 3, 3), dict(s1, groups=2))
    assert not CW.usable((2, 8, 8, 8), (8, 8, 3, 3), conv(stride=(3, 3)))


def test_parallel_run_propagates_errors_and_splits():
    from compiler.ops import parallel
    assert parallel.split(5, 2) == [(0, 3), (3, 5)]
    assert parallel.split(1, 2) == [(0, 1)]
    out = np.zeros(2)

    def fn(i):
        out[i] = i + 1
        if i == 1:
            raise ValueError("boom")
    with pytest.raises(ValueError):
        parallel.run(fn, 2)
    assert out.tolist() == [1, 2]
    parallel.run(lambda i: out.__setitem__(i, 7), 2)     # the pool still works afterwards
    assert out.tolist() == [7, 7]


# conv + fused non-overlapping max pool (passes/fuse_maxpool.py): odd conv outputs (the
# floor-mode pool drops the last row/column), the kernel-row, per-tap and stride-2 kernels,
# the 2x2 fast path and the general window; argmax must equal maxpool2d's exactly
POOL_CASES = [
    ([(3, 2, 9, 9), (4, 2, 5, 5), (4,)], dict(conv(pad=(2, 2, 2, 2), act="relu"), pool=(2, 2))),
    ([(3, 12, 9, 8), (5, 12, 3, 2), None], dict(conv(pad=(1, 0, 2, 1), dilation=(2, 1)), pool=(3, 2))),
    ([(3, 5, 9, 7), (6, 5, 3, 3), (6,)], dict(conv(stride=(2, 2), pad=(1, 1, 1, 1), act="relu"), pool=(2, 2))),
]


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("shapes,attrs", POOL_CASES, ids=[str(i) for i in range(len(POOL_CASES))])
def test_wide_conv_with_fused_pool(monkeypatch, shapes, attrs, split):
    if split:
        _split(monkeypatch)
    res = check_op("conv2d", shapes, attrs, train=True, gradcheck=not split)
    assert res["fwd"] <= 1e-4 and res["bwd"] <= 1e-4
    res = check_op("conv2d", shapes, attrs, train=True, gradcheck=False, needs=(1,))
    assert res["bwd"] <= 1e-4
    res = check_op("conv2d", shapes, attrs, train=False, gradcheck=False, needs=())   # eval: no argmax
    assert res["fwd"] <= 1e-4


def test_fused_pool_ties_and_nans_follow_maxpool2d():
    """All-negative windows under ReLU (ties at 0) and NaNs pick the same tap, and give the
    same values, as the separate relu -> maxpool2d."""
    from compiler.ops import OPS
    x = np.zeros((2, 1, 6, 6), np.float32)
    x[0, 0, 1, 1] = np.nan
    x[1, 0, 2:4, 2:4] = -1.0
    x[1, 0, 0, 1] = 2.0
    w = np.ones((2, 1, 1, 1), np.float32)
    w[1] = -1
    b = np.array([0.0, 0.5], np.float32)
    attrs = dict(conv(act="relu"), pool=(2, 2))
    op = OPS["conv2d"]
    shapes = [x.shape, w.shape, b.shape]
    y = np.full(op.out_shape(shapes, attrs), 7, np.float32)
    arg = np.full(y.shape, -5, np.int32)
    ws = {k: np.full(v, np.nan, np.float32) for k, v in op.workspace(shapes, attrs).items()}
    op.forward([x, w, b], y, {"argmax": arg}, ws, attrs, True)
    # the unfused kernels: conv + relu, then the maxpool2d op
    pre = np.empty((2, 2, 6, 6), np.float32)
    ws0 = {k: np.full(v, np.nan, np.float32) for k, v in op.workspace(shapes, conv(act="relu")).items()}
    op.forward([x, w, b], pre, {}, ws0, conv(act="relu"), True)
    p = OPS["maxpool2d"]
    pa = dict(kernel=(2, 2), stride=(2, 2), pad=(0, 0, 0, 0), dilation=(1, 1), ceil_mode=False)
    yp = np.empty_like(y)
    ap = np.empty_like(arg)
    p.forward([pre], yp, {"argmax": ap}, {}, pa, True)
    np.testing.assert_array_equal(y, yp)             # NaN positions included
    np.testing.assert_array_equal(arg, ap)
    assert y[1, 0, 1, 1] == 0.0 and arg[1, 0, 1, 1] == 2 * 6 + 2    # tie at 0: the first tap


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tap_gemm_micro_kernel(dtype):
    """templates/tapgemm.py.j2: C = sum_t A_t · B[:, off_t:off_t + ncols] for row counts that
    use every register block (8/4/2/1 rows) and column counts with and without a remainder
    (3-vector blocks, then single vectors); rows of C past M and columns past the last
    vector stay untouched."""
    from compiler.ops.conv_wide import tapgemm
    k = tapgemm()
    rng = np.random.default_rng(0)
    VL = 16 if dtype == np.float32 else 8
    for M, K, T, ncols in [(16, 16, 9, 1088), (6, 5, 25, 1000), (15, 3, 4, 77), (1, 1, 1, 1), (24, 64, 9, 80)]:
        off = rng.integers(0, 40, T).astype(np.int64)
        A = rng.standard_normal((T, M, K)).astype(dtype)
        B = rng.standard_normal((K, ncols + 40 + 16)).astype(dtype)
        C = np.full((M + 1, ncols + 32), 7.0, dtype)
        k.tap_gemm(A.ctypes.data, M * K, B.ctypes.data, B.shape[1], C.ctypes.data, C.shape[1], off, M, K,
                   ncols, dtype(1), A.itemsize)
        ref = sum(A[t].astype(np.float64) @ B[:, off[t]:off[t] + ncols] for t in range(T))
        assert np.abs(C[:M, :ncols] - ref).max() <= (1e-5 if dtype == np.float32 else 1e-12) * np.abs(ref).max()
        assert np.all(C[M] == 7.0)
        assert np.all(C[:M, -(ncols + 32 - (-(-ncols // VL) * VL)):] == 7.0)
    # tap_gemm_ex: A rows with their own stride (lda > K) and C += (acc), as dW uses it
    M, K, ncols, lda = 11, 37, 2 * VL, 45
    A = rng.standard_normal((M, lda)).astype(dtype)
    B = rng.standard_normal((K + 3, ncols)).astype(dtype)
    C0 = rng.standard_normal((M, ncols)).astype(dtype)
    for acc in (0, 1):
        C = C0.copy()
        k.tap_gemm_ex(A.ctypes.data, 0, lda, B.ctypes.data + 3 * ncols * A.itemsize, ncols, C.ctypes.data,
                      ncols, np.zeros(1, np.int64), M, K, ncols, acc, dtype(1), A.itemsize)
        ref = A[:, :K].astype(np.float64) @ B[3:] + (C0 if acc else 0)
        assert np.abs(C - ref).max() <= (1e-5 if dtype == np.float32 else 1e-12) * np.abs(ref).max()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vec_gemm_micro_kernel(dtype):
    """tapgemm.py.j2 vec_gemm: C[:, v*VL:(v+1)*VL] (+)= A · B[:, voff[v]:voff[v] + VL], every
    column vector its own window of B (the all-taps dW), for row counts using every register
    block (8/4/2/1) and vector counts with and without a single-vector remainder; C's other
    rows and columns stay untouched."""
    from compiler.ops.conv_wide import tapgemm
    k = tapgemm()
    rng = np.random.default_rng(1)
    VL = 16 if dtype == np.float32 else 8
    for M, K, nv, lda in [(16, 300, 9, 310), (15, 7, 8, 7), (1, 1, 1, 1), (11, 64, 4, 70)]:
        A = rng.standard_normal((M, lda)).astype(dtype)
        B = rng.standard_normal((K + 50, 4 * VL)).astype(dtype)
        Bf = B.reshape(-1)
        voff = rng.integers(0, 50 * 4 * VL, nv).astype(np.int64)
        ldc = nv * VL + 5
        C0 = rng.standard_normal((M + 1, ldc)).astype(dtype)
        ref = np.stack([A[:, :K].astype(np.float64) @ np.stack([Bf[o + r * 4 * VL:o + r * 4 * VL + VL]
                                                                 for r in range(K)]) for o in voff], 1)
        ref = ref.reshape(M, nv * VL)
        for acc in (0, 1):
            C = C0.copy()
            k.vec_gemm(A.ctypes.data, lda, B.ctypes.data, 4 * VL, C.ctypes.data, ldc, voff, M, K, acc, dtype(1),
                       A.itemsize)
            want = ref + (C0[:M, :nv * VL] if acc else 0)
            tol = (1e-5 if dtype == np.float32 else 1e-12) * np.abs(want).max()
            assert np.abs(C[:M, :nv * VL] - want).max() <= tol
            assert np.array_equal(C[M], C0[M]) and np.array_equal(C[:, nv * VL:], C0[:, nv * VL:])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stride2_phase_planes_pad_and_unpad(dtype):
    """conv_layout.py.j2 pad_chunk / unpad_chunk with s = 2 (conv_rows.py.j2 split_row /
    merge_row): the four phase planes of the zero-padded images against numpy's [pr::2,
    pc::2] slices, every other column of the buffer 0, and unpad_chunk giving back x (0 where
    a pixel has no plane column); odd and even sizes and pads, rows longer than a vector."""
    import compiler.ops.conv_wide as CW
    k = CW.layout()
    rng = np.random.default_rng(2)
    for (H, W, pt, pl, Hp, Wp) in [(32, 32, 1, 1, 17, 17), (9, 7, 1, 1, 5, 4), (10, 9, 2, 0, 6, 5),
                                   (7, 40, 0, 3, 4, 21), (6, 37, 1, 2, 3, 18)]:
        C, N, nb, n0 = 3, 4, 2, 1
        S, tail = Hp * Wp, 7
        x = rng.standard_normal((N, C, H, W)).astype(dtype)
        xpad = np.full((C, 4 * (nb * S + tail)), 9, dtype)
        k.pad_chunk(x, n0, nb, xpad, pt, pl, Hp, Wp, 2)
        full = np.zeros((C, nb, 2 * Hp + H, 2 * Wp + W), dtype)
        full[:, :, pt:pt + H, pl:pl + W] = x[n0:n0 + nb].transpose(1, 0, 2, 3)
        Lp = nb * S + tail
        want = np.zeros_like(xpad)
        for pr in range(2):
            for pc in range(2):
                ph = full[:, :, pr::2, pc::2][:, :, :Hp, :Wp].reshape(C, nb * S)
                want[:, (2 * pr + pc) * Lp:(2 * pr + pc) * Lp + nb * S] = ph
        np.testing.assert_array_equal(xpad, want)
        dx = np.full_like(x, 5)
        k.unpad_chunk(xpad, dx, n0, nb, pt, pl, Hp, Wp, 2)
        back = np.zeros((C, nb, 2 * Hp, 2 * Wp), dtype)
        back[:, :, :, :] = full[:, :, :2 * Hp, :2 * Wp]
        inside = back[:, :, pt:pt + H, pl:pl + W].transpose(1, 0, 2, 3)    # 0 past the planes
        np.testing.assert_array_equal(dx[n0:n0 + nb, :, :inside.shape[2], :inside.shape[3]], inside)
        assert np.all(dx[n0:n0 + nb, :, inside.shape[2]:] == 0) and np.all(dx[n0:n0 + nb, :, :, inside.shape[3]:] == 0)
        assert np.all(dx[:n0] == 5) and np.all(dx[n0 + nb:] == 5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transposed_pad_equals_pad_transposed(dtype):
    """conv_layout.py.j2 pad_chunk_t (the tap-GEMM dW's operand; register transposes of
    VL x VL blocks where C is a multiple of the vector width, split into column phases for
    stride 2) is pad_chunk's buffer transposed, for stride 1 and 2, row tails, clipped
    planes and the scalar path (C = 5)."""
    import compiler.ops.conv_wide as CW
    k = CW.layout()
    rng = np.random.default_rng(3)
    for C, s, (H, W, pt, pl, Hp, Wp) in [(16, 1, (9, 20, 1, 1, 10, 21)), (32, 1, (8, 8, 1, 1, 9, 9)),
                                         (16, 2, (9, 37, 1, 1, 5, 19)), (32, 2, (10, 40, 0, 3, 5, 21)),
                                         (16, 2, (6, 70, 1, 2, 3, 34)), (5, 2, (7, 9, 1, 1, 4, 5)),
                                         (5, 1, (7, 9, 2, 1, 10, 10))]:
        N, nb, n0 = 3, 2, 1
        L = s * s * (nb * Hp * Wp + 6)
        x = rng.standard_normal((N, C, H, W)).astype(dtype)
        xpad = np.full((C, L), 9, dtype)
        xt = np.full((L, C), 7, dtype)
        k.pad_chunk(x, n0, nb, xpad, pt, pl, Hp, Wp, s)
        k.pad_chunk_t(x, n0, nb, xt, pt, pl, Hp, Wp, s)
        np.testing.assert_array_equal(xt, xpad.T, err_msg=str((C, s, H, W)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pool2x2_row_kernel(dtype):
    """conv_rows.py.j2's vector 2x2 pool against the scalar rule (act(v + b), taps in row-major
    order, a later tap wins if greater or NaN): rows shorter and longer than a vector (tail
    masks), ties, NaNs, all-negative windows under ReLU; nothing written past the row."""
    from compiler.ops.conv_wide import row_kernels
    def k(yrow, r0, Wp, yo, ao, train, OW, b, relu):       # pool2x2_plane on arrays
        row_kernels().pool2x2_plane(yrow.ctypes.data + r0 * yrow.itemsize, Wp, yo.ctypes.data, yo.strides[0],
                                    ao.ctypes.data, ao.strides[0], yo.shape[0], yo.shape[1], train, OW, b,
                                    relu, yrow.itemsize)
    rng = np.random.default_rng(4)
    for OH, OW, Wp in [(4, 4, 5), (28, 28, 30), (10, 38, 41), (6, 34, 34)]:
        yrow = rng.standard_normal(OH * Wp + 3).astype(dtype)
        yrow[1], yrow[Wp + 2], yrow[Wp + 3] = np.nan, np.nan, np.nan
        yrow[2 * Wp + 4] = yrow[2 * Wp + 5] = 3.0                  # a tie
        yrow[2 * Wp:2 * Wp + 4] = yrow[3 * Wp:3 * Wp + 4] = -1.0   # all negative
        for relu in (0, 1):
            b = dtype(0.25)
            y = np.full((OH // 2, OW // 2 + 1), 7, dtype)
            a = np.full(y.shape, -5, np.int32)
            k(yrow, 0, Wp, y[:, :-1], a[:, :-1], True, OW, b, relu)
            for i in range(OH // 2):
                for j in range(OW // 2):
                    best, t = None, 0
                    for q, (di, dj) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
                        v = yrow[(2 * i + di) * Wp + 2 * j + dj] + b
                        v = (v if not (v <= 0) else dtype(0)) if relu else v     # NaN passes
                        if best is None or v > best or v != v:
                            best, t = v, q
                    assert y[i, j] == best or (np.isnan(best) and np.isnan(y[i, j])), (OH, OW, i, j)
                    assert a[i, j] == (2 * i + t // 2) * OW + 2 * j + t % 2
            assert np.all(y[:, -1] == 7) and np.all(a[:, -1] == -5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unpool2x2_row_kernel(dtype):
    """conv_rows.py.j2's vector un-pool (the fused pool's backward): each window's argmax gets
    the (ReLU-masked) pooled gradient, its other three positions 0, nothing else touched;
    returns the gradient sum (the bias gradient's share)."""
    from compiler.ops.conv_wide import row_kernels
    def k(dy, y, ao, yrow, r0, Wp, OW, relu, zero):       # unpool2x2_plane on arrays
        return row_kernels().unpool2x2_plane(dy.ctypes.data, dy.strides[0], y.ctypes.data, y.strides[0],
                                             ao.ctypes.data, ao.strides[0], dy.shape[0], dy.shape[1],
                                             yrow.ctypes.data + r0 * yrow.itemsize, Wp, OW, relu, zero,
                                             yrow.itemsize)
    rng = np.random.default_rng(5)
    for OH, OW, Wp in [(4, 4, 5), (28, 28, 30), (10, 38, 41), (6, 34, 34)]:
        m2, n2 = OH // 2, OW // 2
        dy, y = rng.standard_normal((2, m2, n2)).astype(dtype)
        t = rng.integers(0, 4, (m2, n2))
        ii, jj = np.meshgrid(np.arange(m2), np.arange(n2), indexing="ij")
        arg = ((2 * ii + t // 2) * OW + 2 * jj + t % 2).astype(np.int32)
        for relu in (0, 1):
            yrow = np.full(OH * Wp + 3, 9.0, dtype)
            total = k(dy, y, arg, yrow, 0, Wp, OW, relu, dtype(0))
            g = dy * (y > 0) if relu else dy
            ref = np.full_like(yrow, 9.0)
            for i in range(m2):
                for j in range(n2):
                    for d in (0, 1, Wp, Wp + 1):
                        ref[2 * i * Wp + 2 * j + d] = 0
                    ref[(arg[i, j] // OW) * Wp + arg[i, j] % OW] = g[i, j]
            np.testing.assert_array_equal(yrow, ref)
            assert abs(total - g.sum()) <= 1e-5 * max(1.0, abs(g.sum()))


# conv + fused residual add (passes/fuse_residual.py): y = act(conv + bias + r)
RES_CASES = [
    ([(3, 12, 9, 8), (5, 12, 3, 2), (5,), (3, 5, 8, 8)], conv(pad=(1, 0, 1, 0), act="relu")),
    ([(3, 2, 9, 9), (4, 2, 5, 5), None, (3, 4, 9, 9)], conv(pad=(2, 2, 2, 2))),
    ([(3, 5, 9, 7), (6, 5, 3, 3), (6,), (3, 6, 5, 4)], conv(stride=(2, 2), pad=(1, 1, 1, 1), act="relu")),
]


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("shapes,attrs", RES_CASES, ids=[str(i) for i in range(len(RES_CASES))])
def test_wide_conv_with_fused_residual(monkeypatch, shapes, attrs, split):
    if split:
        _split(monkeypatch)
    res = check_op("conv2d", shapes, attrs, gradcheck=not split)
    assert res["fwd"] <= 1e-4 and res["bwd"] <= 1e-4
    res = check_op("conv2d", shapes, attrs, gradcheck=False, needs=(0,))      # no dW, no dres
    assert res["bwd"] <= 1e-4


ONE_IMAGE = [      # a batch of one image on two threads: forward split by channels, backward into a
                   # dW task and a dX task (conv_wide._one_image_split)
    ([(1, 16, 8, 8), (16, 16, 3, 3), (16,), (1, 16, 8, 8)], conv(pad=(1, 1, 1, 1), act="relu"), "wino"),
    ([(1, 3, 8, 8), (5, 3, 3, 3), None], conv(pad=(1, 1, 1, 1)), "wino"),
    ([(1, 5, 9, 9), (7, 5, 3, 3), None], conv(act="relu"), "wide"),
    ([(1, 6, 9, 8), (4, 6, 3, 3), (4,)], conv(stride=(2, 2), pad=(1, 1, 1, 1)), "wide"),
    ([(1, 6, 8, 8), (4, 6, 3, 3), (4,)], dict(conv(act="relu"), pool=(2, 2)), "wide"),
]


@pytest.mark.parametrize("shapes,attrs,path", ONE_IMAGE, ids=[str(i) for i in range(len(ONE_IMAGE))])
def test_one_image_forward_split_over_threads(monkeypatch, shapes, attrs, path):
    import compiler.ops.conv_wide as CW
    import compiler.ops.conv_wino as CWI
    from compiler.ops import parallel
    monkeypatch.setattr(CW, "PAR_MIN_MACS", 0)
    monkeypatch.setattr(parallel, "WORKERS", 2)
    used = []
    real = CW.kernels if path == "wide" else CWI.kernels

    class Spy:
        def __init__(self, m):
            self.m = m

        def __getattr__(self, name):
            if name in ("wide_fwd_rows", "wino_out_rows"):
                used.append(name)
            return getattr(self.m, name)
    if path == "wide":
        monkeypatch.setattr(CW, "kernels", lambda act="none": Spy(real(act)))
    else:
        monkeypatch.setattr(CWI, "kernels", lambda: Spy(real()))
    splits = []
    real_split = CW._one_image_split
    monkeypatch.setattr(CW, "_one_image_split", lambda *a: splits.append(real_split(*a)) or splits[-1])
    train = "pool" in attrs
    for dtype, tol in ((np.float32, 1e-4), (np.float64, 1e-12)):
        res = check_op("conv2d", shapes, attrs, gradcheck=False, dtype=dtype, rtol=tol, train=train)
        assert res["fwd"] <= tol and res["bwd"] <= tol
        # dX alone and dW alone (the backward's dW / dX tasks)
        check_op("conv2d", shapes, attrs, gradcheck=False, dtype=dtype, rtol=tol, train=train, needs=(0,))
        check_op("conv2d", shapes, attrs, gradcheck=False, dtype=dtype, rtol=tol, train=train, needs=(1,))
    assert used and set(used) == {"wide_fwd_rows" if path == "wide" else "wino_out_rows"}
    assert splits.count(True) >= 4      # forward and backward, both dtypes
