"""``check(spec, input_shape=None) -> Report``: the spec's type checker.

Walks ``spec.layers`` in order, resolves every layer's input shapes, completes and
normalises its attributes, applies the layer's shape rule and computes its parameters,
MACs and receptive field. Any impossible configuration becomes a located ``SpecError``
naming the layer, its type, its input shape(s) and the formula that failed.

``add`` layers whose inputs differ in shape get a projection inserted on every input after
the first (docs/spec-language.md "Shortcuts"); ``report.spec`` is the spec with those
layers inserted and the adds rewired -- lower *that* (or ``report.layers``, which carry the
normalised attributes and shapes), not the raw spec. ``check(report.spec)`` is a fixed point.

Conventions (documented choices):

* MACs: multiply-accumulates of conv / conv_transpose / locally_connected / linear /
  dropconnect only; bias adds, norms, activations, pooling and merges count 0
  (fvcore / ptflops convention; reproduces torchvision's figures, e.g. resnet18 1.814 G).
* params: learnable tensors only (``kind == "param"``); buffers (BatchNorm running stats)
  are excluded from the counts but included in ``param_bytes`` (float32).
* trainable_params: params of layers without ``freeze``; the rest are non-trainable.
* activation_bytes: float32 bytes of every layer's output for ONE image, x2 for the
  backward pass (each output's gradient is the same size) -- torchinfo's "forward/backward
  pass size" estimate. The input is not included; in-place execution or memory planning
  lowers the real figure, saved masks/statistics raise it slightly.
* receptive fields: Araujo et al. (Distill 2019) from input RF (size 1, jump 1, start 0.5);
  merges take the largest; global pooling, linear and flatten cover the whole input.

Importing this module must stay cheap: no numba, no compiler.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import Loc, SpecError, did_you_mean, layer_type_hint
from .layers import REGISTRY, RF, ParamSpec, Shape, ShapeError, complete_attrs
from .layers._common import ceil_div, fmt_shape, prod
from .layers.initattrs import apply_init
from .spec import INPUT, LayerSpec, Spec

FLOAT_BYTES = 4
# Largest tensor (elements, one image for activations) a spec may declare: beyond 2**31
# elements int32 indexing in kernels breaks and no machine holds it anyway, so an absurd
# size (a 10**12-channel conv) is refused here, at check time, with a located error.
MAX_TENSOR_ELEMENTS = 2 ** 31 - 1


@dataclass
class LayerReport:
    name: str
    type: str
    inputs: list[str]
    input_shapes: list[Shape]
    output_shape: Shape
    attrs: dict[str, Any]                    # normalised, canonical (pairs as tuples)
    param_specs: list[tuple[str, ParamSpec]]  # (full name, spec), params and buffers
    params: int                              # element count of params (not buffers)
    macs: int
    receptive_field: RF
    loc: Loc = field(default_factory=Loc)
    freeze: bool = False
    lr_mult: float = 1.0
    inserted: bool = False                   # added by the checker (shortcut projection)

    @property
    def buffers(self) -> int:
        return sum(prod(p.shape) for _, p in self.param_specs if p.kind == "buffer")


@dataclass
class Report:
    name: str
    input_shape: Shape
    output_shape: Shape
    total_params: int
    trainable_params: int
    non_trainable_params: int
    total_macs: int
    param_bytes: int
    activation_bytes: int
    layers: list[LayerReport]
    spec: Spec
    outputs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def layer(self, name: str) -> LayerReport:
        for l in self.layers:
            if l.name == name:
                return l
        raise KeyError(name)

    def to_json(self) -> dict:
        """The object of DESIGN.md §3 (``json.dumps`` it); shapes without batch.  A spec with
        several ``outputs`` adds, after "layers", "outputs": [{"name", "output_shape"}]
        ("output_shape" stays the first output's, the one the loss applies to)."""
        j = {
            "name": self.name, "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape), "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "non_trainable_params": self.non_trainable_params, "total_macs": self.total_macs,
            "param_bytes": self.param_bytes, "activation_bytes": self.activation_bytes,
            "layers": [{"name": l.name, "type": l.type, "inputs": list(l.inputs),
                        "output_shape": list(l.output_shape), "params": l.params,
                        "macs": l.macs, "receptive_field": rf_json(l.receptive_field)}
                       for l in self.layers]}
        if len(self.outputs) > 1:
            j["outputs"] = [{"name": o, "output_shape": list(self.layer(o).output_shape)}
                            for o in self.outputs]
        return j

    def format_table(self) -> str:
        """A torchinfo-like table: name, type, output shape, params, MACs, RF size/jump,
        then totals and memory lines."""
        return format_table(self)


def _num(x: float):
    x = float(x)
    return int(x) if x.is_integer() else round(x, 6)


def rf_json(rf: RF) -> dict:
    """{"size", "jump", "start"}: one number when h == w, else [h, w]."""
    def one(p):
        return _num(p[0]) if p[0] == p[1] else [_num(p[0]), _num(p[1])]
    return {"size": one(rf.size), "jump": one(rf.jump), "start": one(rf.start)}


# ------------------------------------------------------------------------------ checker

class _State:
    def __init__(self, spec: Spec, in_shape: Shape):
        self.spec = spec
        self.shapes: dict[str, Shape] = {INPUT: in_shape}
        self.rfs: dict[str, RF] = {INPUT: RF()}
        self.types: dict[str, str] = {INPUT: "input"}
        self.reports: list[LayerReport] = []
        self.layers: list[LayerSpec] = []

    def error(self, ls: LayerSpec, msg: str, hint: str | None = None,
              attr: str | None = None, value: Any = None) -> SpecError:
        loc = ls.attr_locs.get(attr, ls.loc) if attr else ls.loc
        if ls.trace:
            where = ", ".join(str(t) for t in ls.trace)
            hint = (hint + "; " if hint else "") + f"(expanded from the block used at {where})"
        return SpecError.at(loc, msg, hint=hint, value=value,
                            source_lines=self.spec.source_lines)


def _layer_head(ls: LayerSpec, in_shapes: list[Shape]) -> str:
    ins = ", ".join(fmt_shape(s) for s in in_shapes)
    word = "input" if len(in_shapes) == 1 else "inputs"
    return f"{ls.type} layer '{ls.name}' ({word} {ins})"


def _run(st: _State, ls: LayerSpec, *, inserted: bool = False) -> LayerReport:
    if ls.name in st.shapes:
        raise st.error(ls, f"duplicate layer name '{ls.name}'",
                       hint="names must be unique after block expansion")
    ld = REGISTRY.get(ls.type)
    if ld is None:
        raise st.error(ls, f"unknown layer type '{ls.type}'", hint=layer_type_hint(ls.type, REGISTRY))
    inputs = list(ls.inputs) or [st.layers[-1].name if st.layers else INPUT]
    for i in inputs:  # the loader resolves `from:`; this guards hand-built specs
        if i not in st.shapes:
            raise st.error(ls, f"{ls.type} layer '{ls.name}' reads '{i}', which is not defined "
                               f"before it", hint=did_you_mean(i, st.shapes))
    if ld.arity is not None and len(inputs) != ld.arity:
        raise st.error(ls, f"{ls.type} layer '{ls.name}' takes {ld.arity} input(s), "
                           f"got {len(inputs)}: {inputs}")
    attrs = dict(ls.attrs)
    freeze = bool(attrs.pop("freeze", False))
    lr_mult = float(attrs.pop("lr_mult", 1.0))
    in_shapes = [st.shapes[i] for i in inputs]
    try:
        full = complete_attrs(ld, attrs)
        if ld.type == "add":
            inputs, in_shapes = _project(st, ls, full, inputs, in_shapes, freeze, lr_mult)
        a = ld.normalize(full, in_shapes)
        out = tuple(int(x) for x in ld.output_shape(a, in_shapes))
        pspecs = apply_init(ld.params(a, in_shapes), full)     # weight_init / bias_init
        macs = int(ld.macs(a, in_shapes, out))
        rf = ld.receptive_field(a, in_shapes, [st.rfs[i] for i in inputs])
    except ShapeError as e:
        msg = f"{_layer_head(ls, in_shapes)}: {e.message}"
        if e.formula:
            msg += f"  [{e.formula}]"
        raise st.error(ls, msg, hint=e.hint, attr=e.attr) from None
    except (ArithmeticError, ValueError) as e:   # e.g. int(nan), int(1e308 * 8)
        raise st.error(ls, f"{_layer_head(ls, in_shapes)}: invalid attribute value ({e})",
                       hint="use finite, realistic numbers") from None
    _check_sizes(st, ls, in_shapes, out, pspecs)
    if any(x <= 0 for x in out):  # a layer rule that forgot to check
        raise st.error(ls, f"{_layer_head(ls, in_shapes)}: non-positive output shape "
                           f"{fmt_shape(out)}")
    rep = LayerReport(
        name=ls.name, type=ld.type, inputs=inputs, input_shapes=in_shapes, output_shape=out,
        attrs=a, param_specs=[(f"{ls.name}.{p.name}", p) for p in pspecs],
        params=sum(prod(p.shape) for p in pspecs if p.kind == "param"), macs=macs,
        receptive_field=rf, loc=ls.loc, freeze=freeze, lr_mult=lr_mult, inserted=inserted)
    st.shapes[ls.name], st.rfs[ls.name], st.types[ls.name] = out, rf, ld.type
    st.reports.append(rep)
    st.layers.append(dataclasses.replace(ls, type=ld.type, inputs=list(inputs)))
    return rep


def _check_sizes(st: _State, ls: LayerSpec, in_shapes, out, pspecs) -> None:
    """Refuse a layer whose output (one image) or any parameter tensor exceeds
    MAX_TENSOR_ELEMENTS, located at its ``out`` attribute when it has one."""
    attr = "out" if "out" in ls.attr_locs else None
    if prod(out) > MAX_TENSOR_ELEMENTS:
        raise st.error(ls, f"{_layer_head(ls, in_shapes)}: output {fmt_shape(out)} has "
                           f"{prod(out):,} elements per image (limit 2**31 - 1)",
                       hint="use realistic sizes", attr=attr)
    for p in pspecs:
        if prod(p.shape) > MAX_TENSOR_ELEMENTS:
            raise st.error(ls, f"{_layer_head(ls, in_shapes)}: parameter '{p.name}' "
                               f"{fmt_shape(tuple(p.shape))} has {prod(p.shape):,} elements "
                               f"(limit 2**31 - 1)", hint="use realistic sizes", attr=attr)


def _stride_to(n: int, target: int, hint: float) -> int | None:
    """A stride s with ceil(n / s) == target (a 1x1 window sweep), or None. Several may
    fit (n=10 -> 2: s = 5..9); prefer ``hint``, the stride the main branch applied (the
    ratio of its RF jump to the shortcut's), else the smallest."""
    if target <= 0 or target > n:
        return None
    if float(hint).is_integer() and hint >= 1 and ceil_div(n, int(hint)) == target:
        return int(hint)
    s = ceil_div(n, target)
    return s if ceil_div(n, s) == target else None


def _project(st: _State, add: LayerSpec, a: dict, inputs: list[str], in_shapes: list[Shape],
             freeze: bool, lr_mult: float) -> tuple[list[str], list[Shape]]:
    """Insert a projection on every mismatching input after the first; returns the
    rewired inputs and their shapes."""
    mode = a.get("project", "auto")
    mode = "conv_bn" if mode == "auto" else mode
    if mode == "none" or len(in_shapes) < 2:
        return inputs, in_shapes
    scope = add.name.rsplit(".", 1)[0] if "." in add.name else add.name
    target = in_shapes[0]
    inputs, in_shapes = list(inputs), list(in_shapes)
    nproj = 0
    for i in range(1, len(inputs)):
        src = in_shapes[i]
        if tuple(src) == tuple(target):
            continue
        why = None
        if len(src) != 3 or len(target) != 3:
            why = "only image (C, H, W) shortcuts can be projected"
        else:
            r0, ri = st.rfs[inputs[0]], st.rfs[inputs[i]]
            strides = [_stride_to(src[k], target[k], r0.jump[k - 1] / ri.jump[k - 1])
                       for k in (1, 2)]
            if None in strides:
                why = (f"no stride s maps spatial {src[1]}x{src[2]} to {target[1]}x{target[2]} "
                       f"(needs ceil(H/s) = H_out)")
            elif mode == "pad" and target[0] < src[0]:
                why = f"pad cannot reduce channels {src[0]} -> {target[0]}"
        if why:
            raise ShapeError(f"cannot project shortcut input {i} ('{inputs[i]}') from "
                             f"{fmt_shape(src)} to {fmt_shape(target)}: {why}",
                             hint="fix the branch's stride/channels", attr="from")
        nproj += 1
        base = f"{scope}." if nproj == 1 else f"{scope}.proj{i}_"
        mk = dict(loc=add.loc, attr_locs={}, trace=add.trace)
        common = {"freeze": freeze, "lr_mult": lr_mult}
        stride = list(strides) if strides[0] != strides[1] else strides[0]
        if mode == "pad":
            chain = [LayerSpec(f"{base}shortcut", "shortcut_pad",
                               {"stride": stride, "out": target[0], **common}, [inputs[i]], **mk)]
        else:
            conv = {"out": target[0], "kernel": 1, "stride": stride, "pad": 0, "dilation": 1,
                    "groups": 1, "bias": mode == "conv", "weight_norm": False, **common}
            chain = [LayerSpec(f"{base}downsample.0", "conv", conv, [inputs[i]], **mk)]
            if mode == "conv_bn":
                chain.append(LayerSpec(f"{base}downsample.1", "batchnorm",
                                       {"eps": 1e-5, "momentum": 0.1, "affine": True, **common},
                                       [chain[0].name], **mk))
        for ls in chain:
            _run(st, ls, inserted=True)
        inputs[i] = chain[-1].name
        in_shapes[i] = st.shapes[inputs[i]]
    return inputs, in_shapes


def check(spec: Spec, input_shape: Shape | None = None) -> Report:
    """Type-check ``spec`` (optionally for another ``input_shape``, no batch) -> Report.
    Raises SpecError, located at the offending layer (or attribute) in the spec source."""
    in_shape = tuple(input_shape if input_shape is not None else spec.input_shape)
    if not in_shape or len(in_shape) not in (1, 3) or \
            not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in in_shape):
        raise SpecError.at(spec.input_loc, f"input shape must be [C, H, W] or [F] of positive "
                                           f"integers, got {list(in_shape)}",
                           source_lines=spec.source_lines)
    if prod(in_shape) > MAX_TENSOR_ELEMENTS:
        raise SpecError.at(spec.input_loc, f"input shape {list(in_shape)} has {prod(in_shape):,} "
                                           f"elements per image (limit 2**31 - 1)",
                           hint="use realistic sizes", source_lines=spec.source_lines)
    if not spec.layers:
        raise SpecError.at(spec.input_loc, "the spec has no layers",
                           source_lines=spec.source_lines)
    st = _State(spec, in_shape)
    for ls in spec.layers:
        _run(st, ls)
    outputs = list(spec.outputs) or [st.layers[-1].name]
    for o in outputs:
        if o not in st.shapes or o == INPUT:
            raise SpecError.at(spec.input_loc, f"output '{o}' is not a layer",
                               hint=did_you_mean(o, st.shapes), source_lines=spec.source_lines)
    for o in (getattr(spec, "train", None) or {}).get("loss_weights") or {}:
        if prod(st.shapes[o]) != prod(st.shapes[outputs[0]]):
            loc = getattr(spec, "locs", {}).get(("loss_weights", o), spec.input_loc)
            raise SpecError.at(loc, f"`train.loss_weights` weights output '{o}' of shape "
                                               f"{st.shapes[o]}, but the loss compares every weighted "
                                               f"output with the targets of the first, shaped "
                                               f"{st.shapes[outputs[0]]}",
                               hint="give the extra head the first output's size",
                               source_lines=spec.source_lines)
    reports = st.reports
    total = sum(r.params for r in reports)
    trainable = sum(r.params for r in reports if not r.freeze)
    pbytes = FLOAT_BYTES * sum(prod(p.shape) for r in reports for _, p in r.param_specs)
    abytes = 2 * FLOAT_BYTES * sum(prod(r.output_shape) for r in reports)
    new_spec = dataclasses.replace(spec, layers=st.layers, outputs=outputs,
                                   input_shape=in_shape)
    return Report(name=spec.name, input_shape=in_shape, output_shape=st.shapes[outputs[0]],
                  total_params=total, trainable_params=trainable,
                  non_trainable_params=total - trainable,
                  total_macs=sum(r.macs for r in reports), param_bytes=pbytes,
                  activation_bytes=abytes, layers=reports, spec=new_spec, outputs=outputs,
                  warnings=_warnings(st, outputs))


def _warnings(st: _State, outputs: list[str]) -> list[str]:
    used: dict[str, list[str]] = {}
    values: set = set()           # layers whose values (not only their size) something reads
    for r in st.reports:
        for k, i in enumerate(r.inputs):
            used.setdefault(i, []).append(r.type)
            if not (k == 1 and r.type in ("center_crop", "upsample")):
                values.add(i)
    out = []
    for r in st.reports:
        if r.name not in used and r.name not in outputs:
            out.append(f"{r.loc}: layer '{r.name}' ({r.type}) is not used by any layer or output")
        elif r.name not in values and r.name not in outputs:
            out.append(f"{r.loc}: layer '{r.name}' ({r.type}) only gives its size to a center_crop / "
                       f"upsample reference: it is not computed (a BatchNorm there keeps its running "
                       f"statistics); use an earlier layer of that size as the reference")
        if r.type == "stochastic_depth" and "add" not in used.get(r.name, []):
            out.append(f"{r.loc}: stochastic_depth '{r.name}' should end a residual branch "
                       f"(feed an add); elsewhere it drops the whole signal")
    # a squashing layer in front of a loss that squashes again (the lectures' scores are raw)
    train = getattr(st.spec, "train", None) or {}
    (loss, _), = (train.get("loss") or {"softmax_cross_entropy": {}}).items()
    squash = {"softmax_cross_entropy": "softmax", "bce_with_logits": "sigmoid"}.get(loss)
    by_name = {r.name: r for r in st.reports}
    for o in [outputs[0], *(train.get("loss_weights") or {})]:
        r = by_name.get(o)
        if r is not None and r.type == squash:
            out.append(f"{r.loc}: layer '{r.name}' ({squash}) feeds the {loss} loss, which applies "
                       f"{squash} itself: training would squash twice (small, vanishing gradients); "
                       f"end the net with the raw scores (eval and predict apply {squash})")
    return out


def _mb(n: int) -> str:
    """Bytes in decimal megabytes, torchinfo's unit (its "(MB)" columns divide by 1e6)."""
    return f"{n / 1e6:,.2f} MB"


def _pair_str(p) -> str:
    a, b = _num(p[0]), _num(p[1])
    return str(a) if a == b else f"{a}x{b}"


def format_table(r: Report) -> str:
    head = ("Layer", "Type", "Output shape", "Params", "MACs", "RF size", "RF jump")
    rows = []
    for l in r.layers:
        name = l.name + (" *" if l.inserted else "") + (" (frozen)" if l.freeze else "")
        rows.append((name, l.type, fmt_shape(l.output_shape), f"{l.params:,}" if l.params
                     else "--", f"{l.macs:,}" if l.macs else "--",
                     _pair_str(l.receptive_field.size), _pair_str(l.receptive_field.jump)))
    w = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    right = (False, False, False, True, True, True, True)

    def line(cells):
        return "  ".join(c.rjust(w[i]) if right[i] else c.ljust(w[i])
                         for i, c in enumerate(cells)).rstrip()
    bar = "=" * len(line(head))
    inb = FLOAT_BYTES * prod(r.input_shape)
    outs = (f"output {fmt_shape(r.output_shape)}" if len(r.outputs) <= 1 else "outputs " +
            ", ".join(f"{o} {fmt_shape(r.layer(o).output_shape)}" for o in r.outputs) +
            " (a training loss applies to the first)")
    out = [f"{r.name}: input {fmt_shape(r.input_shape)} -> {outs}",
           bar, line(head), "-" * len(bar), *(line(x) for x in rows), bar,
           f"Total params: {r.total_params:,}",
           f"Trainable params: {r.trainable_params:,}",
           f"Non-trainable params: {r.non_trainable_params:,}",
           f"Total MACs (one image, conv/linear only): {r.total_macs:,} "
           f"({r.total_macs / 1e9:.3f} G)",
           "-" * len(bar),
           f"Input size (one image): {_mb(inb)}",
           f"Params + buffers size: {_mb(r.param_bytes)}",
           f"Activations, forward + backward (one image): {_mb(r.activation_bytes)}",
           f"Estimated total size (one image): {_mb(inb + r.param_bytes + r.activation_bytes)}",
           bar]
    if any(l.inserted for l in r.layers):
        out.append("* inserted by the checker (shortcut projection)")
    out += [f"warning: {x}" for x in r.warnings]
    return "\n".join(out)


__all__ = ["check", "Report", "LayerReport", "rf_json", "format_table"]
