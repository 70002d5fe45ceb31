"""One ONNX emitter per IR op of the inference graph (``_EMIT``), used by
``runtime.export.build_onnx``.  Each ``f(e, node, out)`` appends one ONNX node or a short
chain through the ``_Emitter`` ``e`` (its ``add`` / ``inp`` / ``const`` / ``i64`` /
``act`` / ``shape``) and returns the name of the value it wrote (``out``).  The mapping of
each op is listed in ``runtime/export.py``'s docstring.
"""
from __future__ import annotations

import numpy as np

_BIG = np.iinfo(np.int64).max     # "to the end" in Slice


def _pads(p):                  # ours (top, bottom, left, right) -> ONNX [t, l, b, r]
    pt, pb, pl, pr = p
    return [int(pt), int(pl), int(pb), int(pr)]


def _conv(e, n, out):
    a = n.a
    x, w, b = n.inputs
    kw = dict(strides=list(a["stride"]), pads=_pads(a["pad"]), dilations=list(a["dilation"]),
              group=int(a["groups"]), kernel_shape=list(e.shape(w)[2:]))
    if n.op != "conv_transpose2d":
        y = e.add("Conv", [e.inp(x), e.inp(w)] + ([e.inp(b)] if b else []), **kw)
        return e.act(y, a.get("act", "none"), out)
    # ConvTranspose without output_padding: onnxruntime refuses output_padding >= stride,
    # which torch allows with dilation.  The extra rows/columns at the end are the full
    # output's ones the end padding would have cropped (so: crop op fewer), or, past the
    # full output, zeros -- then the bias.
    op = [int(v) for v in a.get("output_padding", (0, 0))]
    pt, pl, pb, pr = kw["pads"]
    (pb, eh), (pr, ew) = ((pe - o, 0) if pe >= o else (0, o - pe) for pe, o in ((pb, op[0]), (pr, op[1])))
    kw["pads"] = [pt, pl, pb, pr]
    y = e.add("ConvTranspose", [e.inp(x), e.inp(w)], **kw)
    if eh or ew:
        y = e.add("Pad", [y, e.i64([0, 0, 0, 0, 0, 0, eh, ew])], mode="constant")
    if b:
        y = e.add("Add", [y, e.const(np.asarray(e.consts[b], np.float32).reshape(-1, 1, 1), "bias")])
    return e.act(y, a.get("act", "none"), out)


def _linear(e, n, out):
    x, w, b = n.inputs
    y = e.add("Gemm", [e.inp(x), e.inp(w)] + ([e.inp(b)] if b else []), transB=1)
    return e.act(y, n.a.get("act", "none"), out)


def _maxpool(e, n, out):
    a = n.a
    y = e.add("MaxPool", [e.inp(n.inputs[0])], kernel_shape=list(a["kernel"]),
              strides=list(a["stride"]), pads=_pads(a["pad"]), dilations=list(a.get("dilation", (1, 1))),
              ceil_mode=int(bool(a.get("ceil_mode"))))
    return _crop_to(e, y, e.shape(out), out)


def _avgpool(e, n, out):
    """count_include_pad: pad explicitly with zeros and count only in-bounds taps of the
    padded tensor -- the divisor is then PyTorch's window clipped at H + pad_bottom."""
    a = n.a
    x = e.inp(n.inputs[0])
    pads = _pads(a["pad"])
    if bool(a.get("count_include_pad", True)) and any(pads):
        pt, pl, pb, pr = pads
        x = e.add("Pad", [x, e.i64([0, 0, pt, pl, 0, 0, pb, pr])], mode="constant")
        pads = [0, 0, 0, 0]
    y = e.add("AveragePool", [x], kernel_shape=list(a["kernel"]), strides=list(a["stride"]),
              pads=pads, count_include_pad=0, ceil_mode=int(bool(a.get("ceil_mode"))))
    return _crop_to(e, y, e.shape(out), out)


def _crop_to(e, y, shape, out):
    """ceil_mode conventions differ between runtimes in corner cases: cut to the IR's shape."""
    return e.add("Slice", [y, e.i64([0, 0]), e.i64(list(shape[2:])), e.i64([2, 3])], out)


def _global(e, n, out):
    op = "GlobalAveragePool" if n.a.get("mode", "avg") == "avg" else "GlobalMaxPool"
    return e.add(op, [e.inp(n.inputs[0])], out)


def _batchnorm(e, n, out):
    x, w, b, rm, rv = n.inputs
    C = e.shape(x)[1]
    scale = e.inp(w) if w else e.const(np.ones(C))
    bias = e.inp(b) if b else e.const(np.zeros(C))
    y = e.add("BatchNormalization", [e.inp(x), scale, bias, e.inp(rm), e.inp(rv)],
              epsilon=float(n.a.get("eps", 1e-5)))
    return e.act(y, n.a.get("act", "none"), out)


def _groupfamily(e, n, out):
    """(x reshaped to (N, G, -1) - mean) / sqrt(var + eps), reshaped back, then affine."""
    x, w, b = n.inputs
    shp = e.shape(x)
    G = {"layernorm": 1, "instancenorm": shp[1], "groupnorm": int(n.a.get("groups", 1))}[n.op]
    x3 = e.add("Reshape", [e.inp(x), e.i64([0, G, -1])])
    mu = e.add("ReduceMean", [x3], axes=[2], keepdims=1)
    d = e.add("Sub", [x3, mu])
    var = e.add("ReduceMean", [e.add("Mul", [d, d])], axes=[2], keepdims=1)
    sd = e.add("Sqrt", [e.add("Add", [var, e.const(np.array(float(n.a.get("eps", 1e-5))))])])
    y = e.add("Reshape", [e.add("Div", [d, sd]), e.i64([0, *shp[1:]])])
    for p, op in ((w, "Mul"), (b, "Add")):
        if p:
            arr = np.asarray(e.consts[p], np.float32)
            if n.op != "layernorm":
                arr = arr.reshape((-1,) + (1,) * (len(shp) - 2))
            y = e.add(op, [y, e.const(arr, "affine")])
    return e.add("Identity", [y], out)


def _lrn(e, n, out):
    a = n.a
    size, alpha, beta, k = int(a["size"]), float(a.get("alpha", 1e-4)), float(a.get("beta", 0.75)), float(a.get("k", 1.0))
    x = e.inp(n.inputs[0])
    if size % 2 == 1:
        return e.add("LRN", [x], out, size=size, alpha=alpha, beta=beta, bias=k)
    # even size: PyTorch's window is [c - size//2, c + (size-1)//2], ONNX's the mirror image
    shp = e.shape(n.inputs[0])
    sq = e.add("Reshape", [e.add("Mul", [x, x]), e.i64([0, 1, shp[1], -1])])
    sq = e.add("Pad", [sq, e.i64([0, 0, size // 2, 0, 0, 0, (size - 1) // 2, 0])], mode="constant")
    s = e.add("AveragePool", [sq], kernel_shape=[size, 1], strides=[1, 1])
    s = e.add("Reshape", [s, e.i64([0, *shp[1:]])])
    scale = e.add("Add", [e.add("Mul", [s, e.const(np.array(alpha))]), e.const(np.array(k))])
    return e.add("Mul", [x, e.add("Pow", [scale, e.const(np.array(-beta))])], out)


def _activation(e, n, out):
    a, x = n.a, e.inp(n.inputs[0])
    kind = a.get("kind", "relu")
    if kind == "leaky_relu":
        return e.add("LeakyRelu", [x], out, alpha=float(a.get("slope", 0.01)))
    if kind == "elu":
        return e.add("Elu", [x], out, alpha=float(a.get("alpha", 1.0)))
    if kind == "relu6":
        return e.add("Clip", [x, e.const(np.array(0.0)), e.const(np.array(6.0))], out)
    if kind == "hardsigmoid":
        return e.add("HardSigmoid", [x], out, alpha=1.0 / 6.0, beta=0.5)
    if kind == "hardswish":
        return e.add("HardSwish", [x], out)
    if kind == "silu":
        return e.add("Mul", [x, e.add("Sigmoid", [x])], out)
    if kind == "gelu":      # opset 17 has no Gelu: 0.5 x (1 + erf(x / sqrt 2))
        erf = e.add("Erf", [e.add("Mul", [x, e.const(np.array(1 / np.sqrt(2)))])])
        half = e.add("Mul", [x, e.const(np.array(0.5))])
        return e.add("Mul", [half, e.add("Add", [erf, e.const(np.array(1.0))])], out)
    if kind == "softplus":  # x beyond the threshold, like torch (Softplus alone overflows to inf)
        big = e.add("Greater", [x, e.const(np.array(20.0))])
        return e.add("Where", [big, x, e.add("Softplus", [x])], out)
    return e.add({"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}[kind], [x], out)


def _prelu(e, n, out):
    x, w = n.inputs
    arr = np.asarray(e.consts[w], np.float32)
    if arr.shape[0] > 1:
        arr = arr.reshape((-1,) + (1,) * (len(e.shape(x)) - 2))
    return e.add("PRelu", [e.inp(x), e.const(arr, "slope")], out)


def _upsample(e, n, out):
    a, x = n.a, e.inp(n.inputs[0])
    if a.get("mode", "nearest") == "nearest":
        # two Gathers on the kernels' own index tables (torch's nearest_idx, float32): exact,
        # where Resize recomputed the ratio (16/14 read source 6 for output 8, torch reads 7)
        from compiler.ops.resample import nearest_index
        (ih, iw), (oh, ow) = e.shape(n.inputs[0])[2:], a["out_size"]
        sh, sw = a.get("scale") or (None, None)
        y = e.add("Gather", [x, e.i64(nearest_index(ih, oh, sh).tolist())], axis=2)
        return e.add("Gather", [y, e.i64(nearest_index(iw, ow, sw).tolist())], out, axis=3)
    # bilinear: half_pixel, not pytorch_half_pixel: the latter reads source 0 for an output
    # axis of length 1, where PyTorch (and our kernels) read in/2 - 0.5
    kw = dict(mode="linear", coordinate_transformation_mode="align_corners"
              if a.get("align_corners") else "half_pixel")
    if a.get("scale"):     # inexact scale: Resize by scales (coordinates map with 1/scale)
        # ... except where torch (and our kernels) leave an axis of unchanged size alone
        sc = [1.0 if o == i else float(s)
              for s, i, o in zip(a["scale"], e.shape(n.inputs[0])[2:], a["out_size"])]
        scales = e.const(np.array([1.0, 1.0, *sc], np.float32), "scales")
        return e.add("Resize", [x, "", scales], out, **kw)
    nc = e.add("Slice", [e.add("Shape", [x]), e.i64([0]), e.i64([2])])
    sizes = e.add("Concat", [nc, e.i64(list(a["out_size"]))], axis=0)
    return e.add("Resize", [x, "", "", sizes], out, **kw)


def _center_crop(e, n, out):
    (oh0, ow0), (oh, ow) = n.a["offset"], n.a["out_size"]
    return e.add("Slice", [e.inp(n.inputs[0]), e.i64([oh0, ow0]), e.i64([oh0 + oh, ow0 + ow]),
                           e.i64([2, 3])], out)


def _shortcut_pad(e, n, out):
    x = n.inputs[0]
    C = e.shape(x)[1]
    sh, sw = n.a.get("stride", (1, 1))
    lo = (int(n.a["out"]) - C) // 2
    hi = int(n.a["out"]) - C - lo
    y = e.add("Slice", [e.inp(x), e.i64([0, 0]), e.i64([_BIG, _BIG]), e.i64([2, 3]), e.i64([sh, sw])])
    return e.add("Pad", [y, e.i64([0, lo, 0, 0, 0, hi, 0, 0])], out, mode="constant")


def _channel_shuffle(e, n, out):
    """Reshape (N, g, C/g, -1) -> Transpose (0, 2, 1, 3) -> Reshape to the output shape."""
    g, shp = int(n.a["groups"]), e.shape(n.inputs[0])
    y = e.add("Reshape", [e.inp(n.inputs[0]), e.i64([0, g, shp[1] // g, -1])])
    y = e.add("Transpose", [y], perm=[0, 2, 1, 3])
    return e.add("Reshape", [y, e.i64([0, *e.shape(out)[1:]])], out)


def _channel_slice(e, n, out):
    return e.add("Slice", [e.inp(n.inputs[0]), e.i64([int(n.a["start"])]), e.i64([int(n.a["stop"])]),
                           e.i64([1])], out)


def _maxout(e, n, out):
    k = int(n.a["k"])
    shp = e.shape(n.inputs[0])
    y = e.add("Reshape", [e.inp(n.inputs[0]), e.i64([0, shp[1] // k, k, -1])])
    y = e.add("ReduceMax", [y], axes=[2], keepdims=0)
    return e.add("Reshape", [y, e.i64([0, *e.shape(out)[1:]])], out)


def _simple(op, **kw):
    def f(e, n, out):
        ins = [e.inp(i) for i in n.inputs]
        return e.add(op, ins, out, **kw)
    return f


def _add(e, n, out):
    """Add (Sum for > 2 inputs), then the fused ReLU of a residual block's end if any."""
    ins = [e.inp(i) for i in n.inputs]
    act = n.a.get("act", "none")
    y = e.add("Sum" if len(ins) > 2 else "Add", ins, None if act != "none" else out)
    return y if act == "none" else e.act(y, act, out)


def _adaptive_avg(e, n, out):
    """Separable: MatMul(Ph, x) then MatMul(., Pw^T) with constant averaging matrices."""
    from compiler.ops.pool import adaptive_matrix
    x = n.inputs[0]
    (H, W), (oh, ow) = e.shape(x)[2:], n.a["out_size"]
    mid = e.add("MatMul", [e.const(adaptive_matrix(H, oh, np.float32), "ph"), e.inp(x)])
    return e.add("MatMul", [mid, e.const(np.ascontiguousarray(adaptive_matrix(W, ow, np.float32).T), "pwt")], out)


def _reshape(e, n, out):
    return e.add("Reshape", [e.inp(n.inputs[0]), e.i64([0, *e.shape(out)[1:]])], out)


def _sdepth(e, n, out):
    return e.add("Mul", [e.inp(n.inputs[0]), e.const(np.array(1.0 - float(n.a.get("p", 0.5))))], out)


_EMIT = {
    "conv2d": _conv, "conv_transpose2d": _conv, "linear": _linear, "dropconnect_linear": _linear,
    "maxpool2d": _maxpool, "avgpool2d": _avgpool, "global_pool": _global,
    "adaptive_avgpool2d": _adaptive_avg,
    "batchnorm": _batchnorm, "layernorm": _groupfamily, "groupnorm": _groupfamily,
    "instancenorm": _groupfamily, "lrn": _lrn, "activation": _activation, "prelu": _prelu,
    "softmax": _simple("Softmax", axis=1), "add": _add, "mul": _simple("Mul"), "concat": _simple("Concat", axis=1),
    "reshape": _reshape, "dropout": _simple("Identity"), "stochastic_depth": _sdepth,
    "upsample": _upsample, "center_crop": _center_crop, "shortcut_pad": _shortcut_pad,
    "maxout": _maxout, "channel_shuffle": _channel_shuffle, "channel_slice": _channel_slice,
}
