"""Block definitions (the ``blocks:`` section): parsing and checking of names, argument
declarations and defaults. Expansion of block instances lives in netspec/loader.py.

``parse_blocks(doc, node, reserved) -> {name: BlockDef}``. Arguments are declared as
``name: TYPE`` or ``name: {type: TYPE, default: VALUE, doc: TEXT}`` with TYPE one of
int, float, bool, str, ints, floats (a list such as ``kernel: [1, 7]``, or one number);
defaults are type-checked here, at their definition.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from . import argexpr
from .errors import Loc, did_you_mean, layer_type_hint
from .values import choice_hint, coerce
from .yamlsrc import Document, YMap, YNode, YScalar, YSeq, show

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
ARG_TYPES = ("int", "float", "bool", "str", "ints", "floats")   # ints/floats: a list (or one number)
INSTANCE_KEYS = ("name", "from", "repeat", "first", "freeze", "lr_mult")


@dataclass
class BlockArg:
    name: str
    type: str               # int | float | bool | str
    default: YNode | None   # None: required
    loc: Loc


@dataclass
class BlockDef:
    name: str
    args: dict[str, BlockArg]
    layers: YSeq
    loc: Loc


def _is_null(node) -> bool:
    return node is None or (isinstance(node, YScalar) and node.value is None)


def _keys(doc: Document, node: YNode, what: str, keys) -> YMap:
    if not isinstance(node, YMap):
        raise doc.error(node, f"{what} must be a mapping, got {node.kind} {show(node)}",
                        "write `{key: value, ...}`")
    for k in node.items:
        if k not in keys:
            raise doc.error(node.key_loc(k), f"unknown key {k!r} in {what}",
                            did_you_mean(k, keys), k)
    return node


def coerce_arg(doc: Document, node: YNode, t: str, what: str):
    """An argument value of type t (ints / floats also take one number) -> plain value."""
    if t in ("ints", "floats") and isinstance(node, YScalar):
        return coerce(doc, node, t[:-1], what)
    return coerce(doc, node, t, what)


def parse_blocks(doc: Document, node: YNode, reserved) -> dict[str, BlockDef]:
    """``reserved``: names a block cannot take (layer types, ``sequential``, ``input``)."""
    if not isinstance(node, YMap):
        raise doc.error(node, f"`blocks` must be a mapping of block names to definitions, "
                        f"got {node.kind}", "see docs/spec-language.md, section blocks")
    out = {}
    for bname, bnode in node.items.items():
        kloc = node.key_loc(bname)
        if not IDENT.match(bname):
            raise doc.error(kloc, f"invalid block name {bname!r}",
                            "block names are identifiers: [A-Za-z_][A-Za-z0-9_]*", bname)
        if bname in reserved:
            raise doc.error(kloc, f"block name {bname!r} is already a layer type",
                            "choose another name", bname)
        b = _keys(doc, bnode, f"block {bname!r}", ("args", "layers", "doc"))
        if "layers" not in b.items:
            raise doc.error(kloc, f"block {bname!r} has no `layers`",
                            "add `layers:` with the block's layers")
        lay = b.items["layers"]
        if not isinstance(lay, YSeq) or not lay.items:
            raise doc.error(lay, f"`layers` of block {bname!r} must be a non-empty list",
                            "e.g. `layers: [{conv: {out: $channels, kernel: 3}}, {relu: {}}]`")
        args = {}
        an = b.items.get("args")
        if not _is_null(an):
            if not isinstance(an, YMap):
                raise doc.error(an, f"`args` of block {bname!r} must be a mapping like "
                                "`{channels: int, stride: {type: int, default: 1}}`")
            for aname, anode in an.items.items():
                args[aname] = _arg(doc, bname, aname, an.key_loc(aname), anode)
        out[bname] = BlockDef(bname, args, lay, kloc)
    return out


def _arg(doc: Document, bname: str, aname: str, kloc: Loc, node: YNode) -> BlockArg:
    if not IDENT.match(aname) or aname in INSTANCE_KEYS:
        raise doc.error(kloc, f"invalid argument name {aname!r} in block {bname!r}",
                        "argument names are identifiers other than "
                        + ", ".join(INSTANCE_KEYS), aname)
    default = None
    if isinstance(node, YMap):
        m = _keys(doc, node, f"argument {aname!r}", ("type", "default", "doc"))
        if "type" not in m.items:
            raise doc.error(node, f"argument {aname!r} needs a `type`",
                            "e.g. `{type: int, default: 1}`")
        tnode, default = m.items["type"], m.items.get("default")
    else:
        tnode = node
    t = tnode.value if isinstance(tnode, YScalar) else None
    if t not in ARG_TYPES:
        raise doc.error(tnode, f"argument {aname!r} of block {bname!r}: unknown type "
                        f"{show(tnode)}", choice_hint(t, ARG_TYPES), t)
    if default is not None:
        if _is_null(default):  # null is not a value of int/float/bool/str
            raise doc.error(default, f"argument {aname!r}: default cannot be null",
                            "remove `default` to make the argument required")
        coerce_arg(doc, default, t, f"default of argument {aname!r}")
    return BlockArg(aname, t, default, kloc)


def check_bodies(doc: Document, blocks: dict[str, BlockDef], types) -> None:
    """Static checks of every block body, used or not: layer types exist and every
    ``$name`` is a declared argument (instances are checked fully when expanded)."""
    known = set(types) | set(blocks) | {"sequential"}
    for bd in blocks.values():
        _check_list(doc, bd, bd.layers, known)


def _check_list(doc: Document, bd: BlockDef, seq: YSeq, known: set) -> None:
    for entry in seq.items:
        if not isinstance(entry, YMap) or len(entry.items) != 1:
            continue   # reported with full context when the block is expanded
        (t, body), = entry.items.items()
        if isinstance(t, str) and t.startswith("$"):
            # a layer type chosen by a str argument (`- $act: {}`): checked on expansion
            a = bd.args.get(t[1:])
            if a is None or a.type != "str":
                raise doc.error(entry.key_loc(t), f"layer type {t!r} in block {bd.name!r} is not "
                                f"one of its str arguments",
                                f"declare it: `args: {{{t[1:]}: str}}`", t)
            _check_refs(doc, bd, body)
            continue
        if t not in known:
            raise doc.error(entry.key_loc(t), f"unknown layer type {t!r} in block {bd.name!r}",
                            layer_type_hint(t, known), t)
        if t == "sequential" and isinstance(body, YMap) and isinstance(
                body.items.get("layers"), YSeq):
            _check_list(doc, bd, body.items["layers"], known)
            body = YMap(body.loc, {k: v for k, v in body.items.items() if k != "layers"})
        _check_refs(doc, bd, body)


def _check_refs(doc: Document, bd: BlockDef, node: YNode) -> None:
    stack = [node]
    while stack:
        x = stack.pop()
        if isinstance(x, YMap):
            stack.extend(x.items.values())
        elif isinstance(x, YSeq):
            stack.extend(x.items)
        elif isinstance(x, YScalar) and isinstance(x.value, str) and "$" in x.value:
            for name in argexpr.refs(x.value):      # `$name` or an expression on arguments
                if name not in bd.args:
                    raise doc.error(x, f"block {bd.name!r} has no argument {name!r}",
                                    did_you_mean(name, bd.args)
                                    or f"declare it under `blocks: {bd.name}: args:`", x.value)
