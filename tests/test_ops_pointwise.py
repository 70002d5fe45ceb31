"""Normalisation, activation, elementwise, regularisation and loss ops.

Table-driven through ``tests/opcheck.check_op`` (float64 finite differences vs ref_backward,
float32 kernels vs the reference), plus behaviour the table cannot express (running
statistics, dropout statistics, eval modes, no allocation in launchers) and PyTorch parity
of the references (``@pytest.mark.torch``).  Shapes are shared so the numba compilations
stay few (float32 kernels; one float64 case per kernel family).
"""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from opcheck import check_op, get_op

X4 = (4, 6, 5, 5)          # shared image shape
C = X4[1]
POS = {4: np.abs(np.random.default_rng(7).standard_normal(C)) + 0.5}   # running_var > 0

CASES = [
    # name, in_shapes, attrs, kwargs
    ("batchnorm", [X4, (C,), (C,), (C,), (C,)], {}, dict(train=True, inputs=POS)),
    ("batchnorm", [X4, (C,), (C,), (C,), (C,)], {"act": "relu"}, dict(train=True, inputs=POS)),
    ("batchnorm", [X4, None, None, (C,), (C,)], {"eps": 1e-3}, dict(train=True, inputs=POS)),
    ("batchnorm", [X4, (C,), (C,), (C,), (C,)], {"act": "relu"}, dict(train=False, inputs=POS)),
    ("batchnorm", [(8, C), (C,), (C,), (C,), (C,)], {"momentum": 0.3}, dict(train=True, inputs=POS)),
    # (N, F) inputs run the flat kernels (norm.FLAT_S): fused ReLU, and no dX
    ("batchnorm", [(8, C), (C,), None, (C,), (C,)], {"act": "relu"}, dict(train=True, inputs=POS)),
    ("batchnorm", [(8, C), (C,), (C,), (C,), (C,)], {}, dict(train=True, inputs=POS, needs=(1, 2))),
    ("batchnorm", [X4, (C,), (C,), (C,), (C,)], {}, dict(train=True, inputs=POS, needs=(1, 2))),
    ("batchnorm", [X4, (C,), (C,), (C,), (C,)], {"global_stats": True}, dict(train=True, inputs=POS)),
    # a fused residual (passes/fuse_residual.py): y = act(bn(x) + r), r's gradient the masked dy
    ("batchnorm", [X4, (C,), (C,), (C,), (C,), X4], {"act": "relu"}, dict(train=True, inputs=POS)),
    ("batchnorm", [X4, (C,), None, (C,), (C,), X4], {}, dict(train=False, inputs=POS)),
    ("batchnorm", [X4, (C,), (C,), (C,), (C,), X4], {"act": "relu", "global_stats": True},
     dict(train=True, inputs=POS)),
    ("layernorm", [X4, X4[1:], X4[1:]], {}, {}),
    ("layernorm", [(4, 10), None, None], {"eps": 1e-3}, {}),
    ("instancenorm", [X4, None, None], {}, {}),
    ("instancenorm", [X4, (C,), (C,)], {}, {}),
    ("groupnorm", [X4, (C,), (C,)], {"groups": 3}, {}),
    ("groupnorm", [X4, (C,), None], {"groups": 2}, dict(needs=(1,))),
    ("lrn", [X4], {"size": 5, "alpha": 1e-2}, {}),
    ("lrn", [X4], {"size": 4, "alpha": 0.5, "beta": 0.6, "k": 2.0}, {}),
    ("activation", [X4], {"kind": "relu"}, {}),
    ("activation", [X4], {"kind": "sigmoid"}, {}),
    ("activation", [X4], {"kind": "tanh"}, {}),
    ("activation", [X4], {"kind": "leaky_relu", "slope": 0.1}, {}),
    ("activation", [X4], {"kind": "leaky_relu", "slope": -0.3}, {}),
    ("activation", [X4], {"kind": "elu", "alpha": 1.3}, {}),
    ("activation", [X4], {"kind": "relu6"}, dict(inputs={0: 4 * np.random.default_rng(5).standard_normal(X4)})),
    ("activation", [X4], {"kind": "hardsigmoid"}, dict(inputs={0: 3 * np.random.default_rng(6).standard_normal(X4)})),
    ("activation", [X4], {"kind": "hardswish"}, dict(inputs={0: 3 * np.random.default_rng(7).standard_normal(X4)})),
    ("activation", [X4], {"kind": "silu"}, {}),
    ("activation", [X4], {"kind": "gelu"}, {}),
    ("activation", [X4], {"kind": "softplus"}, dict(inputs={0: 12 * np.random.default_rng(8).standard_normal(X4)})),
    ("prelu", [X4, (C,)], {}, {}),
    ("prelu", [X4, (1,)], {}, {}),
    ("prelu", [(8, C), (C,)], {}, dict(needs=(1,))),
    ("softmax", [(8, 10)], {}, {}),
    ("softmax", [X4], {}, {}),
    ("softmax_cross_entropy", [(8, 10), (8,)], {}, dict(int_inputs={1: 10})),
    ("softmax_cross_entropy", [(8, 10), (8,)], {"label_smoothing": 0.1},
     dict(int_inputs={1: 10}, train=True)),
    # per-position (segmentation): logits (N, K, H, W), targets (N, H, W)
    ("softmax_cross_entropy", [(2, 4, 3, 5), (2, 3, 5)], {"spatial": True}, dict(int_inputs={1: 4})),
    ("softmax_cross_entropy", [(2, 3, 4, 4), (2, 4, 4)], {"spatial": True, "label_smoothing": 0.2},
     dict(int_inputs={1: 3}, train=True)),
    ("hinge", [(8, 10), (8,)], {"margin": 1.0}, dict(int_inputs={1: 10})),
    ("bce_with_logits", [(8, 10), (8, 10)], {},
     dict(inputs={1: np.random.default_rng(3).random((8, 10))})),
    ("mse", [(8, 10), (8, 10)], {}, {}),
    ("add", [X4, X4], {}, {}),
    ("add", [X4, X4, X4], {}, dict(needs=(0, 2))),
    ("add", [X4, X4], {"act": "relu"}, {}),
    ("mul", [X4, (4, 6, 1, 1)], {}, {}),          # a squeeze-and-excitation channel gate
    ("mul", [X4, (4, 1, 5, 5)], {}, {}),          # a spatial map
    ("mul", [X4, X4], {}, dict(needs=(1,))),
    ("mul", [X4, (1, 6, 5, 1)], {}, {}),          # broadcast over the batch and columns
    # (N, F) features by a per-sample scale (numpy buffers this broadcast: a fixed 32 KiB per
    # call, not a tensor-sized temporary; F = 200 keeps the no-allocation bar meaningful)
    ("mul", [(8, 200), (8, 1)], {}, {}),
    ("add", [X4, X4, X4], {"act": "relu"}, dict(needs=(0, 2))),
    ("concat", [X4, (4, 2, 5, 5)], {}, {}),
    ("axpy", [X4, X4], {"a": 0.5}, {}),
    ("dropout", [X4], {"p": 0.3}, dict(train=True)),
    ("dropout", [X4], {"p": 0.3}, dict(train=False)),
    ("stochastic_depth", [(8, 3, 5, 5)], {"p": 0.3}, dict(train=True)),
    ("stochastic_depth", [(8, 3, 5, 5)], {"p": 0.3}, dict(train=False)),
]


def _id(case):
    name, _, attrs, kw = case
    return f"{name}-{'-'.join(f'{k}{v}' for k, v in attrs.items())}-{kw.get('train', False)}"


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_op_table(case):
    name, shapes, attrs, kw = case
    res = check_op(name, shapes, attrs, **kw)
    assert res["grad"] < 1e-6


@pytest.mark.parametrize("case", [CASES[0], CASES[6], CASES[12], CASES[19], CASES[25]],
                         ids=["batchnorm", "layernorm", "lrn", "elu", "cross_entropy"])
def test_float64_kernels(case):
    name, shapes, attrs, kw = case
    check_op(name, shapes, attrs, dtype=np.float64, rtol=1e-10, gradcheck=False, **kw)


def test_parallel_variants(monkeypatch):
    """The prange variant (chosen for big tensors) equals the reference too (BatchNorm only:
    each parallel kernel costs seconds of cold compile; GN/LRN share the loop structure)."""
    import compiler.ops.elementwise as ew
    monkeypatch.setattr(ew, "PAR_MIN", 0)
    check_op("batchnorm", *CASES[1][1:3], gradcheck=False, **CASES[1][3])


@pytest.mark.parametrize("row", [1, 2, 5, 6], ids=["relu", "affine_free", "flat_fused_relu", "flat_no_dx"])
def test_batchnorm_channel_split_over_threads(monkeypatch, row):
    """The channel ranges split over the two worker threads (big tensors in real nets; tiny
    here by lowering the thresholds), forward and backward, image and (N, F) inputs."""
    import compiler.ops.norm as nm
    from compiler.ops import parallel
    monkeypatch.setattr(nm, "BN_SPLIT_MIN", 0)
    monkeypatch.setattr(nm, "BN_SPLIT_MIN_FWD", 0)
    monkeypatch.setattr(parallel, "WORKERS", 2)
    name, shapes, attrs, kw = CASES[row]
    assert name == "batchnorm"
    check_op(name, shapes, attrs, gradcheck=False, **kw)


def _run(op, shapes, attrs, train, seed=0, dtype=np.float32, inputs=None):
    """Kernel forward with fresh buffers; returns (xs, y, saved)."""
    rs = np.random.default_rng(seed)
    xs = [None if s is None else rs.standard_normal(s).astype(dtype) for s in shapes]
    for i, v in (inputs or {}).items():
        v = np.asarray(v)
        xs[i] = v.copy() if v.dtype.kind in "iu" else v.astype(dtype)
    y = np.empty(op.out_shape(shapes, attrs), dtype)
    saved = {k: np.empty(s, dtype if d == "float" else d) for k, (s, d) in
             op.saved_specs(shapes, attrs).items()}
    ws = {k: np.empty(s, dtype) for k, s in op.workspace(shapes, attrs).items()}
    op.forward(xs, y, saved, ws, attrs, train, rng=np.random.default_rng(seed + 1))
    return xs, y, saved, ws


def test_batchnorm_running_stats_in_place():
    op = get_op("batchnorm")
    shapes = [X4, (C,), (C,), (C,), (C,)]
    attrs = {"momentum": 0.2}
    rm0 = np.linspace(-1, 1, C).astype(np.float32)
    rv0 = np.linspace(0.5, 2, C).astype(np.float32)
    xs, y, saved, _ = _run(op, shapes, attrs, True, inputs={3: rm0, 4: rv0})
    x = xs[0].astype(np.float64)
    m = x.size // C
    mu = x.mean(axis=(0, 2, 3))
    var = x.var(axis=(0, 2, 3))
    np.testing.assert_allclose(xs[3], 0.8 * rm0 + 0.2 * mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(xs[4], 0.8 * rv0 + 0.2 * var * m / (m - 1), rtol=1e-5)
    np.testing.assert_allclose(saved["istd"], 1 / np.sqrt(var + 1e-5), rtol=1e-5)
    # eval uses the running statistics and leaves them alone
    rm1, rv1 = xs[3].copy(), xs[4].copy()
    y2 = np.empty_like(y)
    op.forward(xs, y2, {}, {}, attrs, False)
    assert np.array_equal(xs[3], rm1) and np.array_equal(xs[4], rv1)
    ref = (xs[0] - rm1[:, None, None]) / np.sqrt(rv1[:, None, None] + 1e-5) * xs[1][:, None, None] \
        + xs[2][:, None, None]
    np.testing.assert_allclose(y2, ref, rtol=1e-4, atol=1e-5)


def test_batchnorm_global_stats_in_training_is_eval_and_keeps_the_statistics():
    """use_global_stats (Caffe) / a frozen Keras BatchNormalization: train=True normalises
    with the running statistics, leaves them unchanged, and backward treats them as constants."""
    op = get_op("batchnorm")
    shapes = [X4, (C,), (C,), (C,), (C,)]
    rm0 = np.linspace(-1, 1, C).astype(np.float32)
    rv0 = np.linspace(0.5, 2, C).astype(np.float32)
    xs, y, saved, _ = _run(op, shapes, {"global_stats": True, "momentum": 0.2}, True,
                           inputs={3: rm0, 4: rv0})
    assert np.array_equal(xs[3], rm0) and np.array_equal(xs[4], rv0)
    assert saved["train"][0] == 0
    y_eval = np.empty_like(y)
    op.forward(xs, y_eval, {}, {}, {}, False)
    np.testing.assert_array_equal(y, y_eval)
    dy = np.random.default_rng(5).standard_normal(y.shape).astype(np.float32)
    dx = np.empty_like(xs[0])
    op.backward(xs, y, saved, dy, [dx, np.empty(C, np.float32), np.empty(C, np.float32), None, None],
                {}, {"global_stats": True})
    np.testing.assert_allclose(dx, dy * (xs[1] / np.sqrt(rv0 + 1e-5))[:, None, None], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("alias", [0, 1, None])
def test_add_relu_backward_when_a_gradient_aliases_dy(alias):
    """Autodiff may hand dy itself in as one of the dxs: the fused add + ReLU must still give
    every input the masked gradient (masking dy in place, then copying)."""
    op = get_op("add")
    rs = np.random.default_rng(9)
    xs = [rs.standard_normal(X4).astype(np.float32) for _ in range(2)]
    y = np.empty(X4, np.float32)
    op.forward(xs, y, {}, {}, {"act": "relu"}, True)
    np.testing.assert_array_equal(y, np.maximum(xs[0] + xs[1], 0))
    dy = rs.standard_normal(X4).astype(np.float32)
    want = dy * (y > 0)
    dxs = [np.full(X4, np.nan, np.float32) for _ in range(2)]
    if alias is not None:
        dxs[alias] = dy
    op.backward(xs, y, {}, dy, dxs, {}, {"act": "relu"})
    for dx in dxs:
        np.testing.assert_array_equal(dx, want)


def test_dropout_statistics_and_reproducibility():
    op = get_op("dropout")
    shape = (64, 6, 5, 5)
    x = np.ones(shape, np.float32)
    for p in (0.0, 0.3, 0.9):
        y = np.empty_like(x)
        saved = {"mask": np.empty_like(x)}
        op.forward([x], y, saved, {}, {"p": p}, True, rng=np.random.default_rng(5))
        kept = np.mean(y != 0)
        assert abs(kept - (1 - p)) < 0.02
        assert np.allclose(y[y != 0], 1 / (1 - p))          # inverted: E[y] = x
        assert abs(y.mean() - 1.0) < 0.06
        y2 = np.empty_like(x)
        op.forward([x], y2, {"mask": np.empty_like(x)}, {}, {"p": p}, True,
                   rng=np.random.default_rng(5))
        assert np.array_equal(y, y2)
    y = np.empty_like(x)
    op.forward([x], y, {"mask": np.empty_like(x)}, {}, {"p": 1.0}, True, rng=np.random.default_rng(5))
    assert not y.any()


def test_stochastic_depth_modes():
    op = get_op("stochastic_depth")
    x = np.ones((400, 3), np.float32)
    y = np.empty_like(x)
    keep = np.empty(400, np.float32)
    op.forward([x], y, {"keep": keep}, {}, {"p": 0.25}, True, rng=np.random.default_rng(1))
    rows = y[:, 0]
    assert set(np.unique(rows)) <= {0.0, 1.0}               # no rescaling at train time
    assert np.all(y == rows[:, None]) and abs(rows.mean() - 0.75) < 0.06
    op.forward([x], y, {}, {}, {"p": 0.25}, False)
    assert np.allclose(y, 0.75)                              # test time: survival probability


def _batch64(shapes, inputs):
    """The case with its batch (leading dim of the first input) 64x larger."""
    N = shapes[0][0]
    big = [None if sh is None else ((64 * N,) + tuple(sh[1:]) if sh[0] == N else tuple(sh))
           for sh in shapes]
    ins = {i: (np.concatenate([v] * 64) if big[i] != np.shape(v) else v) for i, v in inputs.items()}
    return big, ins


def test_launchers_do_not_allocate():
    """After a warm-up call, forward + backward allocate far less than one input tensor."""
    for name, shapes, attrs, kw in CASES:
        op = get_op(name)
        train = kw.get("train", False)
        ints = kw.get("int_inputs", {})
        shapes, inputs = _batch64(shapes, kw.get("inputs", {}))
        for i, hi in ints.items():
            inputs[i] = np.random.default_rng(0).integers(0, hi, shapes[i])
        xs, y, saved, ws = _run(op, shapes, attrs, train, inputs=inputs)
        dy = np.ones_like(y)
        dxs = [None if (x is None or i in ints) else np.empty_like(x) for i, x in enumerate(xs)]
        rng = np.random.default_rng(0)
        op.forward(xs, y, saved, ws, attrs, train, rng=rng)
        op.backward(xs, y, saved, dy, dxs, ws, attrs)
        tracemalloc.start()
        op.forward(xs, y, saved, ws, attrs, train, rng=rng)
        op.backward(xs, y, saved, dy, dxs, ws, attrs)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < xs[0].nbytes // 4, f"{name} {attrs}: launcher allocated {peak} bytes"


# ---------------------------------------------------------------- PyTorch parity of the refs
try:
    import torch  # noqa: F811
except ImportError:   # the parity tests below skip with a clear reason
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed: parity tests skipped")


def _t(a, grad=True):
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


def _ref_fb(name, xs, attrs, train=True):
    op = get_op(name)
    xs = [None if x is None else np.array(x, copy=True) for x in xs]
    y, saved = op.ref_forward(xs, attrs, train=train, rng=None)
    g = np.random.default_rng(11).standard_normal(y.shape)
    return xs, y, g, op.ref_backward(xs, y, saved, g, attrs)


@pytest.mark.torch
@needs_torch
@pytest.mark.parametrize("shape", [X4, (8, C)])
def test_torch_batchnorm_train(shape):
    rs = np.random.default_rng(0)
    x, w, b = rs.standard_normal(shape), rs.standard_normal(C), rs.standard_normal(C)
    rm, rv = rs.standard_normal(C), rs.random(C) + 0.5
    xs, y, g, grads = _ref_fb("batchnorm", [x, w, b, rm, rv], {"momentum": 0.3})
    bn = (torch.nn.BatchNorm2d if len(shape) == 4 else torch.nn.BatchNorm1d)(C, momentum=0.3)
    bn = bn.double().train()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(w)); bn.bias.copy_(torch.tensor(b))
        bn.running_mean.copy_(torch.tensor(rm)); bn.running_var.copy_(torch.tensor(rv))
    xt = _t(x)
    yt = bn(xt)
    yt.backward(torch.tensor(g))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(xs[3], bn.running_mean.numpy(), rtol=1e-10)
    np.testing.assert_allclose(xs[4], bn.running_var.numpy(), rtol=1e-10)
    for mine, theirs in zip(grads[:3], (xt.grad, bn.weight.grad, bn.bias.grad)):
        np.testing.assert_allclose(mine, theirs.numpy(), rtol=1e-8, atol=1e-10)
    # eval mode with the updated running statistics
    ye, _ = get_op("batchnorm").ref_forward([x, w, b, xs[3], xs[4]], {}, train=False)
    np.testing.assert_allclose(ye, bn.eval()(torch.tensor(x)).detach().numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.torch
@needs_torch
@pytest.mark.parametrize("kind", ["relu6", "hardsigmoid", "hardswish", "silu", "gelu", "softplus"])
def test_torch_activation_kinds(kind):
    """The references of the newer activations against torch.nn.functional (forward and
    gradient, float64), over a range that crosses every kink and softplus' threshold."""
    F = torch.nn.functional
    x = np.linspace(-25, 25, 2001).reshape(1, 1, 1, -1)
    x = np.concatenate([x, np.array([-6, -3, 0, 3, 6, 20], float).reshape(1, 1, 1, -1) + 1e-3], axis=3)
    fn = {"relu6": F.relu6, "hardsigmoid": F.hardsigmoid, "hardswish": F.hardswish, "silu": F.silu,
          "gelu": F.gelu, "softplus": F.softplus}[kind]
    op = get_op("activation")
    y, _ = op.ref_forward([x], {"kind": kind})
    g = np.random.default_rng(3).standard_normal(x.shape)
    dx, = op.ref_backward([x], y, {}, g, {"kind": kind})
    xt = _t(x)
    yt = fn(xt)
    yt.backward(torch.tensor(g))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    # torch's hard* backward kernels use float32 constants (1.0f / 6.0f) even for doubles
    tol = 1e-7 if kind.startswith("hard") else 1e-10
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=tol, atol=1e-12)


@pytest.mark.torch
@needs_torch
def test_torch_norms_and_activations():
    rs = np.random.default_rng(1)
    F = torch.nn.functional
    x = rs.standard_normal(X4)
    w, b = rs.standard_normal(C), rs.standard_normal(C)
    wl, bl = rs.standard_normal(X4[1:]), rs.standard_normal(X4[1:])
    cases = [
        ("layernorm", [x, wl, bl], {}, lambda t, a, c: F.layer_norm(t, X4[1:], a, c, 1e-5), [wl, bl]),
        ("groupnorm", [x, w, b], {"groups": 3}, lambda t, a, c: F.group_norm(t, 3, a, c, 1e-5), [w, b]),
        ("instancenorm", [x, w, b], {}, lambda t, a, c: F.instance_norm(t, weight=a, bias=c), [w, b]),
        ("lrn", [x], {"size": 3, "alpha": 0.5, "beta": 0.6, "k": 2.0},
         lambda t: F.local_response_norm(t, 3, 0.5, 0.6, 2.0), []),
        ("lrn", [x], {"size": 4, "alpha": 0.3},
         lambda t: F.local_response_norm(t, 4, 0.3), []),
        ("prelu", [x, w], {}, lambda t, a: F.prelu(t, a), [w]),
        ("prelu", [x, w[:1]], {}, lambda t, a: F.prelu(t, a), [w[:1]]),
        ("activation", [x], {"kind": "elu", "alpha": 1.3}, lambda t: F.elu(t, 1.3), []),
        ("activation", [x], {"kind": "leaky_relu", "slope": 0.2}, lambda t: F.leaky_relu(t, 0.2), []),
        ("activation", [x], {"kind": "sigmoid"}, torch.sigmoid, []),
        ("softmax", [x], {}, lambda t: torch.softmax(t, 1), []),
    ]
    for name, xs, attrs, fn, params in cases:
        _, y, g, grads = _ref_fb(name, xs, attrs)
        ts = [_t(x)] + [_t(p) for p in params]
        yt = fn(*ts)
        yt.backward(torch.tensor(g))
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-9, atol=1e-10, err_msg=name)
        for mine, t in zip(grads, ts):
            np.testing.assert_allclose(mine, t.grad.numpy(), rtol=1e-8, atol=1e-10, err_msg=name)


@pytest.mark.torch
@needs_torch
def test_torch_losses():
    rs = np.random.default_rng(2)
    F = torch.nn.functional
    N, K = 8, 10
    z = rs.standard_normal((N, K)) * 3
    t = rs.integers(0, K, N)
    tf = rs.random((N, K))
    cases = [
        ("softmax_cross_entropy", t, {}, lambda a: F.cross_entropy(a, torch.tensor(t))),
        ("softmax_cross_entropy", t, {"label_smoothing": 0.1},
         lambda a: F.cross_entropy(a, torch.tensor(t), label_smoothing=0.1)),
        ("hinge", t, {"margin": 1.0}, lambda a: F.multi_margin_loss(a, torch.tensor(t)) * K),
        ("hinge", t, {"margin": 0.5},
         lambda a: F.multi_margin_loss(a, torch.tensor(t), margin=0.5) * K),
        ("bce_with_logits", tf, {},
         lambda a: F.binary_cross_entropy_with_logits(a, torch.tensor(tf))),
        ("mse", tf, {}, lambda a: F.mse_loss(a, torch.tensor(tf))),
    ]
    for name, target, attrs, fn in cases:
        op = get_op(name)
        y, saved = op.ref_forward([z, target], attrs, train=True)
        dz, dt = op.ref_backward([z, target], y, saved, np.array([1.7]), attrs)
        assert y.shape == (1,) and dt is None
        zt = _t(z)
        lt = fn(zt) * 1.7
        lt.backward()
        np.testing.assert_allclose(y[0] * 1.7, lt.item(), rtol=1e-10, err_msg=name)
        np.testing.assert_allclose(dz, zt.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)
    # per-position cross-entropy = torch's K-dimensional case, mean over N*H*W
    z4 = rs.standard_normal((2, 5, 3, 4)) * 3
    t3 = rs.integers(0, 5, (2, 3, 4))
    op = get_op("softmax_cross_entropy")
    for ls in (0.0, 0.1):
        y, saved = op.ref_forward([z4, t3], {"spatial": True, "label_smoothing": ls}, train=True)
        dz, _ = op.ref_backward([z4, t3], y, saved, np.array([1.7]), {"spatial": True, "label_smoothing": ls})
        zt = _t(z4)
        lt = F.cross_entropy(zt, torch.tensor(t3), label_smoothing=ls) * 1.7
        lt.backward()
        np.testing.assert_allclose(y[0] * 1.7, lt.item(), rtol=1e-10)
        np.testing.assert_allclose(dz, zt.grad.numpy(), rtol=1e-9, atol=1e-12)
