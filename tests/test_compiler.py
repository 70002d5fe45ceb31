"""Compiler: IR structure, autodiff wiring, memory planning, and whole-net gradient checks.

Whole-net checks compile the net in float64 and compare ``loss_and_grads`` with central
finite differences of the compiled loss on random coordinates of every parameter
(the seeds' gradient check).
"""
from __future__ import annotations

import re

import numpy as np
import pytest

import compiler
import netspec
from compiler.ir import check_graph, format_graph

SMALL_UNET = """
netspec: 1
name: unet_small
input: [1, 44, 44]
blocks:
  double:
    args: {c: int}
    layers:
      - conv: {name: conv1, out: $c, kernel: 3}
      - relu: {}
      - conv: {name: conv2, out: $c, kernel: 3}
      - relu: {}
layers:
  - double: {name: down1, c: 4}
  - maxpool: {kernel: 2}
  - double: {name: down2, c: 8}
  - conv_transpose: {name: up1, out: 4, kernel: 2, stride: 2}
  - center_crop: {name: crop1, from: [down1.relu2, up1]}
  - concat: {name: cat1, from: [crop1, up1]}
  - double: {name: up_conv1, c: 4}
  - conv: {name: head, out: 1, kernel: 1}
  - sigmoid: {}
"""


def grad_check(net, x, t, n_coords=4, eps=1e-6, seed=0):
    """Max relative error between analytic and central-difference gradients.

    Relative error |a - n| / max(|a|, |n|, floor), floor = 1e-3 * max |grad| of that
    parameter (a coordinate whose gradient is 1e-9 of the rest measures float64 round-off
    of the loss, not the gradient).  Coordinates where the step crosses a kink (ReLU,
    max-pool argmax switch) -- the two one-sided differences disagree -- are skipped,
    as the seeds advise; at most half of them may be.
    """
    rng = np.random.default_rng(seed)
    # random layers (dropout, DropConnect, stochastic depth, fractional pooling) must draw
    # the same masks at every evaluation: restore the net's generator before each one
    state = net.rng.bit_generator.state
    _compute = net.compute_grads

    def compute(x, t):
        net.rng.bit_generator.state = state
        return _compute(x, t)

    net.rng.bit_generator.state = state
    l0, grads = net.loss_and_grads(x, t)
    worst, skipped, total = {}, 0, 0
    for name, p in net.params.items():
        flat = p.reshape(-1)
        errs = [0.0]
        for i in rng.choice(flat.size, size=min(n_coords, flat.size), replace=False):
            old = flat[i]
            flat[i] = old + eps
            lp = compute(x, t)
            flat[i] = old - eps
            lm = compute(x, t)
            flat[i] = old
            fwd, bwd = (lp - l0) / eps, (l0 - lm) / eps
            total += 1
            scale = 1e-3 * float(np.abs(grads[name]).max()) + 1e-12
            kink = abs(fwd - bwd) > 1e-2 * max(abs(fwd), abs(bwd), scale)
            if not kink:
                # a step can cross kinks on both sides and still look symmetric: the
                # central difference must also agree with one at a 10x smaller step
                h = eps / 10
                flat[i] = old + h
                lp2 = compute(x, t)
                flat[i] = old - h
                lm2 = compute(x, t)
                flat[i] = old
                num2 = (lp2 - lm2) / (2 * h)
                num1 = (lp - lm) / (2 * eps)
                kink = abs(num1 - num2) > 1e-2 * max(abs(num1), abs(num2), scale)
            if kink:
                skipped += 1
                continue
            num = (lp - lm) / (2 * eps)
            ana = grads[name].reshape(-1)[i]
            if float(np.abs(grads[name]).max()) < 1e-10:
                # an identically zero gradient (e.g. a conv bias before train-mode BatchNorm):
                # relative error is meaningless; the numerical one must vanish too
                errs.append(0.0 if abs(num) < 1e-6 else 1.0)
                continue
            errs.append(abs(num - ana) / max(abs(num), abs(ana), scale))
        worst[name] = max(errs)
    assert skipped <= total // 2, f"{skipped} of {total} coordinates crossed a kink"
    return worst


@pytest.fixture(scope="module")
def lenet():
    return compiler.compile(netspec.load("specs/lenet5.yaml"), batch_size=2, dtype=np.float64)


def test_targets_are_checked(lenet):
    """Class labels must be integers (1.5 and NaN are refused, 2.0 is fine) and one per
    sample; the messages say what was expected."""
    x = np.zeros((2, 1, 28, 28))
    for bad, msg in (([0.0, 1.5], "class labels must be integers, got 1.5"), ([0, np.nan], "got nan"),
                     ([0, 1, 2], "expected targets of shape (2,)"), (["a", "b"], "integers, got 'a'")):
        with pytest.raises(ValueError, match=re.escape(msg)):
            lenet.loss_and_grads(x, bad)
    assert np.isfinite(lenet.loss_and_grads(x, [0.0, 2.0])[0])


def test_lenet_train_graph_structure(lenet):
    g = lenet.graphs["train"]
    check_graph(g)
    fwd = [n for n in g.nodes if n.phase == "fwd"]
    bwd = [n for n in g.nodes if n.phase == "bwd"]
    # conv+relu and linear+relu are fused: no standalone relu nodes remain
    assert not [n for n in fwd if n.op == "activation"]
    assert sum(1 for n in fwd if n.a.get("act") == "relu") == 4
    # every forward op with a trainable input gets a VJP; the first conv computes no dx
    conv1_vjp = next(n for n in bwd if n.layer.startswith("conv1"))
    assert conv1_vjp.outputs[0] is None
    assert set(g.param_grads) == set(lenet.params)
    plan = g.meta["plan"]
    assert 0 < plan["arena_size"] < plan["unplanned"]
    assert "conv1" in format_graph(g)


def test_resnet_block_ends_fuse_add_and_relu(monkeypatch):
    """Every residual add + ReLU of ResNet-20 becomes one add node with act=relu; no
    standalone activation remains in the train graph, forward or backward.  (Without
    fuse_residual, which then folds each such add into the block's last BatchNorm:
    tests/test_conv_fusion.py.)"""
    from compiler.passes import pipeline
    from compiler.passes.fuse_residual import fuse_residual
    monkeypatch.setattr(pipeline, "TRAIN_FORWARD", [p for p in pipeline.TRAIN_FORWARD if p is not fuse_residual])
    net = compiler.compile(netspec.load("specs/resnet20.yaml"), batch_size=2, train=True)
    g = net.graphs["train"]
    adds = [n for n in g.nodes if n.op == "add" and n.phase == "fwd"]
    assert len(adds) == 9 and all(n.a.get("act") == "relu" for n in adds)
    assert not [n for n in g.nodes if n.op == "activation"]
    assert all(n.a.get("act") == "relu" for n in g.nodes if n.op == "add" and n.phase == "bwd")


def test_lenet_gradients_match_finite_differences(lenet):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 1, 28, 28))
    t = np.array([3, 7])
    worst = grad_check(lenet, x, t)
    assert max(worst.values()) < 1e-5, worst


def test_eval_forward_any_batch(lenet):
    x = np.random.default_rng(2).standard_normal((5, 1, 28, 28))
    y = lenet.forward(x)
    assert y.shape == (5, 10)
    y2 = np.concatenate([lenet.forward(x[:2]), lenet.forward(x[2:])])
    np.testing.assert_allclose(y, y2, rtol=1e-12)


def test_same_spec_same_source():
    spec = netspec.load("specs/lenet5.yaml")
    from compiler.net import _build_graphs
    from compiler.codegen.cpu import print_step_module
    r = netspec.check(spec)
    a = print_step_module(_build_graphs(r, 4, True, {"softmax_cross_entropy": {}}, set())["train"], "train", "float32")[0]
    b = print_step_module(_build_graphs(r, 4, True, {"softmax_cross_entropy": {}}, set())["train"], "train", "float32")[0]
    assert a == b


def test_small_unet_gradients():
    # tanh instead of ReLU: the gradients are ~1e-6 here, so the FD step must be large
    # enough to beat round-off, and ReLU kinks would then be crossed (lenet covers ReLU)
    net = compiler.compile(netspec.load(SMALL_UNET.replace("relu", "tanh")), batch_size=2,
                           dtype=np.float64, loss={"mse": {}})
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 1, 44, 44))
    t = rng.random((2, *net.output_shape))
    worst = grad_check(net, x, t, n_coords=3, eps=1e-5)
    assert max(worst.values()) < 1e-5, worst


def _subset_check(net, x, t, names, n_coords=2, eps=1e-6):
    """grad_check restricted to some parameters (keeps big nets fast)."""
    keep = {k: net.params[k] for k in names}
    saved, net.params = net.params, keep
    try:
        return grad_check(net, x, t, n_coords=n_coords, eps=eps)
    finally:
        net.params = saved


def test_resnet20_gradients():
    net = compiler.compile(netspec.load("specs/resnet20.yaml"), batch_size=2, dtype=np.float64)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 32, 32))
    t = np.array([1, 8])
    names = list(net.params)
    pick = [names[0], names[1]] + [names[i] for i in rng.choice(len(names) - 4, 8, replace=False) + 2] \
        + names[-2:] + [n for n in names if "downsample" in n][:2]
    worst = _subset_check(net, x, t, pick)
    assert max(worst.values()) < 1e-5, worst


def test_autoencoder_gradients():
    # the zoo autoencoder's structure with tanh for ReLU: its gradients are ~1e-7, so the
    # FD step must be large, and a bias step would then cross many ReLU kinks at once
    text = open("specs/autoencoder.yaml").read().replace("relu", "tanh")
    net = compiler.compile(netspec.load(text), batch_size=2, dtype=np.float64, loss={"mse": {}})
    rng = np.random.default_rng(6)
    x = rng.random((2, 1, 28, 28))
    worst = grad_check(net, x, x, n_coords=3, eps=1e-4)   # gradients ~1e-7: beat round-off
    assert max(worst.values()) < 1e-5, worst


ZOO = ["lenet5", "alexnet", "vgg16", "vgg16_bn", "googlenet", "resnet18", "resnet50",
       "resnet152", "resnet20", "unet", "autoencoder", "digits"]


@pytest.mark.parametrize("name", ZOO)
def test_every_zoo_spec_compiles(name, tmp_path):
    """Lower, differentiate, run every pass and print both step modules (no kernels run)."""
    info = compiler.emit(netspec.load(f"specs/{name}.yaml"), tmp_path, batch_size=1)
    assert set(info) == {"eval", "train"}
    for mode in info:
        assert info[mode]["planned_bytes"] <= info[mode]["unplanned_bytes"]
        assert (tmp_path / f"step_{mode}.py").stat().st_size > 0


MULTI = """netspec: 1
name: multiout
input: [1, 8, 8]
layers:
  - conv: {name: enc, out: 4, kernel: 3, stride: 2, pad: 1}
  - relu: {name: z}
  - upsample: {scale: 2}
  - conv: {name: dec, out: 1, kernel: 3, pad: 1}
outputs: [z, dec]
"""


def test_several_outputs_check_forward_and_train():
    """`outputs: [z, dec]`: check lists both (text, JSON, a warning that the loss takes the
    first); forward returns one array per output, equal to the single-output nets' forwards;
    training applies the loss to the first; forward_main gives the first."""
    spec = netspec.load(MULTI)
    rep = netspec.check(spec)
    assert rep.to_json()["outputs"] == [{"name": "z", "output_shape": [4, 4, 4]},
                                        {"name": "dec", "output_shape": [1, 8, 8]}]
    assert "-> outputs z (4, 4, 4), dec (1, 8, 8)" in rep.format_table()
    assert "(a training loss applies to the first)" in rep.format_table()
    net = compiler.compile(spec, batch_size=4, loss={"mse": {}}, seed=0)
    x = np.random.default_rng(0).standard_normal((6, 1, 8, 8)).astype(np.float32)
    z, dec = net.forward(x)
    assert z.shape == (6, 4, 4, 4) and dec.shape == (6, 1, 8, 8)
    np.testing.assert_array_equal(net.forward_main(x), z)
    single = compiler.compile(netspec.load(MULTI.replace("outputs: [z, dec]", "")), batch_size=4,
                              train=False, seed=0)
    single.load_params({**net.params, **net.buffers})
    np.testing.assert_allclose(single.forward(x), dec, rtol=1e-6, atol=1e-6)
    loss = net.step(x[:4], np.zeros((4, 4, 4, 4), np.float32))
    np.testing.assert_allclose(loss, np.mean(z[:4] ** 2), rtol=1e-5)


def test_blas_limit_pins_and_restores_blas_threads():
    """compiler/threads.py: a step runs BLAS single-threaded and leaves the caller's setting."""
    pytest.importorskip("threadpoolctl")
    import scipy.linalg  # noqa: F401  (blas_limit loads scipy's BLAS too: count it before)
    from threadpoolctl import threadpool_info, threadpool_limits
    from compiler.threads import blas_limit

    def blas_threads():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    if not blas_threads():
        pytest.skip("no BLAS library found by threadpoolctl")
    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        with blas_limit():
            assert all(n == 1 for n in blas_threads())
        assert blas_threads() == before


def test_batchnorm_with_one_value_per_channel_is_refused_in_training():
    """Batch 1 on a 1x1 map leaves BatchNorm no batch variance (PyTorch raises at the first
    forward); refused at compile time with the layer and the fix, fine for inference, with
    use_global_stats, or with a bigger batch."""
    spec = """
netspec: 1
name: bn1x1
input: [3, 7, 7]
layers:
  - global_avgpool: {}
  - conv: {name: c, out: 8, kernel: 1, bias: false}
  - batchnorm: {name: bn}
  - relu: {}
  - flatten: {}
  - linear: {name: fc, out: 5}
"""
    with pytest.raises(ValueError, match=r"batchnorm 'bn' sees 1 value per channel in training"):
        compiler.compile(netspec.load(spec), batch_size=1)
    compiler.compile(netspec.load(spec), batch_size=1, train=False)
    compiler.compile(netspec.load(spec), batch_size=2)
    compiler.compile(netspec.load(spec.replace("{name: bn}", "{name: bn, use_global_stats: true}")), batch_size=1)
