"""passes/fuse_maxpool.py and fuse_residual.py: which conv -> maxpool pairs and conv -> add
pairs become one conv2d node (``pool`` attr / ``residual`` input), and that the fused net
computes exactly what the unfused one does."""
from __future__ import annotations

import numpy as np
import pytest

import compiler
import netspec
from compiler.lower import lower
from compiler.passes import pipeline
from compiler.passes.fuse_maxpool import fuse_maxpool
from compiler.passes.fuse_residual import fuse_residual


def _graph(text, target="cpu"):
    r = netspec.check(netspec.load(text))
    return pipeline.run(lower(r, 2), pipeline.INFERENCE, target)


def _spec(pool, extra=""):
    return f"""
netspec: 1
name: t
input: [3, 9, 9]
layers:
  - conv: {{name: c1, out: 4, kernel: 3, pad: 1}}
  - relu: {{}}
  - maxpool: {pool}
{extra}  - flatten: {{}}
  - linear: {{name: fc, out: 3}}
"""


def _ops(g):
    return [(n.op, n.a.get("pool"), n.a.get("act")) for n in g.nodes if n.phase == "fwd"]


def test_lenet_pools_fuse_in_train_and_eval():
    net = compiler.compile(netspec.load("specs/lenet5.yaml"), batch_size=2)
    for mode in ("train", "eval"):
        g = net.graphs[mode]
        assert not [n for n in g.nodes if n.op == "maxpool2d"]
        convs = [n for n in g.nodes if n.op == "conv2d"]
        assert all(n.a["pool"] == (2, 2) and n.a["act"] == "relu" for n in convs)
        assert [g.values[n.outputs[0]].shape for n in convs if n.phase == "fwd"] == [(2, 6, 14, 14), (2, 16, 5, 5)]
    # the full-size conv outputs are gone: less planned memory than the unfused graph
    plan = net.graphs["train"].meta["plan"]
    r = netspec.check(netspec.load("specs/lenet5.yaml"))
    g = pipeline.run(lower(r, 2, loss={"softmax_cross_entropy": {}}),
                     [p for p in pipeline.TRAIN_FORWARD if p is not fuse_maxpool])
    from compiler.autodiff import differentiate
    unfused = pipeline.run(differentiate(g), pipeline.TRAIN_BACKWARD)
    assert plan["arena_size"] < unfused.meta["plan"]["arena_size"]


@pytest.mark.parametrize("pool,fused", [
    ("{kernel: 2}", (2, 2)),                                    # 9x9 -> 4x4: floor drops a row
    ("{kernel: 3}", (3, 3)),
    ("{kernel: [2, 3], stride: [2, 3]}", (2, 3)),
    ("{kernel: 3, stride: 2}", None),                           # overlapping windows
    ("{kernel: 2, pad: 1}", None),
    ("{kernel: 2, ceil_mode: true}", None),                     # a partial last window
])
def test_which_pools_fuse(pool, fused):
    ops = _ops(_graph(_spec(pool)))
    assert ops[0][0] == "conv2d" and ops[0][1] == fused
    assert ("maxpool2d" in [o[0] for o in ops]) == (fused is None)


def test_no_fusion_when_the_conv_output_has_another_consumer_or_for_cuda_and_onnx():
    two_uses = _spec("{kernel: 2}").replace("[3, 9, 9]", "[3, 8, 8]").replace("relu: {}", "relu: {name: r1}")
    two_uses = two_uses.replace("  - maxpool: {kernel: 2}\n", """  - maxpool: {name: p, kernel: 2, from: r1}
  - upsample: {name: u, scale: 2}
  - concat: {name: cat, from: [r1, u]}
""")
    ops = _ops(_graph(two_uses))
    assert "maxpool2d" in [o[0] for o in ops] and all(o[1] is None for o in ops)
    for target in ("cuda", "onnx"):
        assert "maxpool2d" in [o[0] for o in _ops(_graph(_spec("{kernel: 2}"), target))]


def test_fused_net_equals_unfused_bit_for_bit(monkeypatch):
    """A train step and the eval forward of LeNet-5 (float32, 2 worker threads): the fused
    graph gives the very same numbers as the unfused one."""
    spec = netspec.load("specs/lenet5.yaml")
    kw = dict(batch_size=8, seed=0, optimizer={"sgd": {"lr": 0.1, "momentum": 0.9}})
    a = compiler.compile(spec, **kw)
    monkeypatch.setattr(pipeline, "TRAIN_FORWARD", [p for p in pipeline.TRAIN_FORWARD if p is not fuse_maxpool])
    monkeypatch.setattr(pipeline, "INFERENCE", [p for p in pipeline.INFERENCE if p is not fuse_maxpool])
    b = compiler.compile(spec, **kw)
    assert [n for n in b.graphs["train"].nodes if n.op == "maxpool2d"]
    b.param_arena[:] = a.param_arena
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 1, 28, 28)).astype(np.float32)
    t = rng.integers(0, 10, 8)
    np.testing.assert_array_equal(a.forward(x), b.forward(x))
    for _ in range(2):
        assert a.step(x, t) == b.step(x, t)
    np.testing.assert_array_equal(a.param_arena, b.param_arena)


RESIDUAL = """
netspec: 1
name: res
input: [3, 8, 8]
blocks:
  block:
    args: {c: int}
    layers:
      - conv: {name: conv1, out: $c, kernel: 3, pad: 1}
      - relu: {}
      - conv: {name: conv2, out: $c, kernel: 3, pad: 1}
      - add: {name: add, from: [conv2, input]}
      - relu: {}
layers:
  - conv: {name: stem, out: 4, kernel: 3, pad: 1}
  - relu: {}
  - block: {name: b1, c: 4}
  - block: {name: b2, c: 4}
  - global_avgpool: {}
  - flatten: {}
  - linear: {name: fc, out: 3}
"""


def test_resnet20_eval_graph_has_no_adds_left():
    """BN folds into the convs, then every block-closing add + ReLU becomes the second
    conv's epilogue (the projection shortcuts' convs are the other operand)."""
    net = compiler.compile(netspec.load("specs/resnet20.yaml"), batch_size=2)
    ev = net.graphs["eval"]
    assert not [n for n in ev.nodes if n.op == "add"]
    fused = [n for n in ev.nodes if n.op == "conv2d" and len(n.inputs) == 4]
    assert len(fused) == 9 and all(n.a["act"] == "relu" for n in fused)
    # in training BatchNorm sits between conv and add: the add + ReLU fuse into that BN
    tr = net.graphs["train"]
    assert not [n for n in tr.nodes if n.op == "add" and n.phase == "fwd"]
    bns = [n for n in tr.nodes if n.op == "batchnorm" and n.phase == "fwd" and len(n.inputs) == 6]
    assert len(bns) == 9 and all(n.a["act"] == "relu" for n in bns)
    vjps = [n for n in tr.nodes if n.op == "batchnorm" and n.phase == "bwd" and len(n.outputs) > 5
            and n.outputs[5] is not None]
    assert len(vjps) == 9                                                        # dres flows


def test_bn_residual_fused_training_equals_unfused(monkeypatch):
    """The fused BN + add + ReLU computes the same loss, gradients and running statistics
    as the separate ops (float64, one training step's gradients of ResNet-20)."""
    spec = netspec.load("specs/resnet20.yaml")
    a = compiler.compile(spec, batch_size=2, seed=0, dtype=np.float64)
    monkeypatch.setattr(pipeline, "TRAIN_FORWARD", [p for p in pipeline.TRAIN_FORWARD if p is not fuse_residual])
    b = compiler.compile(spec, batch_size=2, seed=0, dtype=np.float64)
    assert len([n for n in b.graphs["train"].nodes if n.op == "add" and n.phase == "fwd"]) == 9
    b.param_arena[:] = a.param_arena
    rng = np.random.default_rng(3)
    x, t = rng.standard_normal((2, 3, 32, 32)), np.array([1, 7])
    la, ga = a.loss_and_grads(x, t)
    lb, gb = b.loss_and_grads(x, t)
    assert abs(la - lb) <= 1e-12 * abs(la)
    for k in ga:
        np.testing.assert_allclose(ga[k], gb[k], rtol=1e-9, atol=1e-12, err_msg=k)
    for k in a.buffers:
        np.testing.assert_allclose(a.buffers[k], b.buffers[k], rtol=1e-12, atol=1e-15, err_msg=k)


def test_bn_free_residual_net_fuses_in_training_and_matches_finite_differences():
    from test_compiler import grad_check
    net = compiler.compile(netspec.load(RESIDUAL), batch_size=2, dtype=np.float64)
    g = net.graphs["train"]
    assert not [n for n in g.nodes if n.op == "add" and n.phase == "fwd"]
    vjps = [n for n in g.nodes if n.op == "conv2d" and n.phase == "bwd" and len(n.inputs) == 6]
    assert len(vjps) == 2 and all(n.outputs[3] is not None for n in vjps)   # dres flows
    rng = np.random.default_rng(0)
    worst = grad_check(net, rng.standard_normal((2, 3, 8, 8)), np.array([0, 2]))
    assert max(worst.values()) < 1e-5, worst


def test_residual_fusion_skipped_for_cuda_onnx_and_a_shared_conv_output():
    for target in ("cuda", "onnx"):
        assert [n for n in _graph(RESIDUAL, target).nodes if n.op == "add"]
    shared = RESIDUAL.replace("      - relu: {}\nlayers:", "      - relu: {}\n      - add: {name: again, from: [conv2, add]}\nlayers:")
    g = _graph(shared)
    assert len([n for n in g.nodes if n.op == "add"]) == 4     # conv2 feeds two adds: no fusion


def test_residual_fused_net_equals_unfused_bit_for_bit(monkeypatch):
    spec = netspec.load("specs/resnet20.yaml")
    a = compiler.compile(spec, batch_size=4, seed=0, train=False)
    monkeypatch.setattr(pipeline, "INFERENCE", [p for p in pipeline.INFERENCE if p is not fuse_residual])
    b = compiler.compile(spec, batch_size=4, seed=0, train=False)
    assert [n for n in b.graphs["eval"].nodes if n.op == "add"]
    b.param_arena[:] = a.param_arena
    x = np.random.default_rng(1).standard_normal((4, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(a.forward(x), b.forward(x))


def test_no_pool_fusion_over_winograd(monkeypatch):
    """A 3x3 pad-1 conv on an 8-wide input runs row Winograd (conv_wino.usable): its pool stays
    a separate node (measured faster than the fused wide-row conv), unless OVER_WINOGRAD."""
    import compiler.passes.fuse_maxpool as FM
    text = _spec("{kernel: 2}").replace("input: [3, 9, 9]", "input: [16, 8, 8]")
    ops = _ops(_graph(text))
    assert ops[0] == ("conv2d", None, "relu") and "maxpool2d" in [o[0] for o in ops]
    monkeypatch.setattr(FM, "OVER_WINOGRAD", True)
    ops = _ops(_graph(text))
    assert ops[0][1] == (2, 2) and "maxpool2d" not in [o[0] for o in ops]
    # few input channels (a first layer): the fused wide-row conv stays (measured faster)
    monkeypatch.setattr(FM, "OVER_WINOGRAD", False)
    ops = _ops(_graph(text.replace("input: [16, 8, 8]", "input: [4, 8, 8]")))
    assert ops[0][1] == (2, 2) and "maxpool2d" not in [o[0] for o in ops]
