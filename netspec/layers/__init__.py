"""The layer catalogue. Importing this package registers every layer type in ``REGISTRY``
(type name or alias -> ``LayerDef`` instance).

Public helpers:

* ``get(type_name)``  -- the LayerDef for a type or alias (KeyError with a hint otherwise);
* ``canonical(type_name)`` -- alias -> canonical type name;
* ``types()``         -- canonical type names, sorted;
* ``COMMON_ATTRS``    -- attributes every layer accepts besides its own (``freeze``,
  ``lr_mult``; ``name`` and ``from`` are structural and live in LayerSpec.name/.inputs);
* ``complete_attrs(ld, attrs)`` -- fill defaults, reject unknown / missing keys, check
  numeric bounds and choices; raises ``ShapeError(attr=...)``. The checker calls it on
  every layer (idempotent on attrs the loader already completed).
"""
from __future__ import annotations

from typing import Any

from ..errors import did_you_mean
from .base import (ATTR_TYPES, REGISTRY, REQUIRED, RF, Attr, LayerDef, ParamSpec, Shape,
                   ShapeError, conv_out, register)
from . import activation, conv, linear, merge, norm, pool, regularize  # noqa: F401  (register)
from ._common import is_int

COMMON_ATTRS: dict[str, Attr] = {
    "freeze": Attr("bool", False, doc="do not train this layer's parameters"),
    "lr_mult": Attr("float", 1.0, doc="learning-rate multiplier for this layer's parameters",
                    min=0.0),
}


def get(type_name: str) -> LayerDef:
    try:
        return REGISTRY[type_name]
    except KeyError:
        raise KeyError(f"unknown layer type {type_name!r}"
                       + (f"; {h}" if (h := did_you_mean(type_name, REGISTRY)) else "")) from None


def canonical(type_name: str) -> str:
    return get(type_name).type


def types() -> list[str]:
    return sorted({ld.type for ld in REGISTRY.values()})


def _check_value(name: str, at: Attr, v: Any) -> None:
    if v is None and at.default is None:
        return  # optional attribute left unset
    t = at.type
    if t == "bool" and not isinstance(v, bool):
        raise ShapeError(f"{name} must be true or false, got {v!r}", attr=name)
    if t == "int" and not is_int(v):
        raise ShapeError(f"{name} must be an integer, got {v!r}", attr=name)
    if t == "float" and (isinstance(v, bool) or not isinstance(v, (int, float))):
        raise ShapeError(f"{name} must be a number, got {v!r}", attr=name)
    if t == "str":
        if not isinstance(v, str):
            raise ShapeError(f"{name} must be a string, got {v!r}", attr=name)
        if at.choices and v not in at.choices:
            raise ShapeError(f"{name} must be one of {', '.join(map(str, at.choices))}; "
                             f"got {v!r}", attr=name,
                             hint=did_you_mean(v, at.choices))
    nums = []
    if t in ("int", "float"):
        nums = [v]
    elif t == "int2":
        if is_int(v):
            nums = [v]
        elif isinstance(v, (list, tuple)) and len(v) == 2 and all(is_int(x) for x in v):
            nums = list(v)
        else:
            raise ShapeError(f"{name} must be an integer or a [h, w] pair, got {v!r}", attr=name)
    for x in nums:
        if at.min is not None and x < at.min:
            raise ShapeError(f"{name} must be >= {at.min}, got {v!r}", attr=name)
        if at.max is not None and x > at.max:
            raise ShapeError(f"{name} must be <= {at.max}, got {v!r}", attr=name)


def complete_attrs(ld: LayerDef, attrs: dict) -> dict:
    """Layer attrs (without common ones) -> attrs with defaults; validates keys and values."""
    out = {}
    for k in attrs:
        if k not in ld.attrs:
            raise ShapeError(f"unknown attribute {k!r} for layer type {ld.type}", attr=k,
                             hint=did_you_mean(k, list(ld.attrs) + list(COMMON_ATTRS)))
    for k, at in ld.attrs.items():
        if k in attrs:
            v = attrs[k]
        elif at.required:
            raise ShapeError(f"{ld.type} needs attribute {k!r} ({at.doc})")
        else:
            v = at.default
        _check_value(k, at, v)
        out[k] = v
    return out


__all__ = ["REGISTRY", "COMMON_ATTRS", "ATTR_TYPES", "REQUIRED", "RF", "Attr", "LayerDef",
           "ParamSpec", "Shape", "ShapeError", "conv_out", "register", "get", "canonical",
           "types", "complete_attrs"]
