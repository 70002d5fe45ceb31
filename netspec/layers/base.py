"""The contract every layer type fulfils (one class per layer type, one module per family).

A layer type is a subclass of ``LayerDef`` registered with ``@register``. It declares

* ``type``      -- the YAML key (``conv``, ``maxpool`` ...); ``aliases`` optional;
* ``attrs``     -- the attribute schema: name -> ``Attr`` (type, default, bounds, doc);
                   the loader validates user attributes against it and fills defaults;
                   the JSON Schema of ``netspec schema`` is generated from it;
* ``arity``     -- number of inputs (``None`` = one or more, for add/concat);
* ``normalize`` -- turns validated attrs into canonical form (kernel -> (kh, kw),
                   pad -> (top, bottom, left, right), ...) given the input shapes;
* ``output_shape`` -- the shape rule; raises ``ShapeError`` naming the failed formula;
* ``params``    -- the parameters and buffers it owns, PyTorch names and layouts;
* ``macs``      -- multiply-accumulates for one image forward;
* ``receptive_field`` -- how the RF recurrence sees it (Araujo et al., Distill 2019).

Shapes never include the batch dimension: (C, H, W) for images, (F,) for vectors.
Nothing here imports numba or the compiler: ``netspec check`` must stay instant.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

Shape = tuple[int, ...]

REQUIRED = object()  # sentinel: attribute has no default

# Attribute types understood by the loader and the schema generator:
#   "int", "float", "bool", "str"      plain scalars (str restricted by ``choices``)
#   "int2"        an int or a [h, w] pair of ints            -> normalised to (h, w)
#   "pad"         like int2, or "same"/"valid", or [t, b, l, r] -> (t, b, l, r)
#   "ints"        a list of ints (reshape target)
#   "float_or_ints" a float or a list of ints (upsample scale or size)
ATTR_TYPES = ("int", "float", "bool", "str", "int2", "pad", "ints", "float_or_ints", "any")


@dataclass(frozen=True)
class Attr:
    type: str
    default: Any = REQUIRED
    doc: str = ""
    min: float | None = None          # inclusive lower bound for numbers (each element for pairs)
    max: float | None = None          # inclusive upper bound
    choices: tuple = ()               # allowed values for "str"

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class ParamSpec:
    """One tensor a layer owns. ``name`` is the suffix (``weight``); the full name is
    ``<layer name>.<suffix>``, matching PyTorch's state_dict keys."""

    name: str
    shape: Shape
    kind: str = "param"        # "param" (in net.params) or "buffer" (net.buffers, e.g. running_mean)
    init: str = "zeros"        # zeros | ones | kaiming_uniform | kaiming_normal | xavier_uniform | uniform_fan_in | const:<v>
    decay: bool = False        # subject to weight decay by default (weights yes, biases/norm params no)
    fan_in: int = 0            # for initialisers
    fan_out: int = 0           # for xavier_*; 0: from the shape as torch does (shape[0] * prod(shape[2:]))
    unit_dims: int = 1         # leading dims that index a unit: its incoming weights are
                               # weight[i0, .., i_{unit_dims-1}] (max_norm rescales each of them)


@dataclass(frozen=True)
class RF:
    """Receptive field of one output position, per axis (h, w): size, jump, start
    (Araujo et al.): jump_out = jump_in*s, size_out = size_in + (k_eff-1)*jump_in,
    start_out = start_in + ((k_eff-1)/2 - p)*jump_in."""

    size: tuple[float, float] = (1, 1)
    jump: tuple[float, float] = (1, 1)
    start: tuple[float, float] = (0.5, 0.5)


class ShapeError(Exception):
    """Raised by a shape rule; ``formula`` shows the computation that failed, ``hint`` the fix.
    The checker turns it into a located SpecError naming the layer and its input shape."""

    def __init__(self, message: str, formula: str | None = None, hint: str | None = None,
                 attr: str | None = None):
        super().__init__(message)
        self.message, self.formula, self.hint, self.attr = message, formula, hint, attr


class LayerDef:
    type: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    family: ClassVar[str] = ""
    doc: ClassVar[str] = ""
    attrs: ClassVar[dict[str, Attr]] = {}
    arity: ClassVar[int | None] = 1       # None: one or more inputs
    differentiable: ClassVar[bool] = True

    def normalize(self, a: dict, in_shapes: list[Shape]) -> dict:
        """Canonical attrs (pairs as tuples, 'same' padding resolved). Default: unchanged."""
        return dict(a)

    def output_shape(self, a: dict, in_shapes: list[Shape]) -> Shape:
        raise NotImplementedError

    def params(self, a: dict, in_shapes: list[Shape]) -> list[ParamSpec]:
        return []

    def macs(self, a: dict, in_shapes: list[Shape], out_shape: Shape) -> int:
        return 0

    def receptive_field(self, a: dict, in_shapes: list[Shape], rfs: list[RF]) -> RF:
        """Default: elementwise (RF unchanged); merges take the largest over inputs."""
        return max(rfs, key=lambda r: (r.size[0] * r.size[1]))


REGISTRY: dict[str, LayerDef] = {}


def register(cls: type[LayerDef]) -> type[LayerDef]:
    inst = cls()
    for key in (cls.type, *cls.aliases):
        if key in REGISTRY:
            raise RuntimeError(f"layer type {key!r} registered twice")
        REGISTRY[key] = inst
    return cls


def conv_out(n: int, k: int, s: int, p0: int, p1: int, d: int = 1, ceil: bool = False) -> int:
    """Output length of a conv/pool window sweep (PyTorch's formula, incl. ceil_mode's rule
    that the last window must start inside the input or left padding)."""
    keff = d * (k - 1) + 1
    span = n + p0 + p1 - keff
    if ceil:
        out = -(-span // s) + 1
        if (out - 1) * s >= n + p0:
            out -= 1
        return out
    return span // s + 1
