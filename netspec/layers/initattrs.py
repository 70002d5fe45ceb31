"""`weight_init` / `bias_init`: per-layer initialisers of the layers that own weights (conv,
conv_transpose, locally_connected, linear, dropconnect).

The default is PyTorch's (weights U(±1/√fan_in), i.e. kaiming_uniform with a=√5; biases
U(±1/√fan_in)).  ``apply_init`` rewrites the ``init`` string of a layer's ParamSpecs, which
``compiler/init.py`` (and the torch twin) turn into arrays:

    weight_init: he_normal | kaiming_normal | he   N(0, 2/fan_in)        (He et al. 2015, ReLU nets)
                 he_uniform | kaiming_uniform      U(±√(6/fan_in))
                 xavier_uniform | glorot_uniform   U(±√(6/(fan_in+fan_out)))  (Glorot & Bengio 2010)
                 xavier_normal | glorot_normal     N(0, 2/(fan_in+fan_out))
                 lecun_normal                      N(0, 1/fan_in)
                 zeros | default
                 {normal: std}  {uniform: bound}  {constant: value}     e.g. DCGAN's {normal: 0.02}
                 {he: {a: 0.01, mode: fan_in, distribution: normal}}   torch's kaiming_*_ with
                     a leaky ReLU / PReLU slope a (gain √(2/(1+a²))) and fan_in or fan_out
    bias_init:   a number (constant bias), e.g. 0
"""
from __future__ import annotations

import dataclasses
import math

from .base import Attr, ParamSpec, ShapeError

NAMED = {"he": "kaiming_normal", "he_normal": "kaiming_normal", "kaiming_normal": "kaiming_normal",
         "he_uniform": "he_uniform", "kaiming_uniform": "he_uniform",
         "xavier_uniform": "xavier_uniform", "glorot_uniform": "xavier_uniform",
         "xavier_normal": "xavier_normal", "glorot_normal": "xavier_normal",
         "lecun_normal": "lecun_normal", "zeros": "zeros"}
PARAMETRIC = {"normal": "normal", "uniform": "uniform", "constant": "const"}

INIT_ATTRS = {
    "weight_init": Attr("any", None, doc=(
        "weight initialiser: he_normal (= he, kaiming_normal), he_uniform, xavier_uniform "
        "(glorot_uniform), xavier_normal, lecun_normal, zeros, {normal: std}, {uniform: "
        "bound}, {constant: value} or {he: {a, mode: fan_in|fan_out, distribution: "
        "normal|uniform}}; default: PyTorch's U(±1/√fan_in)")),
    "bias_init": Attr("float", None, doc="constant initial bias (default: PyTorch's "
                                         "U(±1/√fan_in))"),
}

WEIGHTS = ("weight", "weight_v")


def init_string(v) -> str | None:
    """The ParamSpec init string of a `weight_init` value (None: keep the default)."""
    if v is None or v == "default":
        return None
    if isinstance(v, str):
        if v in NAMED:
            return NAMED[v]
    elif isinstance(v, dict) and len(v) == 1 and isinstance(v.get("he"), dict):
        return _he_string(v["he"])
    elif isinstance(v, dict) and len(v) == 1:
        (k, x), = v.items()
        if k in PARAMETRIC and isinstance(x, (int, float)) and not isinstance(x, bool) \
                and math.isfinite(x) and (k == "constant" or x > 0):
            return f"{PARAMETRIC[k]}:{float(x)!r}"
        if k in PARAMETRIC:
            raise ShapeError(f"weight_init {k} needs a finite number" +
                             ("" if k == "constant" else " > 0") + f", got {x!r}",
                             attr="weight_init")
    choices = ", ".join(["default", *NAMED])
    raise ShapeError(f"unknown weight_init {v!r}",
                     hint=f"use one of {choices}, or {{normal: std}}, {{uniform: bound}}, "
                          f"{{constant: value}}", attr="weight_init")


def _he_string(o: dict) -> str:
    """``{he: {a, mode, distribution}}`` -> ``he:<a>:<mode>:<distribution>``."""
    extra = set(o) - {"a", "mode", "distribution"}
    if extra:
        raise ShapeError(f"weight_init he: unknown key(s) {sorted(extra)}",
                         hint="he takes a (negative slope), mode (fan_in | fan_out) and "
                              "distribution (normal | uniform)", attr="weight_init")
    a = o.get("a", 0.0)
    if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a) or a < 0:
        raise ShapeError(f"weight_init he: a must be a finite number >= 0, got {a!r}", attr="weight_init")
    mode, dist = o.get("mode", "fan_in"), o.get("distribution", "normal")
    if mode not in ("fan_in", "fan_out") or dist not in ("normal", "uniform"):
        raise ShapeError(f"weight_init he: mode must be fan_in or fan_out and distribution normal or "
                         f"uniform, got {mode!r}, {dist!r}", attr="weight_init")
    return f"he:{float(a)!r}:{mode}:{dist}"


def apply_init(pspecs: list[ParamSpec], attrs: dict) -> list[ParamSpec]:
    """The layer's ParamSpecs with `weight_init` / `bias_init` applied (weights are
    ``weight`` / ``weight_v``; ``weight_g`` follows weight_v's norm)."""
    w = init_string(attrs.get("weight_init"))
    b = attrs.get("bias_init")
    if b is not None and not math.isfinite(float(b)):
        raise ShapeError(f"bias_init must be finite, got {b!r}", attr="bias_init")
    if b is not None and not any(p.name == "bias" and p.kind == "param" for p in pspecs):
        raise ShapeError("bias_init is set but the layer has no bias", hint="remove bias_init "
                         "or set `bias: true`", attr="bias_init")
    out = []
    for p in pspecs:
        if w is not None and p.kind == "param" and p.name in WEIGHTS:
            p = dataclasses.replace(p, init=w)
        elif b is not None and p.kind == "param" and p.name == "bias":
            p = dataclasses.replace(p, init=f"const:{float(b)!r}")
        out.append(p)
    return out
