"""``json_schema() -> dict``: the JSON Schema (draft-07) of the spec language.

Generated, never written by hand: layer items come from the catalogue's ``Attr`` tables
(``netspec.layers.REGISTRY``), the ``train:`` section from ``netspec.train_schema.TRAIN``.
Meant for YAML-aware editors (yaml-language-server: put
``# yaml-language-server: $schema=netspec.schema.json`` on the first line of a spec) to
validate and complete specs; the loader stays the authority (the schema cannot express
name resolution, block argument types or cross-field rules).

Layout: ``definitions/layer`` is a ``oneOf`` of one-key objects, one per catalogue type
and alias, plus ``sequential`` and a catch-all for block instances (any other key);
``definitions/block_layer`` is the same inside block bodies, where every attribute may
also be a ``$arg`` reference.
"""
from __future__ import annotations

import math
from typing import Any

from .layers.base import REQUIRED, Attr
from .blocks import ARG_TYPES
from .loader import SPEC_NAME, TOP_KEYS
from .train_schema import OMIT, TRAIN, Choice, Enum, Field, Group, ListOf, Weights

INT = {"type": "integer"}
NAME_PATTERN = r"^([A-Za-z_][A-Za-z0-9_]*|0|[1-9][0-9]*)(\.([A-Za-z_][A-Za-z0-9_]*|0|[1-9][0-9]*))*(\{i\})?$"
ARGREF = {"type": "string", "pattern": r"^[-+*/%().0-9eE\s]*\$[A-Za-z_][A-Za-z0-9_]*[-+*/%().0-9eE\s$A-Za-z_]*$",
          "description": "a block argument ($name) or arithmetic on arguments ($growth * 4)"}


def _json_ok(v: Any) -> bool:
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, (list, tuple)):
        return all(_json_ok(x) for x in v)
    return v is None or isinstance(v, (bool, int, str))


def _bounded(base: dict, lo, hi) -> dict:
    out = dict(base)
    if lo is not None:
        out["minimum"] = lo
    if hi is not None:
        out["maximum"] = hi
    return out


def _attr_type(t: str, lo=None, hi=None, choices=()) -> dict:
    i = _bounded(INT, lo, hi)
    num = _bounded({"type": "number"}, lo, hi)
    if t == "int":
        return i
    if t == "float":
        return num
    if t == "bool":
        return {"type": "boolean"}
    if t == "str":
        return {"type": "string", "enum": list(choices)} if choices else {"type": "string"}
    if t == "int2":
        return {"anyOf": [i, {"type": "array", "items": i, "minItems": 2, "maxItems": 2}]}
    if t == "pad":
        return {"anyOf": [i, {"enum": ["same", "valid"]},
                          {"type": "array", "items": i, "minItems": 2, "maxItems": 4,
                           "not": {"maxItems": 3, "minItems": 3}}]}
    if t == "ints":
        return {"type": "array", "items": i}
    if t == "floats":
        return {"type": "array", "items": num}
    if t == "float_or_ints":
        return {"anyOf": [num, {"type": "array", "items": INT}]}
    return {}


def attr_schema(a: Attr, allow_args: bool = False) -> dict:
    """JSON Schema of one catalogue attribute (description and default included)."""
    s = _attr_type(a.type, a.min, a.max, tuple(a.choices))
    if a.default is None:
        s = {"anyOf": [s, {"type": "null"}]}
    if allow_args:
        s = {"anyOf": [s, ARGREF]}
    if a.doc:
        s["description"] = a.doc
    if a.default is not REQUIRED and _json_ok(a.default):
        s["default"] = list(a.default) if isinstance(a.default, tuple) else a.default
    return s


def _common(allow_args: bool) -> dict:
    def arg(s):
        return {"anyOf": [s, ARGREF]} if allow_args else s
    ref = {"anyOf": [{"type": "string"}, _bounded(INT, None, -1)]}
    return {
        "name": {**arg({"type": "string", "pattern": NAME_PATTERN}),
                 "description": "layer name: dotted identifiers (conv1, layer3.1.conv2)"},
        "from": {**arg({"anyOf": [ref, {"type": "array", "items": ref, "minItems": 1}]}),
                 "description": "inputs: a layer name, `input`, a negative relative index, "
                                "or a list of those"},
        "freeze": {**arg({"type": "boolean"}), "description": "do not train the parameters",
                   "default": False},
        "lr_mult": {**arg({"type": "number", "minimum": 0}),
                    "description": "learning-rate multiplier", "default": 1.0},
    }


def _one_key(key: str, body: dict, doc: str = "", nullable: bool = True) -> dict:
    s = {"type": "object", "required": [key], "additionalProperties": False,
         "properties": {key: {"anyOf": [body, {"type": "null"}]} if nullable else body}}
    if doc:
        s["properties"][key]["description"] = doc
        s["description"] = doc
    return s


def _layer_defs(registry: dict, allow_args: bool) -> dict:
    items = []
    lst = "#/definitions/" + ("block_layers" if allow_args else "layers")
    common = _common(allow_args)
    for key in sorted(registry):
        ld = registry[key]
        props = {k: attr_schema(a, allow_args) for k, a in ld.attrs.items()}
        props.update({k: v for k, v in common.items() if k not in props})
        body = {"type": "object", "properties": props, "additionalProperties": False}
        req = [k for k, a in ld.attrs.items() if a.required]
        if req:
            body["required"] = req
        doc = (ld.doc or "").strip().split("\n")[0]
        if key != ld.type:
            doc = f"alias of {ld.type}" + (f": {doc}" if doc else "")
        items.append(_one_key(key, body, doc))
    seq = {"type": "object", "required": ["layers"], "additionalProperties": False,
           "properties": {**{k: common[k] for k in ("name", "from", "freeze", "lr_mult")},
                         "layers": {"$ref": lst}}}
    items.append(_one_key("sequential", seq, "a group of layers named by index (nn.Sequential)",
                          nullable=False))
    block = {"type": "object", "minProperties": 1, "maxProperties": 1,
             "propertyNames": {"not": {"enum": sorted(registry) + ["sequential"]},
                               "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
             "additionalProperties": {"anyOf": [{"type": "null"}, {
                 "type": "object", "properties": {
                     **common, "repeat": {
                         **({"anyOf": [_bounded(INT, 1, None), ARGREF]} if allow_args
                            else _bounded(INT, 1, None)),
                         "description": "instantiate N times in sequence"},
                     "first": {"type": "object",
                               "description": "argument overrides for the first repetition"}},
                 "additionalProperties": True}]},
             "description": "an instance of a block defined under `blocks:`"}
    items.append(block)
    return {"oneOf": items}


def _train_node(f) -> dict:
    if isinstance(f, Field):
        s = _attr_type(f.type, f.min, f.max, f.choices)
        if f.length:
            s.update(minItems=f.length, maxItems=f.length)
        if f.nullable:
            s = {"anyOf": [s, {"type": "null"}]}
        if f.doc:
            s["description"] = f.doc
        if f.default is not OMIT and _json_ok(f.default):
            s["default"] = f.default
        return s
    if isinstance(f, Group):
        s = {"type": "object", "additionalProperties": False,
             "properties": {k: _train_node(v) for k, v in f.fields.items()}}
        alts = [s]
        alts.append({"type": "null"})   # the loader reads null as {} (or "off")
        if f.shorthand:
            alts.append(_train_node(f.fields[f.shorthand]))
        s = s if len(alts) == 1 else {"anyOf": alts}
        if f.doc:
            s["description"] = f.doc
        return s
    if isinstance(f, Enum):
        return {"anyOf": [{"enum": list(f.values)}, {"type": "null"}],
                "description": f.doc, "default": f.default}
    if isinstance(f, Choice):
        alts = [_one_key(k, _train_node(o), getattr(o, "doc", "")) for k, o in
                f.options.items()]
        alts.append({"enum": list(f.options)})
        s = {"oneOf": alts, "description": f.doc}
        if f.default is not None:
            s["default"] = f.default
        return s
    if isinstance(f, ListOf):
        return {"type": "array", "items": _train_node(f.item), "description": f.doc,
                "default": f.default}
    if isinstance(f, Weights):
        return {"anyOf": [{"type": "object", "additionalProperties": {"type": "number", "minimum": 0}},
                          {"type": "null"}], "description": f.doc, "default": {}}
    raise TypeError(f)  # pragma: no cover


def json_schema(registry: dict | None = None) -> dict:
    """The whole language as a JSON Schema (draft-07) dict; ``registry`` defaults to the
    layer catalogue (``netspec.layers.REGISTRY``)."""
    if registry is None:
        from . import layers  # noqa: F401  (registers the catalogue)
        from .layers.base import REGISTRY as registry
    arg_decl = {"anyOf": [{"enum": list(ARG_TYPES)}, {
        "type": "object", "required": ["type"], "additionalProperties": False,
        "properties": {"type": {"enum": list(ARG_TYPES)}, "default": {},
                       "doc": {"type": "string"}}}]}
    pattern = "^" + SPEC_NAME.pattern.replace(r"\Z", "") + "$"
    props = {
        "netspec": {"const": 1, "description": "language version (must be 1)"},
        "name": {"type": "string", "pattern": pattern, "description": "name of the net"},
        "input": {"type": "array", "items": _bounded(INT, 1, None), "minItems": 1,
                  "maxItems": 3, "not": {"minItems": 2, "maxItems": 2},
                  "description": "input shape without batch: [C, H, W] or [F]"},
        "blocks": {"type": "object", "description": "reusable parameterised sub-graphs",
                   "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
                   "additionalProperties": {
                       "type": "object", "required": ["layers"], "additionalProperties": False,
                       "properties": {"args": {"type": ["object", "null"],
                                               "additionalProperties": arg_decl},
                                      "layers": {"$ref": "#/definitions/block_layers"},
                                      "doc": {"type": "string"}}}},
        "layers": {"$ref": "#/definitions/layers"},
        "outputs": {"type": "array", "items": {"type": "string"},
                    "description": "output layer names (default: the last layer)"},
        "train": _train_node(TRAIN),
        "init": {"type": "object", "required": ["checkpoint"], "additionalProperties": False,
                 "properties": {"checkpoint": {"type": "string"},
                                "skip": {"type": "array", "items": {"type": "string"}}},
                 "description": "start from saved weights"},
    }
    assert set(props) == set(TOP_KEYS)
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "netspec spec (language version 1)",
        "type": "object",
        "required": ["netspec", "name", "input", "layers"],
        "additionalProperties": False,
        "properties": props,
        "definitions": {
            "layers": {"type": "array", "minItems": 1, "items": {"$ref": "#/definitions/layer"}},
            "block_layers": {"type": "array", "minItems": 1,
                             "items": {"$ref": "#/definitions/block_layer"}},
            "layer": _layer_defs(registry, False),
            "block_layer": _layer_defs(registry, True),
        },
    }
