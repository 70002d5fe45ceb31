"""Spatial / dense ops: gradient checks, CPU kernels vs references, PyTorch parity.

Kernels are checked in float32 only and shapes are reused to keep the number of distinct
numba compilations low (each kernel compiles once per dtype/layout signature).
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from opcheck import check_op, get_op  # noqa: E402

S1 = (1, 1)
P0 = (0, 0, 0, 0)
P1 = (1, 1, 1, 1)


def conv(stride=S1, pad=P0, dilation=S1, groups=1, act="none", **kw):
    return dict(stride=stride, pad=pad, dilation=dilation, groups=groups, act=act, **kw)


# (op, input shapes, attrs, check_op keyword arguments)
CASES = [
    ("conv2d", [(2, 3, 7, 6), (4, 3, 3, 3), (4,)], conv(pad=P1), {}),
    ("conv2d", [(3, 4, 9, 8), (6, 2, 3, 2), (6,)], conv((2, 1), (1, 0, 2, 1), (2, 1), 2, "relu"), {}),
    ("conv2d", [(3, 4, 9, 8), (6, 2, 3, 2), None], conv((2, 1), (1, 0, 2, 1), (2, 1), 2, "relu"),
     {"needs": (0,)}),
    ("conv2d", [(3, 4, 9, 8), (6, 2, 3, 2), (6,)], conv((2, 1), (1, 0, 2, 1), (2, 1), 2, "relu"),
     {"needs": (1, 2)}),
    ("conv2d", [(2, 4, 6, 6), (4, 1, 3, 3), None], conv(pad=P1, groups=4), {}),          # depthwise
    ("conv2d", [(2, 3, 9, 8), (6, 1, 3, 2), (6,)], conv((2, 1), (1, 0, 2, 1), (2, 1), 3, "relu"), {}),
    ("conv2d", [(2, 3, 9, 8), (6, 1, 3, 2), (6,)], conv((1, 2), (1, 0, 2, 1), (1, 2), 3, "relu"),
     {"needs": (0, 2)}),
    ("conv2d", [(2, 4, 6, 6), (4, 2, 3, 3), (4,)], conv(pad=P1, groups=2, act="relu"), {}),  # grouped GEMM
    ("conv2d", [(2, 3, 5, 5), (5, 3, 1, 1), (5,)], conv(stride=(2, 2)), {}),             # 1x1 stride 2
    # stride 1, dilated, grouped, uneven padding: the CUDA dX runs as a conv with flipped weights
    ("conv2d", [(2, 4, 7, 6), (6, 2, 3, 2), (6,)], conv(S1, (2, 1, 1, 0), (2, 1), 2, "relu"), {}),
    # pad > dilation*(K-1): the flipped-weight conv for dX has negative padding
    ("conv2d", [(2, 3, 5, 5), (4, 3, 2, 2), None], conv(pad=(2, 2, 2, 2)), {}),
    ("conv2d", [(2, 3, 6, 6), (4, 3, 2, 2), (4,)], conv(pad=(3, 3, 3, 3), dilation=(2, 2)), {}),
    # stride 3 with a 2-tap kernel: a dX phase without taps (CUDA: zero-filled, other phases convs)
    ("conv2d", [(2, 3, 9, 8), (4, 3, 2, 3), (4,)], conv(stride=(3, 2), pad=(1, 0, 1, 1)), {}),
    ("conv_transpose2d", [(2, 4, 5, 4), (4, 3, 3, 3), (6,)],
     conv((2, 2), (1, 0, 1, 2), (1, 2), 2, "relu", output_padding=(1, 0)), {}),
    ("conv_transpose2d", [(2, 4, 5, 4), (4, 3, 3, 3), None],
     conv((2, 2), P1, output_padding=(1, 1)), {}),
    ("conv_transpose2d", [(2, 4, 5, 4), (4, 3, 3, 3), (3,)], conv(pad=P1, output_padding=(0, 0)),
     {"needs": (0,)}),
    # 1x1 stride 2 with a bias: output phases without taps hold the bias (CUDA: the gather)
    ("conv_transpose2d", [(2, 4, 3, 3), (4, 2, 1, 1), (2,)], conv((2, 2), P0, output_padding=(1, 1)), {}),
    ("local2d", [(2, 3, 6, 5), (3, 3, 4, 3, 3, 2), (4, 3, 3)], dict(stride=(2, 2), pad=(1, 0, 0, 1), act="relu"), {}),
    ("local2d", [(2, 3, 6, 5), (3, 3, 4, 3, 3, 2), None], dict(stride=(2, 2), pad=(1, 0, 0, 1), act="none"),
     {"needs": (1,)}),
    ("linear", [(5, 7), (4, 7), (4,)], dict(act="none"), {}),
    ("linear", [(5, 7), (4, 7), (4,)], dict(act="relu"), {}),
    ("linear", [(5, 7), (4, 7), None], dict(act="relu"), {"needs": (0,)}),
    ("dropconnect_linear", [(5, 7), (4, 7), (4,)], dict(act="none", p=0.3), {"train": True}),
    ("dropconnect_linear", [(5, 7), (4, 7), (4,)], dict(act="relu", p=0.5), {"train": True}),
    ("dropconnect_linear", [(5, 7), (4, 7), (4,)], dict(act="relu", p=0.5), {"train": False, "needs": ()}),
    ("weight_norm", [(4, 3, 2, 2), (4, 1, 1, 1)], {}, {}),
    ("weight_norm", [(4, 7), (4, 1)], {}, {"needs": (1,)}),
    ("maxpool2d", [(2, 3, 9, 7)], dict(kernel=(3, 2), stride=(2, 1), pad=(1, 1, 1, 0), dilation=(2, 1),
                                       ceil_mode=True), {"train": True}),
    # windows with gaps between them, padding and a partial last window (ceil_mode): the CUDA
    # backward gathers per dx element when windows do not overlap
    ("maxpool2d", [(2, 3, 8, 7)], dict(kernel=(2, 2), stride=(3, 3), pad=(1, 0, 1, 0), dilation=S1,
                                       ceil_mode=True), {"train": True}),
    ("maxpool2d", [(2, 3, 9, 7)], dict(kernel=(2, 2), stride=(2, 2), pad=P0, dilation=S1, ceil_mode=False),
     {"train": True}),
    ("maxpool2d", [(2, 3, 9, 7)], dict(kernel=(3, 3), stride=(2, 2), pad=P1, dilation=S1, ceil_mode=False),
     {"train": False, "needs": ()}),
    ("avgpool2d", [(2, 3, 9, 7)], dict(kernel=(3, 3), stride=(2, 2), pad=P1, ceil_mode=True,
                                       count_include_pad=True), {}),
    ("avgpool2d", [(2, 3, 9, 7)], dict(kernel=(3, 3), stride=(2, 2), pad=P1, ceil_mode=True,
                                       count_include_pad=False), {}),
    ("avgpool2d", [(2, 3, 9, 7)], dict(kernel=(2, 3), stride=(2, 3), pad=P0, ceil_mode=False,
                                       count_include_pad=True), {}),
    # ceil_mode windows larger than the input (SqueezeNet's 3x3/2 pools on small inputs)
    ("maxpool2d", [(2, 3, 2, 2)], dict(kernel=(3, 3), stride=(2, 2), pad=P0, dilation=S1, ceil_mode=True),
     {"train": True}),
    ("avgpool2d", [(2, 3, 2, 3)], dict(kernel=(3, 3), stride=(2, 2), pad=P0, ceil_mode=True,
                                       count_include_pad=True), {}),
    ("global_pool", [(2, 3, 5, 4)], dict(mode="avg"), {}),
    ("adaptive_avgpool2d", [(2, 3, 7, 5)], dict(out_size=(3, 4)), {}),
    ("adaptive_avgpool2d", [(2, 3, 4, 6)], dict(out_size=(2, 3)), {}),
    ("global_pool", [(2, 3, 5, 4)], dict(mode="max"), {"train": True}),
    ("fractional_maxpool2d", [(2, 3, 11, 9)], dict(kernel=(2, 2), out_size=(7, 5)), {"train": True}),
    ("fractional_maxpool2d", [(2, 3, 11, 9)], dict(kernel=(2, 2), out_size=(7, 5)), {"train": False, "needs": ()}),
    ("fractional_maxpool2d", [(2, 3, 11, 9)], dict(kernel=(3, 2), out_size=(1, 8)), {"train": True, "seed": 3}),
    ("maxout", [(2, 6, 3, 4)], dict(k=3), {"train": True}),
    ("maxout", [(4, 6)], dict(k=2), {"train": True}),
    ("upsample", [(2, 3, 4, 3)], dict(mode="nearest", out_size=(9, 5), align_corners=False), {}),
    ("upsample", [(2, 3, 4, 3)], dict(mode="nearest", out_size=(8, 6), align_corners=False), {}),
    ("upsample", [(2, 3, 4, 3)], dict(mode="bilinear", out_size=(9, 5), align_corners=False), {}),
    ("upsample", [(2, 3, 4, 3)], dict(mode="bilinear", out_size=(3, 8), align_corners=True), {}),
    ("center_crop", [(2, 3, 7, 6)], dict(offset=(1, 2), out_size=(4, 3)), {}),
    ("shortcut_pad", [(2, 4, 7, 6)], dict(stride=(2, 2), out=8), {}),
    ("shortcut_pad", [(2, 3, 7, 6)], dict(stride=(1, 2), out=6), {}),
    ("channel_shuffle", [(2, 6, 3, 4)], dict(groups=2), {}),
    ("channel_shuffle", [(3, 12, 2, 3)], dict(groups=3), {}),
    ("channel_shuffle", [(2, 6)], dict(groups=3), {}),               # vectors (N, F)
    ("channel_slice", [(2, 7, 3, 4)], dict(start=2, stop=5), {}),
    ("channel_slice", [(2, 6, 3, 4)], dict(start=0, stop=6), {}),    # the whole tensor
    ("channel_slice", [(3, 8)], dict(start=5, stop=8), {}),          # vectors, last channels
]


@pytest.mark.parametrize("op,shapes,attrs,kw", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_op(op, shapes, attrs, kw):
    res = check_op(op, shapes, attrs, **kw)
    assert res["grad"] < 1e-6 and res["fwd"] <= 1e-4 and res["bwd"] <= 1e-4


@pytest.mark.parametrize("op,shapes,attrs", [
    ("conv2d", [(5, 4, 9, 8), (6, 2, 3, 2), (6,)], conv((2, 1), (1, 0, 2, 1), (2, 1), 2, "relu")),
    ("conv_transpose2d", [(5, 4, 5, 4), (4, 3, 3, 3), (6,)],
     conv((2, 2), (1, 0, 1, 2), (1, 2), 2, "relu", output_padding=(1, 0))),
])
def test_conv_chunks(monkeypatch, op, shapes, attrs):
    """Several image chunks (2, 2, 1): dW accumulation across chunks, partial last chunk."""
    import compiler.ops.conv as C
    get_op(op)
    monkeypatch.setattr(C, "COLS_BUDGET", 2 * 6 * 9 * 8 if op == "conv2d" else 2 * 54 * 20)
    assert C.chunk_images(5, 6 * 9 * 8 if op == "conv2d" else 54 * 20) == 2
    check_op(op, shapes, attrs, gradcheck=False)


@pytest.mark.parametrize("op", ["linear", "dropconnect_linear"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_row_split_gemms(monkeypatch, op, dtype):
    """dense.py's _gemm: the output rows split over two threads, one BLAS call by address
    each (forward, dX, and dW through the transposed dz) -- odd row counts."""
    import compiler.ops.dense as D
    from compiler.ops import parallel
    monkeypatch.setattr(D, "PAR_MIN_MACS", 0)
    monkeypatch.setattr(parallel, "WORKERS", 2)
    kw = {"train": True} if op == "dropconnect_linear" else {}
    res = check_op(op, [(7, 9), (5, 9), (5,)], {"act": "relu", **({"p": 0.3} if kw else {})},
                   dtype=dtype, gradcheck=False, **kw)
    assert res["fwd"] <= 1e-4 and res["bwd"] <= 1e-4


def test_pool_out_matches_torch_formula():
    from compiler.ops.pool import pool_out
    assert pool_out(7, 3, 2, 1, 1, 1, True) == 4      # last window starts inside the image
    assert pool_out(5, 2, 2, 1, 1, 1, True) == 3      # would start in the padding: dropped
    assert pool_out(32, 2, 2, 0, 0, 1, False) == 16


def test_dropconnect_statistics():
    """Train-time mask keeps ~1-p of the weights, scaled by 1/(1-p); eval is x W^T + b."""
    op = get_op("dropconnect_linear")
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((3, 50)), rng.standard_normal((40, 50)), rng.standard_normal(40)
    _, saved = op.ref_forward([x, w, b], {"p": 0.25, "act": "none"}, train=True, rng=rng)
    m = saved["mask"]
    assert set(np.unique(m)) <= {0.0, 1 / 0.75}
    assert abs((m > 0).mean() - 0.75) < 0.05
    y, _ = op.ref_forward([x, w, b], {"p": 0.25, "act": "none"}, train=False)
    np.testing.assert_allclose(y, x @ w.T + b)


# ----------------------------------------------------------------------------- PyTorch parity
def _torch():
    return pytest.importorskip("torch", reason="PyTorch parity tests need torch")


def _ref_and_torch(op_name, xs, attrs, torch_fn, dtype=np.float64, train=False, rng=None,
                   tol=1e-10):
    """Compare ref_forward/ref_backward with torch_fn(*tensors) and autograd."""
    torch = _torch()
    op = get_op(op_name)
    xs = [None if x is None else x.astype(dtype) for x in xs]
    y, saved = op.ref_forward([None if x is None else x.copy() for x in xs], attrs, train=train, rng=rng)
    ts = [None if x is None else torch.tensor(x, requires_grad=True) for x in xs]
    yt = torch_fn(*ts)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=tol, atol=tol)
    dy = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
    yt.backward(torch.tensor(dy))
    grads = op.ref_backward(xs, y, saved, dy, attrs)
    for g, t in zip(grads, ts):
        if t is not None:
            np.testing.assert_allclose(g, t.grad.numpy(), rtol=tol, atol=tol)
    return y, saved


def _rand(*shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [None if s is None else rng.standard_normal(s) for s in shapes]


@pytest.mark.torch
@pytest.mark.parametrize("stride,pad,dil,groups,act", [
    ((1, 1), (1, 1, 1, 1), (1, 1), 1, "none"),
    ((2, 1), (1, 0, 2, 1), (2, 1), 2, "relu"),
    ((2, 2), (0, 0, 0, 0), (1, 1), 4, "none"),
    ((1, 2), (1, 1, 0, 2), (2, 1), 4, "relu"),
])
def test_torch_conv2d(stride, pad, dil, groups, act):
    torch = _torch()
    F = torch.nn.functional
    xs = _rand((2, 4, 9, 8), (8, 4 // groups, 3, 2), (8,))   # groups=4: depthwise path
    attrs = conv(stride, pad, dil, groups, act)

    def fn(x, w, b):
        y = F.conv2d(F.pad(x, (pad[2], pad[3], pad[0], pad[1])), w, b, stride, 0, dil, groups)
        return F.relu(y) if act == "relu" else y
    _ref_and_torch("conv2d", xs, attrs, fn)


@pytest.mark.torch
@pytest.mark.parametrize("stride,pad,dil,groups,op_,act", [
    ((2, 2), (1, 1), (1, 1), 1, (1, 1), "none"),
    ((2, 1), (1, 0), (1, 2), 2, (1, 0), "relu"),
    ((1, 1), (0, 0), (1, 1), 1, (0, 0), "none"),
])
def test_torch_conv_transpose2d(stride, pad, dil, groups, op_, act):
    torch = _torch()
    F = torch.nn.functional
    xs = _rand((2, 4, 5, 4), (4, 3, 3, 3), (3 * groups,))
    attrs = conv(stride, (pad[0], pad[0], pad[1], pad[1]), dil, groups, act, output_padding=op_)

    def fn(x, w, b):
        y = F.conv_transpose2d(x, w, b, stride, pad, op_, groups, dil)
        return F.relu(y) if act == "relu" else y
    _ref_and_torch("conv_transpose2d", xs, attrs, fn)


@pytest.mark.torch
def test_torch_local2d():
    torch = _torch()
    F = torch.nn.functional
    N, C, H, W, O, kh, kw, s = 2, 3, 6, 5, 4, 3, 2, 2
    pad = (1, 0, 0, 1)
    OH, OW = (H + 1 - kh) // s + 1, (W + 1 - kw) // s + 1
    xs = _rand((N, C, H, W), (OH, OW, O, C, kh, kw), (O, OH, OW))

    def fn(x, w, b):   # unfold -> per-location matmul
        cols = F.unfold(F.pad(x, (pad[2], pad[3], pad[0], pad[1])), (kh, kw), stride=s)  # (N, CKK, L)
        wl = w.reshape(OH * OW, O, C * kh * kw)
        y = torch.einsum("nkl,lok->nol", cols, wl).reshape(N, O, OH, OW)
        return F.relu(y + b)
    _ref_and_torch("local2d", xs, dict(stride=(s, s), pad=pad, act="relu"), fn)


@pytest.mark.torch
def test_torch_linear_weight_norm_shortcut():
    torch = _torch()
    F = torch.nn.functional
    _ref_and_torch("linear", _rand((5, 7), (4, 7), (4,)), {"act": "relu"},
                   lambda x, w, b: F.relu(F.linear(x, w, b)))
    _ref_and_torch("weight_norm", _rand((4, 3, 2, 2), (4, 1, 1, 1)), {},
                   lambda v, g: torch._weight_norm(v, g, 0))
    _ref_and_torch("weight_norm", _rand((4, 7), (4, 1)), {}, lambda v, g: torch._weight_norm(v, g, 0))
    planes = 32   # akamaster LambdaLayer for option A
    _ref_and_torch("shortcut_pad", _rand((2, 16, 8, 8)), {"stride": (2, 2), "out": planes},
                   lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4)))


@pytest.mark.torch
@pytest.mark.parametrize("k,s,p,d,ceil", [
    ((3, 3), (2, 2), (1, 1), (1, 1), False),
    ((3, 2), (2, 1), (1, 1), (2, 1), True),
    ((2, 2), (2, 2), (0, 0), (1, 1), True),
])
def test_torch_maxpool(k, s, p, d, ceil):
    torch = _torch()
    F = torch.nn.functional
    attrs = dict(kernel=k, stride=s, pad=(p[0], p[0], p[1], p[1]), dilation=d, ceil_mode=ceil)
    xs = _rand((2, 3, 9, 7))
    _, saved = _ref_and_torch("maxpool2d", xs, attrs, lambda x: F.max_pool2d(x, k, s, p, d, ceil), train=True)
    _, idx = F.max_pool2d(torch.tensor(xs[0]), k, s, p, d, ceil, return_indices=True)
    np.testing.assert_array_equal(saved["argmax"], idx.numpy())


@pytest.mark.torch
@pytest.mark.parametrize("k,s,p,ceil,cip", [
    ((3, 3), (2, 2), (1, 1), True, True),
    ((3, 3), (2, 2), (1, 1), True, False),
    ((3, 2), (2, 2), (1, 0), False, True),
    ((2, 2), (3, 3), (1, 1), True, False),
])
def test_torch_avgpool(k, s, p, ceil, cip):
    F = _torch().nn.functional
    attrs = dict(kernel=k, stride=s, pad=(p[0], p[0], p[1], p[1]), ceil_mode=ceil, count_include_pad=cip)
    _ref_and_torch("avgpool2d", _rand((2, 3, 9, 8)), attrs, lambda x: F.avg_pool2d(x, k, s, p, ceil, cip))


@pytest.mark.torch
@pytest.mark.parametrize("hw", [(2, 2), (2, 3), (4, 4)])
def test_torch_ceil_mode_window_overhanging_the_input(hw):
    F = _torch().nn.functional
    xs = _rand((2, 3, *hw))
    _ref_and_torch("maxpool2d", xs, dict(kernel=(3, 3), stride=(2, 2), pad=P0, dilation=S1, ceil_mode=True),
                   lambda x: F.max_pool2d(x, 3, 2, 0, 1, True), train=True)
    for cip in (True, False):
        _ref_and_torch("avgpool2d", xs, dict(kernel=(3, 3), stride=(2, 2), pad=P0, ceil_mode=True,
                                             count_include_pad=cip),
                       lambda x: F.avg_pool2d(x, 3, 2, 0, True, cip))


@pytest.mark.torch
@pytest.mark.parametrize("hw,out", [((7, 5), (3, 4)), ((13, 13), (6, 6)), ((4, 4), (7, 7)), ((9, 6), (1, 1))])
def test_torch_adaptive_avgpool(hw, out):
    F = _torch().nn.functional
    _ref_and_torch("adaptive_avgpool2d", _rand((2, 3, *hw)), {"out_size": out},
                   lambda x: F.adaptive_avg_pool2d(x, out))


@pytest.mark.torch
def test_torch_global_pool_maxout():
    torch = _torch()
    F = torch.nn.functional
    _ref_and_torch("global_pool", _rand((2, 3, 5, 4)), {"mode": "avg"}, lambda x: F.adaptive_avg_pool2d(x, 1))
    _ref_and_torch("global_pool", _rand((2, 3, 5, 4)), {"mode": "max"}, lambda x: F.adaptive_max_pool2d(x, 1),
                   train=True)
    _ref_and_torch("maxout", _rand((2, 6, 3, 4)), {"k": 3}, lambda x: x.reshape(2, 2, 3, 3, 4).amax(dim=2),
                   train=True)


@pytest.mark.torch
@pytest.mark.parametrize("shape,k,out", [((2, 3, 11, 9), (2, 2), (7, 5)), ((1, 2, 32, 32), (2, 2), (22, 22)),
                                        ((2, 2, 10, 12), (3, 2), (1, 8))])
def test_torch_fractional_maxpool(shape, k, out):
    """Same samples -> same regions as torch (float32: torch computes the intervals in the
    tensor dtype, so do we)."""
    torch = _torch()
    F = torch.nn.functional
    x = _rand(shape)[0].astype(np.float32)
    rng = np.random.default_rng(5)
    op = get_op("fractional_maxpool2d")
    y, saved = op.ref_forward([x], {"kernel": k, "out_size": out}, train=True, rng=rng)
    yt, it = F.fractional_max_pool2d(torch.tensor(x), k, output_size=out, return_indices=True,
                                     _random_samples=torch.tensor(saved["u"]))
    np.testing.assert_array_equal(y, yt.numpy())
    np.testing.assert_array_equal(saved["argmax"], it.numpy())


@pytest.mark.torch
@pytest.mark.parametrize("mode,out,ac", [("nearest", (9, 5), False), ("nearest", (8, 6), False),
                                         ("nearest", (3, 2), False), ("nearest", (13, 7), False),
                                         ("bilinear", (9, 5), False), ("bilinear", (3, 8), True),
                                         ("bilinear", (2, 2), False), ("bilinear", (17, 11), True)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_torch_upsample(mode, out, ac, dtype):
    F = _torch().nn.functional
    kw = {} if mode == "nearest" else {"align_corners": ac}
    tol = 1e-10 if dtype == np.float64 else 2e-6
    _ref_and_torch("upsample", _rand((2, 3, 4, 3)), dict(mode=mode, out_size=out, align_corners=ac),
                   lambda x: F.interpolate(x, size=out, mode=mode, **kw), dtype=dtype, tol=tol)


@pytest.mark.torch
@pytest.mark.parametrize("mode,scale,ac", [("nearest", (1.3, 1.3), False), ("nearest", (0.75, 2.5), False),
                                           ("bilinear", (1.3, 1.7), False), ("bilinear", (0.6, 1.45), False),
                                           ("bilinear", (1.3, 1.3), True)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_torch_upsample_scale_factor(mode, scale, ac, dtype):
    """attr ``scale`` (an inexact spec `scale`) = interpolate(scale_factor=...): coordinates
    map with 1/scale, which differs from size= (in/out) when floor(in*scale) is not exact."""
    F = _torch().nn.functional
    H, W = 16, 7
    out = (int(H * scale[0]), int(W * scale[1]))
    kw = {} if mode == "nearest" else {"align_corners": ac}
    tol = 1e-10 if dtype == np.float64 else 2e-6
    _ref_and_torch("upsample", _rand((2, 3, H, W)),
                   dict(mode=mode, out_size=out, align_corners=ac, scale=scale),
                   lambda x: F.interpolate(x, scale_factor=scale, mode=mode, **kw), dtype=dtype, tol=tol)


@pytest.mark.torch
@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@pytest.mark.parametrize("hw,scale", [((3, 5), 1.3), ((5, 5), 2.1), ((2, 9), (1.2, 0.7))])
def test_torch_upsample_scale_shortcuts(mode, hw, scale):
    """torch's shortcuts under scale_factor: an axis whose size does not change is copied
    (3 * 1.3 -> 3), and nearest maps a doubled axis by o >> 1 (5 * 2.1 -> 10)."""
    import compiler
    import netspec
    torch = _torch()
    sc = scale if isinstance(scale, tuple) else (scale, scale)
    spec = netspec.load(f"netspec: 1\nname: u\ninput: [2, {hw[0]}, {hw[1]}]\nlayers:\n"
                        f"  - upsample: {{scale: [{sc[0]}, {sc[1]}], mode: {mode}}}\n")
    net = compiler.compile(spec, batch_size=2, train=False, dtype=np.float64)
    x = np.arange(2 * 2 * hw[0] * hw[1], dtype=np.float64).reshape(2, 2, *hw)
    want = torch.nn.functional.interpolate(torch.tensor(x), scale_factor=sc, mode=mode)
    np.testing.assert_allclose(net.forward(x), want.numpy(), rtol=1e-12, atol=1e-12)


def test_upsample_scale_reaches_the_op_only_when_inexact():
    import compiler
    import netspec
    for sc, want in ((1.3, (1.3, 1.3)), (2, None)):
        spec = netspec.load(f"netspec: 1\nname: u\ninput: [1, 16, 16]\nlayers:\n"
                            f"  - upsample: {{scale: {sc}, mode: bilinear}}\n")
        g = compiler.compile(spec, batch_size=2, train=False).graphs["eval"]
        node = next(n for n in g.nodes if n.op == "upsample")
        assert node.a.get("scale") == want


def _random_case(r):
    """A random (op, shapes, attrs, kw) for conv2d / conv_transpose2d / maxpool2d / avgpool2d,
    or None when the draw is degenerate.  Shapes vary freely: numba compiles per dtype and
    layout, not per shape, so this adds no compilations beyond the table above."""
    from compiler.ops.pool import pool_out
    kind = ["conv2d", "depthwise", "conv_transpose2d", "maxpool2d", "avgpool2d"][int(r.integers(5))]
    N, H, W = (int(v) for v in r.integers(1, [4, 10, 10]))
    kh, kw, sh, sw, dh, dw = (int(v) for v in r.integers(1, [5, 5, 4, 4, 3, 3]))
    act = ["none", "relu"][int(r.integers(2))]
    if kind in ("conv2d", "depthwise"):
        G = int(r.integers(1, 3))
        C, O = G * int(r.integers(1, 3)), G * int(r.integers(1, 3))
        if kind == "depthwise":
            G = C = int(r.integers(1, 4))
            O = C * int(r.integers(1, 3))
            sh, sw = (1, 1) if r.random() < 0.5 else (sh, sw)
        pad = tuple(int(v) for v in r.integers(0, 3, 4))
        if H + pad[0] + pad[1] < dh * (kh - 1) + 1 or W + pad[2] + pad[3] < dw * (kw - 1) + 1:
            return None
        return ("conv2d", [(N, C, H, W), (O, C // G, kh, kw), (O,) if r.random() < 0.5 else None],
                conv((sh, sw), pad, (dh, dw), G, act), {})
    if kind == "conv_transpose2d":
        G = int(r.integers(1, 3))
        Cin, Cg = G * int(r.integers(1, 3)), int(r.integers(1, 3))
        p = (int(r.integers(0, kh)), int(r.integers(0, kw)))
        op_ = (int(r.integers(0, max(sh, dh))), int(r.integers(0, max(sw, dw))))
        if (H - 1) * sh - 2 * p[0] + dh * (kh - 1) + op_[0] < 0 or (W - 1) * sw - 2 * p[1] + dw * (kw - 1) + op_[1] < 0:
            return None
        return ("conv_transpose2d", [(N, Cin, H, W), (Cin, Cg, kh, kw), (Cg * G,) if r.random() < 0.5 else None],
                conv((sh, sw), (p[0], p[0], p[1], p[1]), (dh, dw), G, act, output_padding=op_), {})
    pt, pl = int(r.integers(0, kh // 2 + 1)), int(r.integers(0, kw // 2 + 1))
    cm = bool(r.random() < 0.5)
    if kind == "avgpool2d":
        dh = dw = 1
    if pool_out(H, kh, sh, pt, pt, dh, cm) < 1 or pool_out(W, kw, sw, pl, pl, dw, cm) < 1:
        return None
    if (H + 2 * pt - dh * (kh - 1) - 1 < 0 or W + 2 * pl - dw * (kw - 1) - 1 < 0
            or (kind == "maxpool2d" and (pt + 1 > dh * (kh - 1) + 1 or pl + 1 > dw * (kw - 1) + 1))):
        return None
    attrs = dict(kernel=(kh, kw), stride=(sh, sw), pad=(pt, pt, pl, pl), ceil_mode=cm)
    if kind == "maxpool2d":
        attrs["dilation"] = (dh, dw)
    else:
        attrs["count_include_pad"] = bool(r.random() < 0.5)
    return (kind, [(N, 2, H, W)], attrs, {"train": True})


def test_random_configs():
    """Random geometry (odd sizes, stride > kernel, dilation, asymmetric pads, ceil mode)."""
    r = np.random.default_rng(123)
    done = 0
    while done < 40:
        case = _random_case(r)
        if case is None:
            continue
        op, shapes, attrs, kw = case
        if op == "maxpool2d":   # skip draws with a window that has no tap in the image
            y, _ = get_op(op).ref_forward([np.zeros(shapes[0])], attrs)
            if not np.all(np.isfinite(y)):
                continue
        check_op(op, shapes, attrs, seed=done, n_coords=4, **kw)
        done += 1


def test_maxpool_window_without_taps():
    """Dilated window entirely in the padding: -inf and argmax -1, ignored by backward."""
    op = get_op("maxpool2d")
    attrs = dict(kernel=(2, 2), stride=(1, 1), pad=(1, 1, 1, 1), dilation=(3, 3), ceil_mode=False)
    x = np.random.default_rng(0).standard_normal((1, 2, 2, 2)).astype(np.float32)   # taps at -1, 2
    yr, sr = op.ref_forward([x], attrs, train=True)
    y = np.empty(op.out_shape([x.shape], attrs), np.float32)
    saved = {"argmax": np.empty(y.shape, np.int32)}
    op.forward([x], y, saved, {}, attrs, True)
    assert np.all(y == -np.inf) and np.array_equal(y, yr)
    assert np.all(saved["argmax"] == -1) and np.array_equal(saved["argmax"], sr["argmax"])
    dx = np.full_like(x, np.nan)
    op.backward([x], y, saved, np.ones_like(y), [dx], {}, attrs)
    np.testing.assert_array_equal(dx, op.ref_backward([x], yr, sr, np.ones_like(y), attrs)[0])
