"""Every layer type, compiled inside a net: float64 whole-net gradient check.

Four small nets together use every layer type of the catalogue (the registry test checks
that), so each layer's lowering, VJP wiring and kernels are exercised end to end, with the
random layers drawing the same masks at every evaluation.
"""
from __future__ import annotations

import numpy as np
import pytest

import compiler
import netspec
from netspec.layers import REGISTRY

from test_compiler import grad_check

NETS = {
    "plain": """
netspec: 1
name: plain
input: [4, 9, 9]
layers:
  - conv: {name: c1, out: 6, kernel: 3, pad: same, groups: 2, dilation: 1}
  - batchnorm: {name: bn1}
  - prelu: {name: pr, num_parameters: 6}
  - maxpool: {kernel: 2, ceil_mode: true}
  - lrn: {size: 3}
  - conv_transpose: {name: up, out: 4, kernel: 3, stride: 2, pad: 1}
  - elu: {}
  - avgpool: {kernel: 2, ceil_mode: true, count_include_pad: false}
  - adaptive_avgpool: {size: [3, 2]}       # 5x5 -> 3x2: overlapping, unequal windows
  - layernorm: {name: ln}
  - leaky_relu: {slope: 0.1}
  - dropout: {p: 0.3}
  - flatten: {}
  - linear: {name: fc1, out: 12}
  - tanh: {}
  - dropconnect: {name: dc, out: 10, p: 0.4}
""",
    "exotic": """
netspec: 1
name: exotic
input: [2, 10, 10]
layers:
  - locally_connected: {name: lc, out: 4, kernel: 3}
  - groupnorm: {name: gn, groups: 2}
  - sigmoid: {}
  - fractional_maxpool: {kernel: 2, output_size: 5}
  - instancenorm: {name: inorm, affine: true}
  - conv: {name: c2, out: 6, kernel: 1, weight_norm: true}
  - maxout: {k: 2}
  - upsample: {mode: bilinear, size: 8}
  - conv: {name: c3, out: 3, kernel: 3}
  - center_crop: {size: 4}
  - upsample: {mode: nearest, scale: 2}
  - global_maxpool: {}
  - reshape: {shape: [3]}
  - linear: {name: fc, out: 5, weight_norm: true}
  - softmax: {}
""",
    "modern": """
netspec: 1
name: modern
input: [3, 6, 6]
layers:
  - conv: {name: c1, out: 8, kernel: 3, pad: 1}
  - gelu: {}
  - conv: {name: c2, out: 8, kernel: 3, pad: 1}
  - silu: {}
  - conv: {name: c3, out: 8, kernel: 1}
  - hardswish: {}
  - conv: {name: c4, out: 8, kernel: 1}
  - softplus: {}
  - conv: {name: c5, out: 8, kernel: 1}
  - relu6: {name: r6}
  - global_avgpool: {name: squeeze}          # squeeze-and-excitation gate
  - conv: {name: se1, out: 4, kernel: 1}
  - relu: {}
  - conv: {name: se2, out: 8, kernel: 1}
  - hardsigmoid: {name: gate}
  - multiply: {from: [r6, gate]}
  - global_avgpool: {}
  - flatten: {}
  - linear: {name: fc1, out: 8}
  - hardsigmoid: {}
  - linear: {name: fc2, out: 5}
""",
    "residual": """
netspec: 1
name: residual
input: [3, 8, 8]
layers:
  - conv: {name: stem, out: 4, kernel: 3, pad: 1}
  - relu: {name: r0}
  - conv: {name: b1, out: 8, kernel: 3, stride: 2, pad: 1}
  - stochastic_depth: {p: 0.3}
  - add: {name: add1, from: [-1, r0], project: pad}
  - relu: {name: r1}
  - conv: {name: b2, out: 8, kernel: 3, pad: 1}
  - add: {name: add2, from: [-1, r1]}
  - conv: {name: b3, out: 16, kernel: 3, stride: 2, pad: 1}
  - add: {name: add3, from: [-1, add2], project: conv_bn}
  - concat: {from: [add3, -1]}
  - channel_shuffle: {groups: 4, name: shuf}          # ShuffleNet v2 unit: split, branch, shuffle
  - channel_slice: {chunks: 2, index: 1, name: hi}
  - conv: {name: br, out: 16, kernel: 1}
  - channel_slice: {start: 0, stop: 16, from: shuf, name: lo}
  - concat: {from: [lo, br]}
  - channel_shuffle: {groups: 2}
  - identity: {}
  - global_avgpool: {}
  - linear: {name: fc, out: 6}
""",
}


def test_nets_cover_every_layer_type():
    used = set()
    for text in NETS.values():
        used |= {l.type for l in netspec.load(text).layers}
    assert used | {"shortcut_pad"} >= {d.type for d in REGISTRY.values()}


@pytest.mark.parametrize("name", sorted(NETS))
def test_whole_net_gradients(name):
    net = compiler.compile(netspec.load(NETS[name]), batch_size=3, dtype=np.float64,
                           loss={"softmax_cross_entropy": {"label_smoothing": 0.1}})
    rng = np.random.default_rng(5)
    for k, v in net.params.items():    # move away from the symmetric initial state
        v += 0.05 * rng.standard_normal(v.shape)
    x = rng.standard_normal((3, *net.input_shape))
    t = rng.integers(0, int(np.prod(net.output_shape)), 3)
    # "modern"'s gradients reach the first layers at ~2e-5 (saturating activations, a global
    # pool): a 1e-6 step measures round-off there, 1e-4 the gradient (its curvature is smooth)
    worst = grad_check(net, x, t, n_coords=3, eps=1e-4 if name == "modern" else 1e-6)
    assert max(worst.values()) < 1e-5, {k: v for k, v in worst.items() if v >= 1e-5}
    # eval mode runs too (BN running stats, dropout off, test-time DropConnect/stochastic depth)
    assert np.isfinite(net.forward(x)).all()


NAN_NET = """
netspec: 1
name: nanpath
input: [4, 10, 10]
layers:
  - conv: {name: c1, out: 4, kernel: 3, pad: 1}      # wide-row conv + ReLU epilogue
  - relu: {}
  - conv: {name: c2, out: 4, kernel: 3, pad: 1, groups: 2}   # im2col conv + ReLU
  - relu: {}
  - conv: {name: c3, out: 4, kernel: 3, pad: 1, groups: 4}   # depthwise direct conv + ReLU
  - relu: {}
  - batchnorm: {name: bn}
  - relu: {}                                          # standalone (bn feeds the skip too)
  - conv: {name: c4, out: 4, kernel: 3, pad: 1}
  - add: {name: skip, from: [c4, bn]}                 # conv + residual + ReLU epilogue
  - relu: {}
  - maxpool: {kernel: 2, stride: 2}
  - relu: {}
  - conv: {name: c5, out: 4, kernel: 2, stride: 2}
  - batchnorm: {name: bn2}
  - add: {name: skip2, from: [bn2, c5]}               # BatchNorm + residual + ReLU
  - relu: {}
  - flatten: {}
  - linear: {name: fc1, out: 8}                       # dense + ReLU
  - relu: {}
  - linear: {name: fc2, out: 3}
"""


def test_relu_passes_nan_like_torch():
    """A NaN input pixel reaches the output through every fused and standalone ReLU, as
    torch.relu lets NaN through: in eval only its own sample's outputs are NaN, in training
    (batch statistics) the loss is NaN, so the divergence guard sees it instead of a finite
    loss computed from zeroed NaNs."""
    net = compiler.compile(netspec.load(NAN_NET), batch_size=3, seed=0)
    acts = {(n.op, n.a.get("act")) for g in net.graphs.values() for n in g.nodes}
    assert {("conv2d", "relu"), ("batchnorm", "relu"), ("linear", "relu"), ("activation", None)} <= acts
    x = np.random.default_rng(0).standard_normal((3, 4, 10, 10)).astype(np.float32)
    x[0, 1, 4, 4] = np.nan
    np.testing.assert_array_equal(np.isnan(net.forward(x)).any(1), [True, False, False])
    loss, _ = net.loss_and_grads(x, np.array([0, 1, 2]))
    assert np.isnan(loss)
