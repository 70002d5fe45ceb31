"""Lowering: a checked spec (netspec Report) -> the forward IR graph.

One rule per layer type in ``LOWER`` (the compiler's only per-layer table): it maps a
layer's canonical attributes to one op node (or a view, or a small chain such as
weight normalisation + conv).  Shapes come from the checker's report, with the batch
dimension prepended; parameter and buffer values carry the PyTorch names.
"""
from __future__ import annotations

from typing import Callable

from .ir import Graph, Node, Value, check_graph, freeze_attrs
from .ops.activation import KINDS as ACTIVATIONS     # layer types lowered to one activation op


class LowerError(Exception):
    pass


class _Builder:
    def __init__(self, batch: int):
        self.batch = batch
        self.values: dict[str, Value] = {}
        self.nodes: list[Node] = []
        self._k = 0

    def value(self, shape, kind="act", dtype="float", name=None) -> str:
        if name is None:
            self._k += 1
            name = f"v{self._k}"
        self.values[name] = Value(name, tuple(int(s) for s in shape), dtype, kind)
        return name

    def node(self, op, inputs, out_shape, attrs, layer, phase="fwd", out_kind="act") -> str:
        out = self.value(out_shape, out_kind)
        self.nodes.append(Node(f"n{len(self.nodes) + 1}", op, tuple(inputs), (out,),
                               freeze_attrs(attrs), layer, phase))
        return out


def _p(L, suffix):
    """Full name of layer L's parameter/buffer ``suffix`` if it has one, else None."""
    full = f"{L.name}.{suffix}"
    return full if any(n == full for n, _ in L.param_specs) else None


def _conv_weight(b: _Builder, L) -> str:
    """The conv/linear weight value: the parameter itself, or w = g·v/‖v‖ (weight norm)."""
    if _p(L, "weight_v"):
        v, g = _p(L, "weight_v"), _p(L, "weight_g")
        return b.node("weight_norm", [v, g], b.values[v].shape, {}, L.name)
    return _p(L, "weight")


def _pick(a: dict, *keys, **renames):
    out = {k: a[k] for k in keys if k in a}
    for new, old in renames.items():
        if old in a:
            out[new] = a[old]
    return out


def lower_conv(b, L, ins, out):
    a = L.attrs
    return b.node("conv2d", [ins[0], _conv_weight(b, L), _p(L, "bias")], out,
                  dict(stride=a["stride"], pad=a["pad"], dilation=a["dilation"],
                       groups=a["groups"], act="none"), L.name)


def lower_conv_transpose(b, L, ins, out):
    a = L.attrs
    return b.node("conv_transpose2d", [ins[0], _conv_weight(b, L), _p(L, "bias")], out,
                  dict(stride=a["stride"], pad=a["pad"], output_padding=a["output_padding"],
                       dilation=a["dilation"], groups=a["groups"], act="none"), L.name)


def lower_local(b, L, ins, out):
    a = L.attrs
    return b.node("local2d", [ins[0], _p(L, "weight"), _p(L, "bias")], out,
                  dict(stride=a["stride"], pad=a["pad"], act="none"), L.name)


def _flat(b, x, layer):
    """Insert a reshape view (N, ...) -> (N, F) when a dense layer gets an image."""
    shp = b.values[x].shape
    if len(shp) == 2:
        return x
    f = 1
    for s in shp[1:]:
        f *= s
    return b.node("reshape", [x], (shp[0], f), {"shape": (shp[0], f)}, layer, phase="view")


def lower_linear(b, L, ins, out):
    x = _flat(b, ins[0], L.name)
    return b.node("linear", [x, _conv_weight(b, L), _p(L, "bias")], out, {"act": "none"}, L.name)


def lower_dropconnect(b, L, ins, out):
    x = _flat(b, ins[0], L.name)
    return b.node("dropconnect_linear", [x, _p(L, "weight"), _p(L, "bias")], out,
                  {"p": float(L.attrs["p"]), "act": "none"}, L.name)


def lower_reshape(b, L, ins, out):
    return b.node("reshape", [ins[0]], out, {"shape": tuple(out)}, L.name, phase="view")


def lower_maxpool(b, L, ins, out):
    a = L.attrs
    return b.node("maxpool2d", ins, out, dict(kernel=a["kernel"], stride=a["stride"], pad=a["pad"],
                  dilation=a.get("dilation", (1, 1)), ceil_mode=bool(a.get("ceil_mode", False))), L.name)


def lower_avgpool(b, L, ins, out):
    a = L.attrs
    return b.node("avgpool2d", ins, out, dict(kernel=a["kernel"], stride=a["stride"], pad=a["pad"],
                  ceil_mode=bool(a.get("ceil_mode", False)),
                  count_include_pad=bool(a.get("count_include_pad", True))), L.name)


def lower_global(mode):
    def f(b, L, ins, out):
        return b.node("global_pool", ins, out, {"mode": mode}, L.name)
    return f


def lower_adaptive_avg(b, L, ins, out):
    return b.node("adaptive_avgpool2d", ins, out, {"out_size": tuple(out[2:])}, L.name)


def lower_fracpool(b, L, ins, out):
    return b.node("fractional_maxpool2d", ins, out,
                  {"kernel": L.attrs["kernel"], "out_size": tuple(out[2:])}, L.name)


def lower_maxout(b, L, ins, out):
    c_in, c_out = b.values[ins[0]].shape[1], out[1]
    return b.node("maxout", ins, out, {"k": c_in // c_out}, L.name)


def lower_norm(op, keys):
    def f(b, L, ins, out):
        xs = [ins[0], _p(L, "weight"), _p(L, "bias")]
        if op == "batchnorm":
            xs += [_p(L, "running_mean"), _p(L, "running_var")]
            attrs = {"eps": float(L.attrs["eps"]), "momentum": float(L.attrs["momentum"]), "act": "none"}
            if L.attrs.get("use_global_stats"):     # only when set: other IRs stay byte-identical
                attrs["global_stats"] = True
        else:
            attrs = {k: L.attrs[k] for k in keys}
        return b.node(op, xs, out, attrs, L.name)
    return f


def lower_lrn(b, L, ins, out):
    a = L.attrs
    return b.node("lrn", ins, out, dict(size=a["size"], alpha=float(a["alpha"]),
                                       beta=float(a["beta"]), k=float(a["k"])), L.name)


def lower_act(kind):
    def f(b, L, ins, out):
        attrs = {"kind": kind}
        if kind == "leaky_relu":
            attrs["slope"] = float(L.attrs.get("slope", 0.01))
        if kind == "elu":
            attrs["alpha"] = float(L.attrs.get("alpha", 1.0))
        return b.node("activation", ins, out, attrs, L.name)
    return f


def lower_simple(op, *keys, **consts):
    def f(b, L, ins, out):
        attrs = {k: L.attrs[k] for k in keys}
        attrs.update(consts)
        return b.node(op, ins, out, attrs, L.name)
    return f


def lower_prelu(b, L, ins, out):
    return b.node("prelu", [ins[0], _p(L, "weight")], out, {}, L.name)


def lower_upsample(b, L, ins, out):
    attrs = {"mode": L.attrs["mode"], "out_size": tuple(out[2:]),
             "align_corners": bool(L.attrs.get("align_corners", False))}
    sc = None if L.attrs.get("by_size") else L.attrs.get("scale")
    if sc is not None and any(float(s) * i != o for s, i, o in zip(sc, b.values[ins[0]].shape[2:], out[2:])):
        # a scale whose output size is not exact (e.g. 1.3 on 16 -> 20): PyTorch's
        # scale_factor maps coordinates with 1/scale, not in/out
        attrs["scale"] = tuple(float(s) for s in sc)
    # a second input only gives the size (from: [x, ref]): the op reads the first
    return b.node("upsample", ins[:1], out, attrs, L.name)


def lower_center_crop(b, L, ins, out):
    h, w = b.values[ins[0]].shape[2:]
    oh, ow = out[2:]
    return b.node("center_crop", [ins[0]], out,
                  {"offset": ((h - oh) // 2, (w - ow) // 2), "out_size": (oh, ow)}, L.name)


def lower_shortcut_pad(b, L, ins, out):
    return b.node("shortcut_pad", ins, out, {"stride": L.attrs["stride"], "out": int(out[1])}, L.name)


LOWER: dict[str, Callable] = {
    "conv": lower_conv, "conv_transpose": lower_conv_transpose, "locally_connected": lower_local,
    "linear": lower_linear, "dropconnect": lower_dropconnect,
    "flatten": lower_reshape, "reshape": lower_reshape, "identity": lower_reshape,
    "maxpool": lower_maxpool, "avgpool": lower_avgpool,
    "global_avgpool": lower_global("avg"), "global_maxpool": lower_global("max"),
    "fractional_maxpool": lower_fracpool, "maxout": lower_maxout,
    "adaptive_avgpool": lower_adaptive_avg,
    "batchnorm": lower_norm("batchnorm", ()), "layernorm": lower_norm("layernorm", ("eps",)),
    "instancenorm": lower_norm("instancenorm", ("eps",)),
    "groupnorm": lower_norm("groupnorm", ("groups", "eps")), "lrn": lower_lrn,
    **{k: lower_act(k) for k in ACTIVATIONS},
    "prelu": lower_prelu, "softmax": lower_simple("softmax"),
    "dropout": lower_simple("dropout", "p"), "stochastic_depth": lower_simple("stochastic_depth", "p"),
    "add": lower_simple("add"), "concat": lower_simple("concat"), "multiply": lower_simple("mul"),
    "upsample": lower_upsample, "center_crop": lower_center_crop, "shortcut_pad": lower_shortcut_pad,
    "channel_shuffle": lower_simple("channel_shuffle", "groups"),
    "channel_slice": lower_simple("channel_slice", "start", "stop"),
}

# which ops each layer type lowers to (the registry test checks every one has a numpy
# reference, CPU kernels and a gradient-check row)
LAYER_OPS: dict[str, tuple[str, ...]] = {
    "conv": ("conv2d", "weight_norm"), "conv_transpose": ("conv_transpose2d",),
    "locally_connected": ("local2d",), "linear": ("linear", "weight_norm"),
    "dropconnect": ("dropconnect_linear",), "flatten": (), "reshape": (), "identity": (),
    "maxpool": ("maxpool2d",), "avgpool": ("avgpool2d",), "global_avgpool": ("global_pool",),
    "global_maxpool": ("global_pool",), "fractional_maxpool": ("fractional_maxpool2d",),
    "adaptive_avgpool": ("adaptive_avgpool2d",),
    "maxout": ("maxout",), "batchnorm": ("batchnorm",), "layernorm": ("layernorm",),
    "instancenorm": ("instancenorm",), "groupnorm": ("groupnorm",), "lrn": ("lrn",),
    **{k: ("activation",) for k in ACTIVATIONS}, "prelu": ("prelu",), "softmax": ("softmax",),
    "dropout": ("dropout",), "stochastic_depth": ("stochastic_depth",), "add": ("add",),
    "concat": ("concat",), "multiply": ("mul",), "upsample": ("upsample",), "center_crop": ("center_crop",),
    "shortcut_pad": ("shortcut_pad",), "channel_shuffle": ("channel_shuffle",),
    "channel_slice": ("channel_slice",),
}

def spatial_loss(loss_cfg) -> bool:
    """A ``{name: attrs}`` loss config that classifies every output position
    (softmax_cross_entropy with ``spatial: true``): targets (N, *S), not (N,)."""
    return bool(((loss_cfg or {}).get("softmax_cross_entropy") or {}).get("spatial"))


LOSS_TARGET = {"softmax_cross_entropy": "int64", "hinge": "int64",
               "bce_with_logits": "float", "mse": "float"}


def lower(report, batch_size: int, loss: dict | None = None) -> Graph:
    """Forward graph of a checked spec.  ``loss`` ({name: {attrs}}) appends a loss node
    taking the first output and a ``target`` input (plus, for ``train.loss_weights``, one per
    weighted output, summed into "loss"); the graph outputs are then (net outputs, "loss").
    Class losses see the output flattened to (N, K) and targets (N,), except
    softmax_cross_entropy with ``spatial``: output (N, K, *S), targets (N, *S)."""
    b = _Builder(batch_size)
    N = batch_size
    b.value((N, *report.input_shape), kind="input", name="x")
    for L in report.layers:
        for full, ps in L.param_specs:
            kind = "param" if ps.kind == "param" else "buffer"
            b.value(ps.shape, kind=kind, name=full)
    env = {"input": "x"}
    for L in report.layers:
        rule = LOWER.get(L.type)
        if rule is None:
            raise LowerError(f"layer {L.name!r}: type {L.type!r} has no lowering rule")
        ins = [env[i] for i in L.inputs]
        env[L.name] = rule(b, L, ins, (N, *L.output_shape))
    outputs = [env[o] for o in report.spec.outputs] if report.spec.outputs else [env[report.layers[-1].name]]
    graph_inputs = ("x",)
    if loss:
        (lname, lattrs), = loss.items()
        weights = dict((getattr(report.spec, "train", None) or {}).get("loss_weights") or {})
        heads = [outputs[0]] + [env[o] for o in weights]
        spatial = spatial_loss(loss)
        ys = []
        for y in heads:
            if lname in ("softmax_cross_entropy", "hinge") and not spatial:
                y = _flat(b, y, "loss")
            ys.append(y)
        if spatial and len(b.values[ys[0]].shape) < 3:
            raise LowerError(f"softmax_cross_entropy with spatial: true scores every position of an "
                             f"output (K, H, W); this net's output is {b.values[ys[0]].shape[1:]}")
        tshape = ((N, *b.values[ys[0]].shape[2:]) if spatial else
                  (N,) if lname in ("softmax_cross_entropy", "hinge") else b.values[ys[0]].shape)
        for o, y in zip(weights, ys[1:]):          # netspec.check refuses this with a location
            if b.values[y].shape != b.values[ys[0]].shape:
                raise ValueError(f"train.loss_weights: output {o!r} is shaped {b.values[y].shape[1:]}, "
                                 f"the first output {b.values[ys[0]].shape[1:]}")
        b.value(tshape, kind="target", dtype=LOSS_TARGET[lname], name="target")
        la = freeze_attrs(dict(lattrs or {}))
        if not weights:
            out = b.value((1,), kind="loss", name="loss")
            b.nodes.append(Node("loss", lname, (ys[0], "target"), (out,), la, "loss", "fwd"))
        else:
            # loss = loss(first output) + sum_k w_k * loss(output k): one loss node per head,
            # summed by axpy nodes (their backward hands each head's loss dy = w_k)
            acc = b.value((1,), name="loss.0")
            b.nodes.append(Node("loss.0", lname, (ys[0], "target"), (acc,), la, "loss", "fwd"))
            for k, ((o, w), y) in enumerate(zip(weights.items(), ys[1:]), start=1):
                lk = b.value((1,), name=f"loss.{k}")
                b.nodes.append(Node(f"loss.{k}", lname, (y, "target"), (lk,), la, "loss", "fwd"))
                last = k == len(weights)
                tot = b.value((1,), kind="loss" if last else "act", name="loss" if last else f"loss.sum{k}")
                b.nodes.append(Node("loss" if last else f"loss.sum{k}", "axpy", (acc, lk), (tot,),
                                    freeze_attrs({"a": float(w)}), "loss", "fwd"))
                acc = tot
        outputs.append("loss")
        graph_inputs = ("x", "target")
    g = Graph(report.name, dict(b.values), tuple(b.nodes), graph_inputs, tuple(outputs),
              meta={"batch_size": N})
    return check_graph(g)
