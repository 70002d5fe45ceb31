"""runtime/export.py + ``netspec export``: ONNX built from the inference IR, .npz and torch
state_dict export.

ONNX files must pass onnx.checker and match our forward within 1e-5 (relative to the
output's max magnitude) under onnxruntime: LeNet-5 and ResNet-20 against the compiled nets
(BatchNorm statistics randomised so folding is exercised); a spec using every exportable
op against the numpy reference of the inference IR (no kernels compiled).  Skipped when
onnx / onnxruntime / torch are absent.
"""
from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import numpy as np
import pytest

import netspec
from runtime.checkpoint import save_checkpoint
from runtime.export import (ExportError, build_onnx, export_npz, export_torch, inference_graph,
                            match_weights, read_weights)

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"

ALL_OPS = """
netspec: 1
name: allops
input: [3, 11, 11]
layers:
  - conv: {name: c1, out: 8, kernel: 3, pad: 1, weight_norm: true}
  - batchnorm: {name: bn1}
  - leaky_relu: {slope: 0.1}
  - maxpool: {kernel: 3, stride: 2, ceil_mode: true, name: mp}
  - conv: {name: c2, out: 8, kernel: 1, groups: 2}
  - prelu: {num_parameters: 8}
  - lrn: {size: 4, name: lrn4}
  - lrn: {size: 3, name: lrn3}
  - groupnorm: {groups: 2, name: gn}
  - elu: {}
  - gelu: {}
  - silu: {}
  - hardswish: {}
  - relu6: {}
  - softplus: {}
  - hardsigmoid: {}
  - avgpool: {kernel: 3, stride: 2, pad: 1, ceil_mode: true, name: ap}
  - instancenorm: {affine: true, name: inorm}
  - upsample: {scale: 2, name: up}
  - conv_transpose: {name: ct, out: 4, kernel: 3, stride: 2, pad: 1, output_padding: 1}
  - upsample: {size: [9, 9], mode: bilinear, name: up2}
  - upsample: {scale: 1.3, mode: bilinear, name: up3}      # inexact: Resize by scales
  - center_crop: {size: [7, 7], name: crop}
  - conv: {name: c3, out: 6, kernel: 3, pad: 1}
  - concat: {from: [crop, c3], name: cat}
  - channel_shuffle: {groups: 5, name: shuf}
  - channel_slice: {chunks: 2, index: 1, name: half1}
  - channel_slice: {start: 1, stop: 5, from: shuf, name: half0}
  - concat: {from: [half1, half0], name: cat2}
  - conv: {name: c5, out: 12, kernel: 3, stride: 2, pad: 1}
  - add: {from: [c5, cat], project: pad, name: addp}
  - stochastic_depth: {p: 0.2}
  - avgpool: {kernel: 2, pad: 1, count_include_pad: false, name: ap2}
  - maxout: {k: 2, name: mo}
  - conv: {name: c4, out: 6, kernel: 1}
  - add: {from: [mo, c4, -1], name: add3}
  - relu: {}                                                # fused into add3
  - layernorm: {name: ln}
  - tanh: {name: th}
  - global_avgpool: {name: sqz}
  - multiply: {from: [th, sqz]}
  - adaptive_avgpool: {size: [3, 2], name: aap}
  - global_maxpool: {name: gmp}
  - flatten: {}
  - dropout: {p: 0.3}
  - linear: {name: fc1, out: 12}
  - batchnorm: {name: bn2}
  - sigmoid: {}
  - dropconnect: {name: dc, out: 7, p: 0.2}
  - softmax: {}
"""


def _randomize(weights: dict, seed: int = 0) -> dict:
    """Non-trivial BatchNorm statistics and affine parameters (so folding matters)."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, v in weights.items():
        v = np.array(v, np.float32)
        if k.endswith("running_var"):
            v = rng.uniform(0.5, 1.5, v.shape).astype(np.float32)
        elif k.endswith("running_mean") or (v.ndim == 1 and k.endswith("bias")):
            v = rng.normal(0, 0.2, v.shape).astype(np.float32)
        elif v.ndim == 1 and k.endswith("weight"):
            v = rng.uniform(0.5, 1.5, v.shape).astype(np.float32)
        out[k] = v
    return out


@pytest.fixture(scope="module", params=["lenet5", "resnet20"])
def zoo_net(request):
    import compiler
    spec = netspec.load(SPECS / f"{request.param}.yaml")
    net = compiler.compile(spec, batch_size=4, train=False)
    net.load_params(_randomize({**net.params, **net.buffers}))
    return spec, net


def _rel(a, b) -> float:
    return float(np.abs(a - b).max() / np.abs(a).max())


def test_onnx_matches_compiled_zoo_net(zoo_net, tmp_path):
    pytest.importorskip("onnx", reason="ONNX export needs the onnx package")
    pytest.importorskip("onnxruntime", reason="running the ONNX file needs onnxruntime")
    import onnx
    from runtime.export import export_onnx, onnx_forward
    spec, net = zoo_net
    path = export_onnx(spec, {**net.params, **net.buffers}, tmp_path / "net.onnx")
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    ops = {n.op_type for n in model.graph.node}
    assert "Conv" in ops and "Gemm" in ops and "BatchNormalization" not in ops   # BN folded
    x = np.random.default_rng(1).standard_normal((6, *net.input_shape)).astype(np.float32)
    ours, theirs = net.forward(x), onnx_forward(path, x)   # 6 rows: the batch is symbolic
    assert theirs.shape == ours.shape == (6, 10)
    assert _rel(ours, theirs) < 1e-5


def _ref_forward(graph, weights, x):
    """The inference IR run through every op's numpy reference (float64)."""
    from compiler.ops import OPS
    env = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    env["x"] = np.asarray(x, np.float64)
    for n in graph.nodes:
        xs = [None if i is None else env[i] for i in n.inputs]
        if n.op == "reshape":
            y = xs[0].reshape(len(x), *graph.values[n.outputs[0]].shape[1:])
        else:
            y = OPS[n.op].ref_forward(xs, n.a, False)[0]
        env[n.outputs[0]] = y
    return env[graph.outputs[0]]


@pytest.mark.parametrize("opset", [17, 18, 21])
def test_onnx_every_exportable_op_matches_the_ir_reference(opset):
    """Every exportable op against the IR's numpy reference; from opset 18 the reductions
    take their axes as an input (an attribute there fails the checker)."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from runtime.export import onnx_forward
    spec = netspec.load(ALL_OPS)
    report = netspec.check(spec)
    rng = np.random.default_rng(0)
    w = {full: rng.normal(0, 0.5, ps.shape).astype(np.float32)
         for L in report.layers for full, ps in L.param_specs}
    w = _randomize(w)
    model = build_onnx(spec, w, opset)
    x = rng.standard_normal((3, 3, 11, 11)).astype(np.float32)
    g, _ = inference_graph(spec, batch_size=3)
    ref = _ref_forward(g, w, x)
    got = onnx_forward(model, x)
    assert got.shape == (3, 7)
    assert _rel(ref, got) < 1e-5
    ops = {n.op_type for n in model.graph.node}
    assert {"LRN", "Resize", "ConvTranspose", "PRelu", "ReduceMax", "Sum", "Pad", "Transpose"} <= ops
    assert {"shortcut_pad", "channel_shuffle", "channel_slice"} <= {n.op for n in g.nodes}


@pytest.mark.parametrize("mode,hw,scale", [("nearest", (3, 5), 1.3), ("nearest", (5, 5), 2.1),
                                           ("bilinear", (3, 5), 1.3), ("bilinear", (5, 5), 2.1)])
def test_onnx_inexact_upsample_matches_the_compiled_net(mode, hw, scale, tmp_path):
    """Resize by scales, with torch's shortcuts per axis (unchanged size copied; nearest x2)."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import compiler
    from runtime.export import export_onnx, onnx_forward
    spec = netspec.load(f"netspec: 1\nname: u\ninput: [2, {hw[0]}, {hw[1]}]\nlayers:\n"
                        f"  - conv: {{name: c, out: 2, kernel: 1}}\n"
                        f"  - upsample: {{scale: {scale}, mode: {mode}}}\n")
    net = compiler.compile(spec, batch_size=3, train=False, seed=0)
    path = export_onnx(spec, {**net.params, **net.buffers}, tmp_path / "u.onnx")
    x = np.random.default_rng(0).standard_normal((3, 2, *hw)).astype(np.float32)
    np.testing.assert_allclose(onnx_forward(path, x), net.forward(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layer,hw", [
    ("upsample: {mode: bilinear, size: [1, 3]}", (4, 5)),       # an output axis of length 1
    ("upsample: {mode: nearest, size: [3, 30]}", (3, 29)),      # size/in not exact in floating point:
    ("upsample: {mode: bilinear, size: [13, 9]}", (6, 7)),      # Resize by sizes, never by scales
    ("upsample: {mode: nearest, size: [16, 5]}", (14, 3)),      # nearest: torch's index table, exactly
    ("upsample: {mode: bilinear, scale: 0.3}", (4, 5)),
    ("conv_transpose: {name: t, out: 3, kernel: 1, dilation: 2, output_padding: 1}", (3, 3)),
    ("conv_transpose: {name: t, out: 3, kernel: 3, stride: 2, pad: [1, 0, 1, 0], output_padding: 1}", (3, 4)),
    ("maxpool: {kernel: 2}", (4, 4)),                            # a net without parameters
    ("channel_shuffle: {groups: 2}", (3, 4)),                    # two channels: a swap
    ("channel_slice: {start: -1}", (3, 4)),
])
def test_onnx_edge_cases_match_the_compiled_net(layer, hw, tmp_path):
    """Found by an export fuzz: bilinear Resize to one row read source 0 (pytorch_half_pixel;
    torch reads in/2 - 0.5); ConvTranspose with output_padding >= stride (legal with dilation)
    crashed onnxruntime; a parameter-free net's checkpoint could not be exported."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import compiler
    from runtime.export import export_onnx, onnx_forward
    spec = netspec.load(f"netspec: 1\nname: e\ninput: [2, {hw[0]}, {hw[1]}]\nlayers:\n  - {layer}\n")
    net = compiler.compile(spec, batch_size=3, train=False, seed=0)
    w = _randomize({**net.params, **net.buffers}) if net.params else {}
    net.load_params(w) if w else None
    path = export_onnx(spec, w, tmp_path / "e.onnx")
    x = np.random.default_rng(0).standard_normal((3, 2, *hw)).astype(np.float32)
    np.testing.assert_allclose(onnx_forward(path, x), net.forward(x), rtol=1e-5, atol=1e-5)


def test_onnx_refuses_unexportable_layer_and_bad_weights():
    pytest.importorskip("onnx")
    spec = netspec.load("netspec: 1\nname: lc\ninput: [1, 6, 6]\nlayers:\n"
                        "  - locally_connected: {name: lc, out: 2, kernel: 3}\n")
    report = netspec.check(spec)
    w = {full: np.zeros(ps.shape, np.float32) for L in report.layers for full, ps in L.param_specs}
    with pytest.raises(ExportError, match="local2d"):
        build_onnx(spec, w)
    lenet = netspec.load(SPECS / "lenet5.yaml")
    with pytest.raises(ExportError, match="missing tensor fc3.bias"):
        build_onnx(lenet, {})


def test_npz_round_trip(zoo_net, tmp_path):
    spec, net = zoo_net
    weights = {**net.params, **net.buffers}
    p = export_npz(weights, tmp_path / "w.npz")
    back = read_weights(p)
    assert set(back) == set(weights)
    for k, v in weights.items():
        np.testing.assert_array_equal(back[k], v)
    ok, problems = match_weights(netspec.check(spec), back)
    assert problems == [] and len(ok) == len(weights)
    x = np.random.default_rng(2).standard_normal((4, *net.input_shape)).astype(np.float32)
    y0 = net.forward(x)
    net.load_params(back)
    np.testing.assert_array_equal(net.forward(x), y0)


def test_torch_state_dict_loads_into_the_torch_twin(zoo_net, tmp_path):
    torch = pytest.importorskip("torch", reason="torch export needs torch")
    from runtime.torch_twin import build_torch_module
    spec, net = zoo_net
    p = export_torch({**net.params, **net.buffers}, tmp_path / "w.pt", num_batches_tracked=7)
    sd = torch.load(str(p), weights_only=True)
    twin = build_torch_module(netspec.check(spec))
    twin.load_state_dict(sd, strict=True)
    twin.eval()
    x = np.random.default_rng(3).standard_normal((4, *net.input_shape)).astype(np.float32)
    with torch.no_grad():
        y = twin(torch.from_numpy(x)).numpy()
    assert _rel(net.forward(x), y) < 1e-4
    assert all(sd[k].item() == 7 for k in sd if k.endswith("num_batches_tracked"))


from clihelp import run_command as _cli  # noqa: E402


def test_export_command(zoo_net, tmp_path, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    spec, net = zoo_net
    ck = tmp_path / "ck.npz"
    arrays = {f"params/{k}": v for k, v in net.params.items()}
    arrays.update({f"buffers/{k}": v for k, v in net.buffers.items()})
    save_checkpoint(ck, arrays, {"epoch": 1})
    out = tmp_path / "m.onnx"
    assert _cli("export", [str(SPECS / f"{spec.name}.yaml"), "--checkpoint", str(ck),
                           "--format", "onnx", "-o", str(out), "--verify"]) == 0
    msg = capsys.readouterr().out
    assert out.is_file() and "max relative difference" in msg
    assert float(msg.rsplit(" ", 1)[1]) < 1e-5
    assert _cli("export", [str(SPECS / f"{spec.name}.yaml"), "--checkpoint", str(ck),
                           "--format", "npz", "-o", str(tmp_path / "w.npz")]) == 0
    assert set(np.load(tmp_path / "w.npz").files) == set(net.params) | set(net.buffers)
    # errors: one message, exit 1
    assert _cli("export", [str(SPECS / f"{spec.name}.yaml"), "--checkpoint",
                           str(tmp_path / "nope.npz"), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("netspec export:") and "nope.npz" in err and "Traceback" not in err
    assert _cli("export", [str(SPECS / f"{spec.name}.yaml"), "--checkpoint", str(ck), "--ema",
                           "-o", str(out)]) == 1
    assert "ema" in capsys.readouterr().err
