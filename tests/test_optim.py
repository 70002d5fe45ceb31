"""Compiled optimizer updates (compiler/optim.py) against hand-computed steps, the numpy
reference and torch.optim."""
from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest

from compiler.optim import PARALLEL_MIN, make_optimizer, nesterov_slides, resolve_config

PI = namedtuple("ParamInfo", "layer decay lr_mult frozen shape")

W0 = [1.0, -2.0, 0.5]
G0 = [0.5, 1.0, -1.0]


def run(cfg, steps=1, w=W0, g=G0, lr=0.1, decay=True, lr_mult=1.0, frozen=False,
        dtype=np.float64, shape=None):
    """Runs the compiled kernel on one tensor for ``steps`` steps with a fixed gradient."""
    w = np.array(w, dtype=dtype)
    shape = shape or w.shape
    info = {"p": PI("l", decay, lr_mult, frozen, shape)}
    opt = make_optimizer(cfg, info, dtype)
    p = w.reshape(-1).copy()
    gr = np.array(g, dtype=dtype).reshape(-1)
    state = {k: np.zeros(n, dtype) for k, n in opt.state_specs().items()}
    for t in range(1, steps + 1):
        opt.update(p, gr, state, lr, t)
    return p


HAND = [  # (train cfg, steps, expected weights after the steps); w=W0, g=G0, lr=0.1
    ({"optimizer": {"sgd": {}}}, 1, [0.95, -2.1, 0.6]),
    ({"optimizer": {"sgd": {}}, "regularization": {"weight_decay": 0.1}}, 1, [0.94, -2.08, 0.595]),
    ({"optimizer": {"sgd": {}}, "regularization": {"l1": 0.1}}, 1, [0.94, -2.09, 0.59]),
    ({"optimizer": {"sgd": {}}, "regularization": {"l1": 0.1, "weight_decay": 0.1}}, 1,
     [0.93, -2.07, 0.585]),
    ({"optimizer": {"sgd": {}}, "regularization": {"weight_decay": 0.1, "decoupled": True}}, 1,
     [0.94, -2.08, 0.595]),
    ({"optimizer": {"sgd": {"momentum": 0.9}}}, 2, [0.855, -2.29, 0.79]),
    ({"optimizer": {"sgd": {"momentum": 0.9, "nesterov": True}}}, 2, [0.7695, -2.461, 0.961]),
    ({"optimizer": {"adagrad": {}}}, 2, [1 - 0.1 - 0.1 / 2 ** 0.5, -2 - 0.1 - 0.1 / 2 ** 0.5,
                                           0.5 + 0.1 + 0.1 / 2 ** 0.5]),
    ({"optimizer": {"rmsprop": {"alpha": 0.9}}}, 1, [1 - 0.1 / 0.1 ** 0.5, -2 - 0.1 / 0.1 ** 0.5,
                                                    0.5 + 0.1 / 0.1 ** 0.5]),
    ({"optimizer": {"adam": {}}}, 1, [0.9, -2.1, 0.6]),
    ({"optimizer": {"adamw": {}}, "regularization": {"weight_decay": 0.1}}, 1, [0.89, -2.08, 0.595]),
]


@pytest.mark.parametrize("cfg,steps,expect", HAND)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_hand_computed(cfg, steps, expect, dtype):
    got = run(cfg, steps, dtype=dtype)
    tol = 1e-6 if dtype == np.float32 else 1e-7
    np.testing.assert_allclose(got, expect, rtol=tol, atol=tol)
    # the numpy reference agrees with the same numbers
    opt = make_optimizer(cfg, {"p": PI("l", True, 1.0, False, (3,))}, np.float64)
    p, st = {"p": np.array(W0)}, {}
    for t in range(1, steps + 1):
        opt.ref_update(p, {"p": np.array(G0)}, st, 0.1, t)
    np.testing.assert_allclose(p["p"], expect, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("cfg,slots", [
    ({"optimizer": {"sgd": {"momentum": 0.9}}}, ["momentum"]),
    ({"optimizer": {"sgd": {"momentum": 0.9, "nesterov": True}}}, ["momentum"]),
    ({"optimizer": {"rmsprop": {"alpha": 0.9, "momentum": 0.5}}}, ["square_avg", "momentum"]),
    ({"optimizer": {"adam": {}}}, ["exp_avg", "exp_avg_sq"])])
def test_decaying_state_never_goes_subnormal(cfg, slots):
    """A unit whose gradient stays 0 decays its state geometrically; below tiny/eps it is
    stored as 0 (subnormal arithmetic costs ~10x in the update, see optim.py.j2), while a
    NaN state stays NaN (training must still see it)."""
    dtype = np.float32
    opt = make_optimizer(cfg, {"p": PI("l", True, 1.0, False, (3,))}, dtype)
    state = {k: np.full(n, 1e-32, dtype) for k, n in opt.state_specs().items()}
    for k in slots:
        state[k][2] = np.nan
    p = np.array([1.0, 2.0, 3.0], dtype)
    opt.update(p, np.zeros(3, dtype), state, 0.1, 1)
    tiny = np.finfo(dtype).tiny
    for k in slots:
        s = state[k]
        assert s[0] == 0 and s[1] == 0, (k, s)                # 0.9e-32 < 1.18e-38 / 1.19e-7 = 1e-31
        assert np.isnan(s[2])
    # a state just above the threshold is kept exactly as the rule computes it
    st2 = {k: np.full(n, 1e-20, dtype) for k, n in opt.state_specs().items()}
    opt.update(p.copy(), np.zeros(3, dtype), st2, 0.1, 1)
    assert all(np.all(v > tiny) for v in st2.values())


def test_no_decay_on_bias_unless_decay_all():
    cfg = {"optimizer": {"sgd": {}}, "regularization": {"weight_decay": 0.1, "l1": 0.1}}
    np.testing.assert_allclose(run(cfg, decay=False), [0.95, -2.1, 0.6])
    cfg["regularization"]["decay_all"] = True
    np.testing.assert_allclose(run(cfg, decay=False), [0.93, -2.07, 0.585])


def test_lr_mult_and_frozen():
    np.testing.assert_allclose(run({"optimizer": {"sgd": {}}}, lr_mult=0.5), [0.975, -2.05, 0.55])
    np.testing.assert_allclose(run({"optimizer": {"adam": {}}}, frozen=True), W0)


def test_max_norm_rows():
    cfg = {"optimizer": {"sgd": {}}, "regularization": {"max_norm": 1.0}}
    got = run(cfg, w=[3.0, 4.0, 0.3, 0.4], g=[0.0] * 4, shape=(2, 2))
    np.testing.assert_allclose(got, [0.6, 0.8, 0.3, 0.4], rtol=1e-6)
    # 1-D tensors (biases) are not max-norm constrained
    np.testing.assert_allclose(run(cfg, w=[3.0, 4.0], g=[0.0, 0.0]), [3.0, 4.0])


def test_clip_grad_norm():
    cfg = {"optimizer": {"sgd": {}}, "regularization": {"clip_grad_norm": 1.0}}
    got = run(cfg, w=[0.0, 0.0], g=[3.0, 4.0], lr=1.0)
    np.testing.assert_allclose(got, [-0.6, -0.8], rtol=1e-6)
    got = run(cfg, w=[0.0, 0.0], g=[0.3, 0.4], lr=1.0)     # below the threshold: unchanged
    np.testing.assert_allclose(got, [-0.3, -0.4], rtol=1e-6)


def test_nesterov_equals_slides_rearranged_form():
    rng = np.random.default_rng(0)
    x = rng.normal(size=5)
    v = np.zeros(5)
    p = x.copy()
    opt = make_optimizer({"optimizer": {"sgd": {"momentum": 0.9, "nesterov": True}}},
                         {"p": PI("l", True, 1.0, False, (5,))}, np.float64)
    st = {"momentum": np.zeros(5)}
    for t in range(1, 8):
        g = rng.normal(size=5)
        x, v = nesterov_slides(x, v, g, 0.05, 0.9)
        opt.update(p, g, st, 0.05, t)
    np.testing.assert_allclose(p, x, rtol=1e-12, atol=1e-12)


def test_segments_offsets_and_parallel_table(monkeypatch):
    """Several tensors in one arena, and the chunked (prange) table gives the same result."""
    import compiler.optim as om
    rng = np.random.default_rng(1)
    info = {"a.weight": PI("a", True, 1.0, False, (4, 3)), "a.bias": PI("a", False, 1.0, False, (4,)),
            "b.weight": PI("b", True, 0.1, False, (3, 2, 2)), "c.weight": PI("c", True, 1.0, True, (5,))}
    n = sum(int(np.prod(i.shape)) for i in info.values())
    cfg = {"optimizer": {"sgd": {"momentum": 0.9, "nesterov": True}},
           "regularization": {"weight_decay": 0.01, "max_norm": 0.8, "l1": 1e-3}}
    outs = []
    for chunk in (None, 5):
        if chunk:
            monkeypatch.setattr(om, "PARALLEL_MIN", 0)
            monkeypatch.setattr(om, "CHUNK", chunk)
        opt = om.make_optimizer(cfg, info, np.float32)
        p = np.random.default_rng(2).normal(size=n).astype(np.float32)
        st = {k: np.zeros(s, np.float32) for k, s in opt.state_specs().items()}
        assert opt.parallel == bool(chunk)
        ref_p, off = {}, 0
        for k, i in info.items():
            m = int(np.prod(i.shape))
            ref_p[k] = p[off:off + m].reshape(i.shape).astype(np.float64)
            off += m
        ref_st = {}
        for t in range(1, 4):
            g = rng.normal(size=n).astype(np.float32)
            ref_g, off = {}, 0
            for k, i in info.items():
                m = int(np.prod(i.shape))
                ref_g[k] = g[off:off + m].reshape(i.shape).astype(np.float64)
                off += m
            opt.update(p, g, st, 0.1, t)
            opt.ref_update(ref_p, ref_g, ref_st, 0.1, t, info)
        np.testing.assert_allclose(p, np.concatenate([v.ravel() for v in ref_p.values()]),
                                   rtol=2e-5, atol=2e-6)
        outs.append(p)
    assert np.abs(outs[1][-5:] - outs[0][-5:]).max() == 0       # frozen tensor identical
    rows = outs[1][:12].reshape(4, 3)
    assert np.all(np.linalg.norm(rows, axis=1) <= 0.8 + 1e-5)


def test_config_errors_and_aliases():
    assert resolve_config({"optimizer": {"nesterov": {"momentum": 0.9}}}).rule == "nesterov"
    assert resolve_config({"optimizer": {"rmsprop": {"momentum": 0.5}}}).rule == "rmsprop_momentum"
    c = resolve_config({"optimizer": {"sgd": {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}}})
    assert c.weight_decay == 5e-4 and c.rule == "momentum"
    with pytest.raises(ValueError, match="unknown optimizer"):
        resolve_config({"optimizer": {"adamm": {}}})
    with pytest.raises(ValueError, match="unknown adam option"):
        resolve_config({"optimizer": {"adam": {"beta": 0.9}}})
    with pytest.raises(ValueError, match="1-based"):
        make_optimizer({}, {"p": PI("l", True, 1.0, False, (1,))}).update(
            np.zeros(1, np.float32), np.zeros(1, np.float32), {}, 0.1, 0)


# ---------------------------------------------------------------------------- torch parity
TORCH_CASES = [
    ("sgd", {"lr": 0.1, "momentum": 0.9}, {"weight_decay": 1e-2}),
    ("sgd", {"lr": 0.1, "momentum": 0.9, "nesterov": True}, {"weight_decay": 1e-2}),
    ("sgd", {"lr": 0.1}, {"weight_decay": 1e-2}),
    ("adam", {"lr": 1e-2, "betas": [0.9, 0.999], "eps": 1e-8}, {}),
    ("adam", {"lr": 1e-2}, {"weight_decay": 1e-2}),
    ("adamw", {"lr": 1e-2}, {"weight_decay": 1e-1}),
    ("rmsprop", {"lr": 1e-2, "alpha": 0.9}, {}),
    ("rmsprop", {"lr": 1e-2, "momentum": 0.9}, {"weight_decay": 1e-2}),
    ("adagrad", {"lr": 1e-1}, {"weight_decay": 1e-2}),
]


@pytest.mark.torch
@pytest.mark.parametrize("name,args,reg", TORCH_CASES)
def test_against_torch(name, args, reg):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    shapes = {"fc.weight": (4, 6), "fc.bias": (4,), "conv.weight": (3, 2, 3, 3)}
    info = {k: PI(k.split(".")[0], k.endswith("weight"), 1.0, False, s) for k, s in shapes.items()}
    init = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    grads = [{k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()} for _ in range(6)]

    opt = make_optimizer({"optimizer": {name: args}, "regularization": reg}, info, np.float32)
    arena = np.concatenate([init[k].ravel() for k in shapes])
    st = {k: np.zeros(n, np.float32) for k, n in opt.state_specs().items()}
    lrs = [args["lr"]] * 3 + [args["lr"] * 0.5] * 3     # a schedule change mid-way

    tp = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in init.items()}
    wd = reg.get("weight_decay", 0.0)
    decay = [tp["fc.weight"], tp["conv.weight"]]
    groups = [{"params": decay, "weight_decay": wd}, {"params": [tp["fc.bias"]], "weight_decay": 0.0}]
    kw = {k: (tuple(v) if k == "betas" else v) for k, v in args.items()}
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
           "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad}[name]
    topt = cls(groups, **kw)
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        opt.update(arena, np.concatenate([g[k].ravel() for k in shapes]), st, lr, t)
        for pg in topt.param_groups:
            pg["lr"] = lr
        for k in shapes:
            tp[k].grad = torch.tensor(g[k])
        topt.step()
    want = np.concatenate([tp[k].detach().numpy().ravel() for k in shapes])
    np.testing.assert_allclose(arena, want, rtol=1e-5, atol=1e-6)


@pytest.mark.torch
def test_clip_and_maxnorm_against_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    w = rng.normal(size=(5, 7)).astype(np.float32)
    g = (10 * rng.normal(size=(5, 7))).astype(np.float32)
    opt = make_optimizer({"optimizer": {"sgd": {}},
                          "regularization": {"clip_grad_norm": 2.0, "max_norm": 1.5}},
                         {"w": PI("l", True, 1.0, False, (5, 7))}, np.float32)
    p = w.ravel().copy()
    opt.update(p, g.ravel().copy(), {}, 0.3, 1)
    tw = torch.nn.Parameter(torch.tensor(w))
    tw.grad = torch.tensor(g)
    torch.nn.utils.clip_grad_norm_([tw], 2.0)
    torch.optim.SGD([tw], lr=0.3).step()
    with torch.no_grad():
        want = torch.renorm(tw, 2, 0, 1.5).numpy()
    np.testing.assert_allclose(p.reshape(5, 7), want, rtol=1e-5, atol=1e-6)
    assert PARALLEL_MIN > 0


def test_max_norm_rescales_each_units_incoming_weights():
    """max_norm rescales the rows after a weight's unit dims: linear per output unit,
    locally_connected per (oh, ow, out) unit (its (cin, kh, kw) block; it was once per oh
    slice), conv_transpose per input channel (its stored rows, Keras's MaxNorm default)."""
    import compiler
    spec = """netspec: 1
name: mn
input: [2, 4, 4]
layers:
  - locally_connected: {name: lc, out: 3, kernel: 3}
  - conv_transpose: {name: ct, out: 5, kernel: 2, stride: 2}
  - flatten: {}
  - linear: {name: fc, out: 3}
train: {optimizer: {sgd: {lr: 1.0e-12}}, regularization: {max_norm: 0.5}}
"""
    net = compiler.compile(spec, batch_size=2, dtype="float64", seed=0)
    for v in net.params.values():
        if v.ndim >= 2:
            v[...] = 1.0
    net.lr = 1e-12
    net.step(np.zeros((2, 2, 4, 4)), np.array([0, 1]))
    p = net.params
    np.testing.assert_allclose(np.sqrt((p["fc.weight"] ** 2).sum(1)), 0.5, rtol=1e-6)
    np.testing.assert_allclose(np.sqrt((p["lc.weight"] ** 2).sum((3, 4, 5))), 0.5, rtol=1e-6)
    np.testing.assert_allclose(np.sqrt((p["ct.weight"] ** 2).sum((1, 2, 3))), 0.5, rtol=1e-6)
