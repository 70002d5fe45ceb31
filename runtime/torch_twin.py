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
sigmoid, tanh, leaky_relu, prelu, elu, relu6, hardsigmoid, hardswish, silu, gelu, softplus,
softmax (dim 1), add, multiply, concat, upsample, adaptive_avgpool, center_crop,
shortcut_pad, channel_shuffle, channel_slice (the per-type functions: ``runtime/torch_layers.py``). Any other type raises
``NotImplementedError`` naming it.

torch is imported lazily (it is the optional ``torch`` extra); importing this module
costs nothing.
"""
from __future__ import annotations

import math
from typing import Any

from .torch_layers import INPUT, SUPPORTED_TYPES, _get, _op

__all__ = ["build_torch_module", "SUPPORTED_TYPES"]



def _torch():
    try:
        import torch  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("runtime.torch_twin needs PyTorch: pip install 'netspec[torch]'") from e
    return torch


def _spec_fields(ps: Any) -> tuple[str, tuple[int, ...], str, str, tuple[int, int]]:
    """(name, shape, kind, init, (fan_in, fan_out)) of a ParamSpec-like."""
    return (_get(ps, "name"), tuple(int(x) for x in _get(ps, "shape")),
            _get(ps, "kind", "param") or "param", _get(ps, "init", "zeros") or "zeros",
            (int(_get(ps, "fan_in", 0) or 0), int(_get(ps, "fan_out", 0) or 0)))


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


def _init_tensor(torch, shape, init: str, fans: tuple, done: dict):
    """PyTorch's default initialisers, by the catalogue's init strings (the same statistics
    as compiler/init.py's; fans = (fan_in, fan_out), 0 = from the shape)."""
    t = torch.empty(shape, dtype=torch.float32)
    fan_in, fan_out = fans
    fan = fan_in or (math.prod(shape[1:]) if len(shape) > 1 else max(shape[0], 1))
    fan_out = fan_out or (shape[0] * (math.prod(shape[2:]) if len(shape) > 2 else 1))
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
    elif init.startswith("he:"):
        _, a, mode, dist = init.split(":")
        std = math.sqrt(2.0 / (1.0 + float(a) ** 2)) / math.sqrt(fan if mode == "fan_in" else fan_out)
        if dist == "normal":
            t.normal_(0.0, std)
        else:
            t.uniform_(-std * math.sqrt(3.0), std * math.sqrt(3.0))
    elif init in ("xavier_uniform", "xavier_normal"):
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
