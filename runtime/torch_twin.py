"""A PyTorch twin of a checked netspec net, built generically from its ``Report``.

``build_torch_module(report) -> torch.nn.Module`` walks ``report.layers`` (topological
order, canonical attributes, parameter specs) and returns a module that computes the same
function as the netspec net, so that parity tests and benchmarks can compare against
PyTorch for any spec, not only the zoo:

* **names** -- ``state_dict()`` keys are exactly the netspec parameter and buffer names
  (``<layer name>.<ParamSpec.name>``: ``layer1.0.conv1.weight``, ``bn1.running_mean`` ...),
  so weights move both ways with ``load_state_dict`` / ``state_dict`` (or the
  ``load_arrays`` / ``arrays`` helpers, which speak numpy). Modules are nested along the
  dotted layer names (``layer1`` -> ``0`` -> ``conv1``), the way torchvision nests them;
  each layer that owns tensors gets a small holder module whose ``_parameters`` /
  ``_buffers`` are exactly its ``ParamSpec`` list (kind ``param`` -> ``nn.Parameter``,
  ``buffer`` -> buffer), with the PyTorch layouts the catalogue declares.
* **forward** -- a graph executor: each layer reads the outputs named in
  ``layer.inputs`` (``"input"`` is the net input), runs a functional PyTorch op with the
  layer's canonical attributes and stores its output; intermediate values are released
  after their last use. Every output is checked against the report's shape (batch
  excluded), so a disagreement between the checker's shape rule and PyTorch's surfaces
  as a ``RuntimeError`` naming the layer. The forward returns the output layer's tensor
  (a tuple when the report names several outputs).
* layers with ``freeze: true`` get ``requires_grad=False`` parameters;
* ``train()`` / ``eval()`` switch dropout, stochastic depth, DropConnect and batch-norm
  statistics exactly like the corresponding torch modules (batch norm's running buffers
  are updated in training mode with the layer's momentum).

Supported layer types: conv (incl. weight_norm: weight_g/weight_v, dim 0), conv_transpose,
locally_connected (unfold + einsum), maxpool / avgpool (ceil_mode, count_include_pad,
asymmetric padding), global_avgpool, global_maxpool, fractional_maxpool (torch's random
windows), maxout, flatten, reshape, linear (incl. weight_norm), dropconnect, dropout,
stochastic_depth (row mode), batchnorm, layernorm, instancenorm, groupnorm, lrn, relu,
sigmoid, tanh, leaky_relu, prelu, elu, softmax (dim 1), add, concat, upsample,
center_crop, shortcut_pad. Any other type raises ``NotImplementedError`` naming it.

torch is imported lazily (it is the optional ``torch`` extra); importing this module
costs nothing.
"""
from __future__ import annotations

import math
from typing import Any, Callable

__all__ = ["build_torch_module", "SUPPORTED_TYPES"]

INPUT = "input"


def _torch():
    try:
        import torch  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("runtime.torch_twin needs PyTorch: pip install 'netspec[torch]'") from e
    return torch


# ------------------------------------------------------------------ report access helpers

def _get(obj: Any, key: str, default: Any = None) -> Any:
    """Attribute or mapping access (reports may be dataclasses or parsed JSON dicts)."""
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default)


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (list, tuple)):
        return int(v[0]), int(v[1])
    return int(v), int(v)


def _pad4(v: Any) -> tuple[int, int, int, int]:
    """Canonical pad is (top, bottom, left, right); tolerate int / (ph, pw) too."""
    if isinstance(v, (list, tuple)):
        if len(v) == 4:
            return tuple(int(x) for x in v)  # type: ignore[return-value]
        if len(v) == 2:
            return int(v[0]), int(v[0]), int(v[1]), int(v[1])
        v = v[0]
    return (int(v),) * 4  # type: ignore[return-value]


def _spec_fields(ps: Any) -> tuple[str, tuple[int, ...], str, str, int]:
    return (_get(ps, "name"), tuple(int(x) for x in _get(ps, "shape")),
            _get(ps, "kind", "param") or "param", _get(ps, "init", "zeros") or "zeros",
            int(_get(ps, "fan_in", 0) or 0))


# ------------------------------------------------------------------ module tree

def _make_classes():
    """Define the nn.Module subclasses once torch is imported (keeps import lazy)."""
    torch = _torch()
    nn = torch.nn

    class Node(nn.Module):
        """A name-space node: holds the tensors of one layer and/or child nodes."""

        def forward(self, *a):  # pragma: no cover - never called directly
            raise RuntimeError("Node is a container; call the TwinNet")

    class TwinNet(nn.Module):
        """The twin. ``layer_names`` lists the report's layers in execution order."""

        def __init__(self, plan, outputs, input_shape, tensors):
            super().__init__()
            # Plain Python containers (not registered): the registered tree lives in
            # self._modules under the dotted names; these are just fast lookups.
            self._plan = plan
            self._outputs = list(outputs)
            self.input_shape = tuple(input_shape)
            self._tensors = tensors          # layer name -> {suffix: (holder, leaf, kind)}
            self.layer_names = [p[0] for p in plan]
            self.check_shapes = True

        def forward(self, x):
            if tuple(x.shape[1:]) != self.input_shape:
                raise RuntimeError(f"input shape {tuple(x.shape[1:])} (batch excluded) != "
                                   f"the spec's {self.input_shape}")
            vals = {INPUT: x}
            for name, fn, ins, out_shape, free in self._plan:
                y = fn(*[vals[i] for i in ins])
                if self.check_shapes and tuple(y.shape[1:]) != out_shape:
                    raise RuntimeError(f"layer {name!r}: torch computed shape "
                                       f"{tuple(y.shape[1:])}, the report says {out_shape}")
                vals[name] = y
                for f in free:
                    if f not in self._outputs:
                        vals.pop(f, None)
            outs = tuple(vals[o] for o in self._outputs)
            return outs[0] if len(outs) == 1 else outs

        # numpy helpers: the dicts of compiler.CompiledNet.params / .buffers
        def arrays(self) -> dict:
            """All parameters and buffers as float32 numpy arrays, netspec names."""
            return {k: v.detach().cpu().numpy().copy() for k, v in self.state_dict().items()}

        def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
            """As nn.Module's, but tolerant of PyTorch's ``num_batches_tracked`` counters,
            which netspec does not keep (a torchvision state_dict loads as it is)."""
            own = set(self.state_dict().keys())
            sd = {k: v for k, v in state_dict.items()
                  if k in own or not k.endswith(".num_batches_tracked")}
            return super().load_state_dict(sd, strict=strict, assign=assign)

        def load_arrays(self, d: dict, strict: bool = True) -> None:
            """Load a name -> array dict (e.g. ``{**net.params, **net.buffers}``)."""
            sd = {k: torch.as_tensor(v) for k, v in d.items()}
            self.load_state_dict(sd, strict=strict)

    return Node, TwinNet


_CLASSES: tuple | None = None


def _classes():
    global _CLASSES
    if _CLASSES is None:
        _CLASSES = _make_classes()
    return _CLASSES


def _node_at(root, path: list[str], Node):
    """The node at a dotted path below root, creating containers on the way. Children
    are written into ``_modules`` directly: layer names such as ``0`` or ``type`` are
    legal netspec names but clash with ``add_module``'s attribute checks."""
    m = root
    for part in path:
        child = m._modules.get(part)
        if child is None:
            child = Node()
            m._modules[part] = child
        m = child
    return m


def _init_tensor(torch, shape, init: str, fan_in: int, done: dict):
    """PyTorch's default initialisers, by the catalogue's init strings."""
    t = torch.empty(shape, dtype=torch.float32)
    fan = fan_in or (math.prod(shape[1:]) if len(shape) > 1 else max(shape[0], 1))
    if init == "zeros":
        t.zero_()
    elif init == "ones":
        t.fill_(1.0)
    elif init.startswith("const:"):
        t.fill_(float(init.split(":", 1)[1]))
    elif init in ("kaiming_uniform", "uniform_fan_in"):
        # nn.Conv2d / nn.Linear defaults: kaiming_uniform(a=sqrt(5)) == U(+-1/sqrt(fan_in))
        b = 1.0 / math.sqrt(fan)
        t.uniform_(-b, b)
    elif init == "kaiming_normal":
        t.normal_(0.0, math.sqrt(2.0 / fan))
    elif init == "he_uniform":
        b = math.sqrt(6.0 / fan)
        t.uniform_(-b, b)
    elif init == "lecun_normal":
        t.normal_(0.0, math.sqrt(1.0 / fan))
    elif init.startswith("normal:"):
        t.normal_(0.0, float(init.split(":", 1)[1]))
    elif init.startswith("uniform:"):
        b = float(init.split(":", 1)[1])
        t.uniform_(-b, b)
    elif init in ("xavier_uniform", "xavier_normal"):
        fan_out = shape[0] * (math.prod(shape[2:]) if len(shape) > 2 else 1)
        if init == "xavier_normal":
            t.normal_(0.0, math.sqrt(2.0 / (fan + fan_out)))
        else:
            b = math.sqrt(6.0 / (fan + fan_out))
            t.uniform_(-b, b)
    elif init.startswith("norm_of:"):
        src = done[init.split(":", 1)[1]]
        t.copy_(torch.linalg.vector_norm(src.reshape(src.shape[0], -1), dim=1)
                .reshape(shape))
    else:
        b = 1.0 / math.sqrt(fan)
        t.uniform_(-b, b)
    return t


def _make_tensors(torch, root, name: str, specs, Node) -> dict | None:
    """Create the tensors of one layer, exactly its ParamSpecs in their order.

    ``specs`` items are ``(full name, ParamSpec)`` pairs (the checker's form) or bare
    ParamSpec-likes (full name = ``<layer>.<spec name>``). Each tensor is registered on the
    node at its dotted path. Returns suffix -> (holder module, leaf name, kind)."""
    if not specs:
        return None
    items = []
    for it in specs:
        if isinstance(it, (tuple, list)) and len(it) == 2 and isinstance(it[0], str):
            full, ps = it
        else:
            ps = it
            full = f"{name}.{_get(ps, 'name')}"
        suffix, shape, kind, init, fan = _spec_fields(ps)
        items.append((full, suffix, shape, kind, init, fan))
    done: dict = {}
    # initialisers may refer to another tensor of the layer (norm_of:weight_v): do the
    # referenced ones first, register in declaration order (state_dict order)
    for it in sorted(items, key=lambda i: i[4].startswith("norm_of:")):
        done[it[1]] = _init_tensor(torch, it[2], it[4], it[5], done)
    where = {}
    for full, suffix, shape, kind, init, fan in items:
        parts = full.split(".")
        holder = _node_at(root, parts[:-1], Node)
        if kind == "buffer":
            holder._buffers[parts[-1]] = done[suffix]
        else:
            holder._parameters[parts[-1]] = torch.nn.Parameter(done[suffix])
        where[suffix] = (holder, parts[-1], kind)
    return where


# ------------------------------------------------------------------ layer ops

SUPPORTED_TYPES = (
    "conv", "conv_transpose", "locally_connected", "maxpool", "avgpool", "global_avgpool",
    "global_maxpool", "adaptive_avgpool", "fractional_maxpool", "maxout", "flatten", "reshape", "linear",
    "dropconnect", "dropout", "stochastic_depth", "batchnorm", "layernorm", "instancenorm",
    "groupnorm", "lrn", "relu", "sigmoid", "tanh", "leaky_relu", "prelu", "elu", "softmax",
    "relu6", "hardsigmoid", "hardswish", "silu", "gelu", "softplus",
    "add", "multiply", "concat", "upsample", "center_crop", "shortcut_pad",
)


def _op(torch, net, layer) -> Callable:
    """The forward function of one layer: f(*input tensors) -> output tensor."""
    F = torch.nn.functional
    t = _get(layer, "type")
    name = _get(layer, "name")
    a = dict(_get(layer, "attrs", {}) or {})
    in_shapes = [tuple(s) for s in (_get(layer, "input_shapes") or [])]
    out_shape = tuple(_get(layer, "output_shape"))
    where = net._tensors.get(name) or {}

    def P(k):
        """The layer's tensor ``k`` (looked up at call time: .to() may replace it)."""
        w = where.get(k)
        if w is None:
            return None
        holder, leaf, kind = w
        return holder._buffers[leaf] if kind == "buffer" else holder._parameters[leaf]
    training = lambda: net.training  # noqa: E731

    def weight():
        """The (possibly weight-normalised) weight: w = g * v / ||v|| over dims 1.. ."""
        if P("weight_v") is not None:
            return torch._weight_norm(P("weight_v"), P("weight_g"), 0)
        return P("weight")

    if t == "conv":
        s, d, g = _pair(a.get("stride", 1)), _pair(a.get("dilation", 1)), int(a.get("groups", 1))
        pt, pb, pl, pr = _pad4(a.get("pad", 0))
        if pt == pb and pl == pr:
            return lambda x: F.conv2d(x, weight(), P("bias"), s, (pt, pl), d, g)
        return lambda x: F.conv2d(F.pad(x, (pl, pr, pt, pb)), weight(), P("bias"), s, 0, d, g)

    if t == "conv_transpose":
        s, d, g = _pair(a.get("stride", 1)), _pair(a.get("dilation", 1)), int(a.get("groups", 1))
        op = _pair(a.get("output_padding", 0))
        pt, pb, pl, pr = _pad4(a.get("pad", 0))
        if pt == pb and pl == pr:
            return lambda x: F.conv_transpose2d(x, weight(), P("bias"), s, (pt, pl), op, g, d)

        def convt(x):  # asymmetric padding = crop of the unpadded transposed conv
            y = F.conv_transpose2d(x, weight(), P("bias"), s, 0, op, g, d)
            return y[:, :, pt:y.shape[2] - pb, pl:y.shape[3] - pr]
        return convt

    if t == "locally_connected":
        k, s = _pair(a["kernel"]), _pair(a.get("stride", 1))
        pt, pb, pl, pr = _pad4(a.get("pad", 0))
        oc, oh, ow = out_shape

        def local(x):
            cols = F.unfold(F.pad(x, (pl, pr, pt, pb)), k, stride=s)      # (N, C*kh*kw, OH*OW)
            w = P("weight").reshape(oh * ow, oc, -1)                       # (P, O, C*kh*kw)
            y = torch.einsum("njp,poj->nop", cols, w).reshape(x.shape[0], oc, oh, ow)
            return y + P("bias") if P("bias") is not None else y
        return local

    if t in ("maxpool", "avgpool"):
        k = _pair(a["kernel"])
        s = _pair(a.get("stride") or a["kernel"])
        pt, pb, pl, pr = _pad4(a.get("pad", 0))
        ceil = bool(a.get("ceil_mode", False))
        sym = pt == pb and pl == pr
        if t == "maxpool":
            d = _pair(a.get("dilation", 1))
            if sym:
                return lambda x: F.max_pool2d(x, k, s, (pt, pl), d, ceil)
            return lambda x: F.max_pool2d(F.pad(x, (pl, pr, pt, pb), value=-math.inf), k, s, 0,
                                          d, ceil)
        cip = bool(a.get("count_include_pad", True))
        if sym:
            return lambda x: F.avg_pool2d(x, k, s, (pt, pl), ceil, cip)

        def avg_asym(x):  # sum over the zero-padded input / the counted positions
            xp = F.pad(x, (pl, pr, pt, pb))
            tot = F.avg_pool2d(xp, k, s, 0, ceil, True) * (k[0] * k[1])
            if cip:
                return tot / (k[0] * k[1])
            ones = F.pad(torch.ones_like(x[:1, :1]), (pl, pr, pt, pb))
            return tot / (F.avg_pool2d(ones, k, s, 0, ceil, True) * (k[0] * k[1]))
        return avg_asym

    if t == "global_avgpool":
        return lambda x: x.mean(dim=(2, 3)).reshape(x.shape[0], *out_shape)
    if t == "global_maxpool":
        return lambda x: x.amax(dim=(2, 3)).reshape(x.shape[0], *out_shape)
    if t == "adaptive_avgpool":
        return lambda x: F.adaptive_avg_pool2d(x, tuple(out_shape[1:]))
    if t == "fractional_maxpool":
        k = _pair(a.get("kernel", 2))
        return lambda x: F.fractional_max_pool2d(x, k, output_size=out_shape[1:])
    if t == "maxout":
        kk = int(a.get("k", 2))
        return lambda x: x.reshape(x.shape[0], x.shape[1] // kk, kk, *x.shape[2:]).amax(2)
    if t in ("flatten", "reshape"):
        return lambda x: x.reshape(x.shape[0], *out_shape)

    if t in ("linear", "dropconnect"):
        p = float(a.get("p", 0.0)) if t == "dropconnect" else 0.0

        def dense(x):
            x = x.reshape(x.shape[0], -1)   # image inputs are flattened C-major (catalogue)
            w = weight()
            if p > 0.0 and training():
                w = w * (torch.rand_like(w) >= p).to(w.dtype) / (1.0 - p)
            return F.linear(x, w, P("bias"))
        return dense

    if t == "dropout":
        p = float(a.get("p", 0.5))
        return lambda x: F.dropout(x, p, training())
    if t == "stochastic_depth":
        p = float(a.get("p", 0.5))

        def sdepth(x):
            if not training() or p == 0.0:
                return x
            keep = (torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device) >= p)
            return x * keep.to(x.dtype) / (1.0 - p)
        return sdepth

    if t == "batchnorm":
        eps, mom = float(a.get("eps", 1e-5)), float(a.get("momentum", 0.1))
        glob = bool(a.get("use_global_stats", False))     # like calling .eval() on this layer

        def bn(x):
            y = F.batch_norm(x, P("running_mean"), P("running_var"), P("weight"), P("bias"),
                             training() and not glob, mom, eps)
            nbt = P("num_batches_tracked")
            if nbt is not None and training() and not glob:
                nbt.add_(1)
            return y
        return bn
    if t == "layernorm":
        eps = float(a.get("eps", 1e-5))
        return lambda x: F.layer_norm(x, tuple(x.shape[1:]), P("weight"), P("bias"), eps)
    if t == "instancenorm":
        eps = float(a.get("eps", 1e-5))
        return lambda x: F.instance_norm(x, None, None, P("weight"), P("bias"), True, 0.1, eps)
    if t == "groupnorm":
        eps, g = float(a.get("eps", 1e-5)), int(a["groups"])
        return lambda x: F.group_norm(x, g, P("weight"), P("bias"), eps)
    if t == "lrn":
        size, alpha = int(a["size"]), float(a.get("alpha", 1e-4))
        beta, kk = float(a.get("beta", 0.75)), float(a.get("k", 1.0))
        return lambda x: F.local_response_norm(x, size, alpha, beta, kk)

    if t == "relu":
        return F.relu
    if t in ("relu6", "hardsigmoid", "hardswish", "silu", "gelu", "softplus"):
        return {"relu6": F.relu6, "hardsigmoid": F.hardsigmoid, "hardswish": F.hardswish,
                "silu": F.silu, "gelu": F.gelu, "softplus": F.softplus}[t]
    if t == "sigmoid":
        return torch.sigmoid
    if t == "tanh":
        return torch.tanh
    if t == "leaky_relu":
        slope = float(a.get("slope", a.get("negative_slope", 0.01)))
        return lambda x: F.leaky_relu(x, slope)
    if t == "prelu":
        return lambda x: F.prelu(x, P("weight"))
    if t == "elu":
        alpha = float(a.get("alpha", 1.0))
        return lambda x: F.elu(x, alpha)
    if t == "softmax":
        return lambda x: torch.softmax(x, dim=1)

    if t == "multiply":
        return lambda a, b: a * b
    if t == "add":
        def add(*xs):
            y = xs[0]
            for z in xs[1:]:
                y = y + z
            return y
        return add
    if t == "concat":
        return lambda *xs: torch.cat(xs, dim=1)
    if t == "upsample":
        mode = str(a.get("mode", "nearest"))
        sc = a.get("scale")
        # a `scale` -> scale_factor (coordinates map with 1/scale, as nn.Upsample(scale_factor))
        kw = {"size": tuple(out_shape[1:])} if sc is None else \
            {"scale_factor": tuple(float(s) for s in (sc if isinstance(sc, (list, tuple)) else (sc, sc)))}
        if mode in ("bilinear", "bicubic"):
            ac = bool(a.get("align_corners", False))
            return lambda x: F.interpolate(x, mode=mode, align_corners=ac, **kw)
        return lambda x: F.interpolate(x, mode=mode, **kw)
    if t == "center_crop":
        return _center_crop(a, in_shapes, out_shape)
    if t == "shortcut_pad":
        return _shortcut_pad(torch, a, in_shapes, out_shape)
    raise NotImplementedError(
        f"runtime.torch_twin: layer {name!r} has type {t!r}, which has no PyTorch twin "
        f"(supported: {', '.join(SUPPORTED_TYPES)})")


def _center_crop(a: dict, in_shapes: list, out_shape: tuple) -> Callable:
    """Crop input 0 to the output's (H, W) from top = (H - h) // 2, left = (W - w) // 2
    (an odd extra row/column is cut at the bottom/right); input 1, the size reference of
    the U-Net form, is not read."""
    oh, ow = out_shape[-2:]
    top, left = (in_shapes[0][1] - oh) // 2, (in_shapes[0][2] - ow) // 2
    return lambda x, *_ref: x[:, :, top:top + oh, left:left + ow]


def _shortcut_pad(torch, a: dict, in_shapes: list, out_shape: tuple) -> Callable:
    """ResNet option A: x[:, :, ::s, ::s], then (out - C) // 2 zero channels before and the
    rest after (the catalogue's rule, as in the common CIFAR code)."""
    sh, sw = _pair(a.get("stride", 1))
    extra = out_shape[0] - in_shapes[0][0]
    lo, hi = extra // 2, extra - extra // 2
    return lambda x: torch.nn.functional.pad(x[:, :, ::sh, ::sw], (0, 0, 0, 0, lo, hi))


# ------------------------------------------------------------------ entry point

def build_torch_module(report) -> "Any":
    """Build the PyTorch twin of a checked net.

    ``report``: a ``netspec.check`` Report (or an object/dict with the same fields):
    ``input_shape``, optional ``outputs`` (layer names; default the last layer), and
    ``layers``, each with ``name``, ``type``, ``inputs`` (producer names, ``"input"`` for
    the net input), ``input_shapes``, ``output_shape`` (batch excluded), canonical
    ``attrs`` and ``param_specs`` (``(full name, ParamSpec)`` pairs as the checker gives
    them, or bare ParamSpec-likes: name, shape, kind, init, fan_in).

    Returns a ``torch.nn.Module`` (float32, CPU, in training mode like any new module)
    whose ``state_dict`` keys are the netspec parameter + buffer names and whose
    ``forward(x)`` maps (N, *input_shape) to (N, *output_shape).
    Raises ``NotImplementedError`` for a layer type without a PyTorch counterpart.
    """
    torch = _torch()
    Node, TwinNet = _classes()
    layers = list(_get(report, "layers"))
    if not layers:
        raise ValueError("report has no layers")
    outputs = list(_get(report, "outputs", None) or []) or [_get(layers[-1], "name")]
    input_shape = tuple(_get(report, "input_shape"))

    # last use of every value, so the executor can drop intermediates early
    last_use: dict[str, int] = {}
    for i, l in enumerate(layers):
        for src in _get(l, "inputs"):
            last_use[src] = i
    net = TwinNet([], outputs, input_shape, {})
    for l in layers:
        where = _make_tensors(torch, net, _get(l, "name"), _get(l, "param_specs") or [], Node)
        if where is not None:
            net._tensors[_get(l, "name")] = where
            if _get(l, "freeze", False):          # `freeze: true` -> not trained
                for holder, leaf, kind in where.values():
                    if kind != "buffer":
                        holder._parameters[leaf].requires_grad_(False)
    plan = []
    for i, l in enumerate(layers):
        ins = list(_get(l, "inputs"))
        free = [s for s in set(ins) if last_use.get(s) == i and s != INPUT]
        plan.append((_get(l, "name"), _op(torch, net, l), ins, tuple(_get(l, "output_shape")),
                     free))
    net._plan = plan
    net.layer_names = [p[0] for p in plan]
    return net
