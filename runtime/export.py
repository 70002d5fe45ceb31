"""Export trained weights: ONNX (built from the inference IR), ``.npz`` and torch state_dicts.

ONNX.  ``export_onnx(spec, weights, path)`` lowers the checked spec and runs the inference
pass pipeline (``compiler.lower`` + ``pipeline.INFERENCE``: BatchNorm folding, ReLU fusion,
DCE), i.e. exactly the graph ``net.graphs["eval"]`` the compiled net executes, WITHOUT
generating or compiling any kernels.  Each IR node becomes one ONNX node or a short chain
(``_EMIT`` in ``runtime/onnx_ops.py``): conv2d -> Conv [+ Relu], linear -> Gemm [+ Relu], maxpool2d/avgpool2d ->
[Pad +] MaxPool/AveragePool [+ Slice], global_pool -> GlobalAveragePool/GlobalMaxPool,
batchnorm -> BatchNormalization [+ Relu], layernorm/groupnorm/instancenorm -> Reshape +
ReduceMean/Sub/Mul/Sqrt/Div + affine (opset-17 safe and exactly our formula), lrn -> LRN
(odd sizes; even sizes decomposed, PyTorch's window), upsample -> Resize (bilinear) or two Gathers on the nearest index tables, center_crop ->
Slice, shortcut_pad -> Slice + Pad, conv_transpose2d -> ConvTranspose, prelu -> PRelu,
maxout -> Reshape + ReduceMax + Reshape, channel_shuffle -> Reshape + Transpose + Reshape,
channel_slice -> Slice, dropout -> Identity, stochastic_depth -> Mul(1-p).
Nodes whose inputs are all weights (bn_fold_weight, bn_fold_bias, weight_norm) are
constant-folded at export time with the op's numpy reference (in float64, stored as
float32), so the file holds the folded weights.  The batch dimension is symbolic ("N").
Not exportable: locally_connected (local2d), fractional_maxpool2d (ExportError).

Weights.  ``weights`` is a dict PyTorch-name -> array (params and buffers), as
``net.params | net.buffers`` or ``weights_from_arrays(load_checkpoint(p)[0])``.
``.npz`` export keys arrays by those names; torch export ``torch.save``s a dict of tensors
(plus ``<bn>.num_batches_tracked`` so ``load_state_dict(strict=True)`` on the torch twin or
a hand-written torchvision-style module accepts it).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .onnx_ops import _EMIT

OPSET = 17
_FOLDABLE = ("bn_fold_weight", "bn_fold_bias", "weight_norm")


class ExportError(Exception):
    """The net (or a layer of it) cannot be exported in the requested format."""


# ----------------------------------------------------------------------------- weights

def weights_from_arrays(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``params/<n>`` and ``buffers/<n>`` entries of a checkpoint -> {n: array} (empty for a
    net without parameters; ``match_weights`` tells whether they fit a net)."""
    return {k.split("/", 1)[1]: np.asarray(v) for k, v in arrays.items()
            if k.startswith(("params/", "buffers/"))}


def expected_tensors(report) -> dict[str, tuple[tuple[int, ...], str]]:
    """{PyTorch name: (shape, "param" | "buffer")} of a checked net, in spec order."""
    return {full: (tuple(int(d) for d in ps.shape), ps.kind)
            for L in report.layers for full, ps in L.param_specs}


def export_npz(weights: Mapping[str, np.ndarray], path) -> Path:
    """Write {PyTorch name: float32 array} as a plain .npz (``np.load`` gives the dict back)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, **{k: np.asarray(v, np.float32) for k, v in weights.items()})
    return path


def export_torch(weights: Mapping[str, np.ndarray], path, num_batches_tracked: int = 0) -> Path:
    """torch.save a state_dict (name -> float32 tensor); adds ``num_batches_tracked`` (int64)
    beside every ``running_mean`` as nn.BatchNorm has it."""
    try:
        import torch
    except ImportError as e:
        raise ExportError("torch is not installed (pip install torch) -- use --format npz") from e
    sd = {}
    for k, v in weights.items():
        sd[k] = torch.from_numpy(np.array(v, np.float32))
        if k.endswith(".running_mean"):
            sd[k[:-len("running_mean")] + "num_batches_tracked"] = torch.tensor(int(num_batches_tracked))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, str(path))
    return path


def read_weights(path) -> dict[str, np.ndarray]:
    """A weights file -> {name: ndarray}: a .npz of named arrays (a netspec checkpoint is
    verified -- checksum, format -- and its ``params/``/``buffers/`` prefixes are stripped) or
    a torch state_dict loaded with
    ``torch.load(weights_only=True)`` (a top-level {"state_dict": {...}} or {"model": {...}}
    wrapper is unwrapped).  Raises ExportError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such file")
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                signed = "__sha256__" in z.files
                d = {} if signed else {k: z[k] for k in z.files if not k.startswith("__")}
        except Exception as e:  # noqa: BLE001 - any unreadable archive is one message
            raise ExportError(f"{path}: not a readable .npz ({type(e).__name__}: {e})") from e
        if signed:      # a netspec checkpoint: verified like every checkpoint read (CheckpointError)
            from .checkpoint import load_checkpoint
            d = load_checkpoint(path)[0]
        if any(k.startswith(("params/", "buffers/")) for k in d):
            d = {k.split("/", 1)[1]: v for k, v in d.items() if k.startswith(("params/", "buffers/"))}
        return d
    try:
        import torch
    except ImportError as e:
        raise ExportError(f"{path}: reading a torch file needs torch installed (or use .npz)") from e
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"{path}: not a loadable torch state_dict ({type(e).__name__}: {e})") from e
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], dict) and len(obj) <= 4:
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(hasattr(v, "detach") for v in obj.values()):
        raise ExportError(f"{path}: expected a dict of tensors (a state_dict)")
    return {str(k): v.detach().cpu().numpy() for k, v in obj.items()}


def match_weights(report, weights: Mapping[str, np.ndarray]) -> tuple[dict, list[str]]:
    """Compare a weights dict with the net of ``report``.  Returns (matched {name: array},
    problems): one line per missing, unexpected or mis-shaped tensor, with both shapes.
    ``*.num_batches_tracked`` entries are ignored."""
    want = expected_tensors(report)
    ok, problems = {}, []
    for k, v in weights.items():
        if k.endswith("num_batches_tracked"):
            continue
        if k not in want:
            problems.append(f"unexpected tensor {k} {tuple(np.shape(v))} (not in the net)")
        elif tuple(np.shape(v)) != want[k][0]:
            problems.append(f"mis-shaped tensor {k}: {tuple(np.shape(v))} in the file, "
                            f"{want[k][0]} in the net")
        else:
            ok[k] = np.asarray(v)
    for k, (shape, kind) in want.items():
        if k not in weights:
            problems.append(f"missing tensor {k} {shape} ({kind})")
    return ok, problems


# ----------------------------------------------------------------------------- ONNX

def inference_graph(spec, batch_size: int = 1):
    """The inference IR of a spec (or checked Report): lower + the INFERENCE passes; no
    kernels are generated.  Returns (graph, report)."""
    import netspec
    from compiler.lower import lower
    from compiler.passes import pipeline
    if hasattr(spec, "layers") and hasattr(spec, "total_params"):
        report = spec
    else:
        if not hasattr(spec, "layers"):
            spec = netspec.load(spec)
        report = netspec.check(spec)
    return pipeline.run(lower(report, batch_size), pipeline.INFERENCE, "onnx"), report


class _Emitter:
    def __init__(self, graph, consts, opset: int = OPSET):
        from onnx import helper
        self.h, self.g, self.opset = helper, graph, int(opset)
        self.nodes, self.inits, self.used = [], {}, set()
        self.consts = consts          # IR value name -> ndarray (weights and folded values)
        self._k = 0

    def name(self, hint="t"):
        self._k += 1
        return f"_{hint}{self._k}"

    def const(self, arr, hint="c", dtype=np.float32):
        n = self.name(hint)
        self.inits[n] = np.asarray(arr, dtype)
        return n

    def inp(self, v):
        """An IR value as an ONNX input: constants become initializers on first use."""
        if v in self.consts and v not in self.inits:
            self.inits[v] = np.asarray(self.consts[v], np.float32)
        return v

    def add(self, op, inputs, out=None, **attrs):
        if op in ("ReduceMean", "ReduceMax", "ReduceMin") and "axes" in attrs and self.opset >= 18:
            # opset 18 moved these reductions' axes from an attribute to an int64 input
            inputs = [*inputs, self.const(np.asarray(attrs.pop("axes"), np.int64), "axes", np.int64)]
        out = out or self.name(op.lower())
        self.nodes.append(self.h.make_node(op, [i if i is not None else "" for i in inputs],
                                           [out], **attrs))
        return out

    def act(self, y, act, out):
        """Emit op result ``y`` then the fused activation into ``out``."""
        if act in (None, "none"):
            return self.add("Identity", [y], out)
        if act == "relu":
            return self.add("Relu", [y], out)
        raise ExportError(f"fused activation {act!r} has no ONNX form here")

    def shape(self, v):
        return self.g.values[v].shape

    def i64(self, vals):
        return self.const(np.asarray(vals, np.int64), "i", np.int64)


def build_onnx(spec, weights: Mapping[str, np.ndarray], opset: int = OPSET):
    """Spec (or Report) + weights -> an ``onnx.ModelProto`` (checked with onnx.checker).
    Input "input" (N, *input_shape) float32; outputs "output" (one) or "output.<layer>".
    The spec and the weights are checked first, so their errors are reported even where
    onnx is not installed."""
    from compiler.ops import OPS
    g, report = inference_graph(spec)
    ok, problems = match_weights(report, weights)
    if problems:
        raise ExportError("the weights do not fit the net: " + "; ".join(problems))
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as e:
        raise ExportError("ONNX export needs the onnx package (pip install onnx, or "
                          "pip install -e \".[onnx]\")") from e
    consts = {k: np.asarray(v, np.float64) for k, v in ok.items()}
    e = _Emitter(g, consts, opset)
    for n in g.nodes:
        (out,) = n.outputs
        if n.op in _FOLDABLE and all(i is None or i in consts for i in n.inputs):
            xs = [None if i is None else consts[i] for i in n.inputs]
            consts[out] = np.asarray(OPS[n.op].ref_forward(xs, n.a)[0], np.float64)
            continue
        rule = _EMIT.get(n.op)
        if rule is None:
            raise ExportError(f"layer {n.layer!r}: op {n.op!r} has no ONNX export")
        rule(e, n, out)
    names = {}
    for L, o in zip(report.outputs, g.outputs):
        names[o] = "output" if len(g.outputs) == 1 else f"output.{L}"
        e.add("Identity", [o], names[o])
    e.nodes = [_rename_input(nd) for nd in e.nodes]
    inits = [numpy_helper.from_array(v, k) for k, v in e.inits.items()]
    x_info = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *report.input_shape])
    outs = [helper.make_tensor_value_info(names[o], TensorProto.FLOAT, ["N", *g.values[o].shape[1:]])
            for o in g.outputs]
    graph = helper.make_graph(e.nodes, report.name, [x_info], outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="netspec")
    model.ir_version = min(model.ir_version, 9)   # readable by older onnxruntime releases
    onnx.checker.check_model(model, full_check=True)
    return model


def _rename_input(nd):
    """The IR calls the net input "x"; the ONNX graph input is "input"."""
    for i, v in enumerate(nd.input):
        if v == "x":
            nd.input[i] = "input"
    return nd


def export_onnx(spec, weights: Mapping[str, np.ndarray], path, opset: int = OPSET) -> Path:
    model = build_onnx(spec, weights, opset)
    import onnx
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def onnx_forward(path_or_model, x: np.ndarray) -> np.ndarray:
    """Run the exported model under onnxruntime (CPU) -> its first output."""
    import onnxruntime as ort
    src = path_or_model.SerializeToString() if hasattr(path_or_model, "SerializeToString") else str(path_or_model)
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": np.asarray(x, np.float32)})[0]


def export(spec, weights: Mapping[str, np.ndarray], fmt: str, path, **kw: Any) -> Path:
    """Dispatch on ``fmt`` ("onnx" | "npz" | "torch")."""
    if fmt == "onnx":
        return export_onnx(spec, weights, path, **kw)
    if fmt == "npz":
        return export_npz(weights, path)
    if fmt == "torch":
        return export_torch(weights, path, **kw)
    raise ExportError(f"unknown export format {fmt!r} (onnx, npz or torch)")
