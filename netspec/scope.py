"""Scopes and name resolution of the spec expander (netspec/loader.py's ``_Expander``
inherits ``Resolver``): ``$arg`` substitution and argument arithmetic, layer naming,
duplicate-name checks and ``from:`` resolution (names, ``input``, negative indices).

A ``Scope`` is the net, a block instance or a sequential; names resolve in the current
scope first, then outwards.  The methods rely on the expander's ``err`` (located errors)
and ``defined`` (full name -> location of its definition).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from . import argexpr
from .blocks import IDENT
from .errors import FOREIGN_ATTRS, Loc, did_you_mean
from .spec import INPUT
from .values import coerce
from .yamlsrc import YMap, YNode, YScalar, YSeq, show

INDEX = re.compile(r"(0|[1-9][0-9]{0,8})\Z")
ARGREF = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)\Z")


@dataclass
class Scope:
    """Naming and ``from:`` resolution context: the net, a block instance or a sequential."""
    prefix: str                   # "" at the top, "layer1.0." in a block instance
    input: str                    # what `from: input` means here
    outs: list[str]               # [scope input, output of entry 1, ...] for relative indices
    parent: "Scope | None" = None
    by_index: bool = False        # sequential: unnamed children are named by their index
    env: dict[str, YNode] | None = None   # block arguments (None outside blocks)
    block: str | None = None
    trace: tuple[Loc, ...] = ()
    freeze: bool = False
    lr_mult: float = 1.0
    local: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


class Resolver:
    """Mixin of the expander: substitution, naming and reference resolution."""

    def _subst(self, node: YNode, scope: Scope) -> YNode:
        """Replace `$arg` scalars (anywhere inside node) with the block's argument values."""
        if isinstance(node, YScalar):
            v = node.value
            if isinstance(v, str) and "$" in v and not ARGREF.match(v):
                return self._expr(node, v, scope)
            if isinstance(v, str) and v.startswith("$"):
                m = ARGREF.match(v)
                if scope.env is None:
                    raise self.err(node, f"argument reference {v!r} outside a block",
                                   "`$name` can only be used in the layers of a block", v)
                if m.group(1) not in scope.env:
                    raise self.err(node, f"block {scope.block!r} has no argument "
                                   f"{m.group(1)!r}", did_you_mean(m.group(1), scope.env)
                                   or f"declare it under `blocks: {scope.block}: args:`",
                                   v, scope)
                return scope.env[m.group(1)]
            return node
        if isinstance(node, YSeq):
            return YSeq(node.loc, [self._subst(x, scope) for x in node.items])
        if isinstance(node, YMap):
            return YMap(node.loc, {k: self._subst(x, scope) for k, x in node.items.items()},
                        node.key_locs)
        return node

    def _expr(self, node: YScalar, v: str, scope: Scope) -> YScalar:
        """An arithmetic expression on block arguments (netspec/argexpr.py) -> its number."""
        if scope.env is None:
            raise self.err(node, f"argument expression {v!r} outside a block",
                           "`$name` can only be used in the layers of a block", v)
        lists = [k for k in argexpr.refs(v) if isinstance(scope.env.get(k), YSeq)]
        if lists:
            k = lists[0]
            raise self.err(node, f"invalid argument expression {v!r}: ${k} is a list "
                           f"{list(x.value for x in scope.env[k].items)}, not a number",
                           "arithmetic works on int / float arguments; give the list argument "
                           "itself (`kernel: $k`) or add a number argument", v, scope)
        try:
            val = argexpr.evaluate(v, {k: getattr(x, "value", None) for k, x in scope.env.items()})
        except argexpr.ExprError as e:
            raise self.err(node, f"invalid argument expression {v!r}: {e}",
                           "use $name, numbers, + - * / // % and parentheses, e.g. "
                           "`out: $growth * 4`", v, scope) from None
        return YScalar(node.loc, value=val, text=v)

    def _attrs(self, body: YMap, scope: Scope, skip=()) -> dict[str, YNode]:
        return {k: (v if k in skip else self._subst(v, scope)) for k, v in body.items.items()}

    def _check_keys(self, body: YMap, allowed, what: str, scope: Scope, extra_hint=None):
        for k in body.items:
            if k not in allowed:
                hint = FOREIGN_ATTRS.get(k) or did_you_mean(k, allowed)
                if extra_hint and k in extra_hint:
                    hint = extra_hint[k]
                raise self.err(body.key_loc(k), f"unknown attribute {k!r} for {what}",
                               hint, k, scope)

    def _name(self, a: dict[str, YNode], type_: str, scope: Scope, index: int) -> str:
        """Local name of an entry (explicit, index in a sequential, or <type><k>)."""
        scope.counts[type_] = scope.counts.get(type_, 0) + 1
        if "name" in a:
            name = coerce(self.doc, a["name"], "str", "`name`")
            for part in name.split("."):
                if not (IDENT.match(part) or INDEX.match(part)):
                    raise self.err(a["name"], f"invalid layer name {name!r}",
                                   "names are dotted identifiers like `conv1` or "
                                   "`layer3.1.conv2`: each part [A-Za-z_][A-Za-z0-9_]* or a "
                                   "non-negative integer", name, scope)
            if name == INPUT:
                raise self.err(a["name"], "`input` is reserved and cannot name a layer",
                               "choose another name", name, scope)
            return name
        if scope.by_index:
            return str(index)
        return f"{type_}{scope.counts[type_]}"

    def _claim(self, full: str, what: str, loc: Loc, scope: Scope, node=None) -> None:
        """Refuse a block-instance / sequential name already taken, at the instance (not at
        the first layer inside it that would collide)."""
        if full in self.defined:
            raise self.err(node if node is not None else loc, f"duplicate name {full!r}",
                           f"{full!r} is already defined at {self.defined[full]}; give this "
                           f"{what} another `name`", full, scope)

    def _define(self, full: str, producer: str, loc: Loc, scope: Scope, node=None) -> None:
        if full in self.defined:
            first = self.defined[full]
            raise self.err(node if node is not None else loc, f"duplicate layer name {full!r}",
                           f"{full!r} is already defined at {first}; give this layer "
                           "another `name`", full, scope)
        self.defined[full] = loc
        s = scope
        while s is not None:
            s.local[full[len(s.prefix):]] = producer
            s = s.parent

    def _lookup(self, ref: str, scope: Scope) -> str | None:
        if ref == INPUT:
            return scope.input
        s = scope
        while s is not None:
            if ref in s.local:
                return s.local[ref]
            s = s.parent
        return None

    def _inputs(self, node: YNode | None, scope: Scope) -> list[str]:
        if node is None:
            return [scope.outs[-1]]
        items = node.items if isinstance(node, YSeq) else [node]
        if not items:
            raise self.err(node, "`from` is an empty list", "name at least one input",
                           scope=scope)
        out = []
        for it in items:
            v = it.value if isinstance(it, YScalar) else None
            if isinstance(v, int) and not isinstance(v, bool):
                if v >= 0:
                    raise self.err(it, f"`from: {v}`: relative indices are negative",
                                   "-1 is the previous layer, -2 the one before; or name a "
                                   "layer", v, scope)
                if -v > len(scope.outs):
                    raise self.err(it, f"`from: {v}` reaches before the start of "
                                   + ("the net" if scope.parent is None else
                                      "the sequential" if scope.by_index else "the block")
                                   + f" (only {len(scope.outs) - 1} earlier entries)",
                                   "use `input` for the input, or a layer name", v, scope)
                out.append(scope.outs[v])
            elif isinstance(v, str):
                prod = self._lookup(v, scope)
                if prod is None:
                    cands, s = {INPUT}, scope
                    while s is not None:               # every enclosing block's names
                        cands |= set(s.local)
                        s = s.parent
                    here = sorted(scope.local)
                    listed = (f"; the earlier names here: {', '.join(here)}" if 0 < len(here) <= 12 else "")
                    raise self.err(it, f"`from` names unknown layer {v!r}",
                                   _name_hint(v, cands, "`from` can only name earlier layers, "
                                              "`input`, or a negative index (-1: previous)" + listed),
                                   v, scope)
                out.append(prod)
            else:
                raise self.err(it, f"`from` entries are layer names or negative indices, got "
                               f"{it.kind}" + (f" {show(v)}" if isinstance(it, YScalar) else ""),
                               "e.g. `from: [-1, conv1]`", v, scope)
        return out


def _name_hint(ref: str, names, otherwise: str) -> str:
    """'did you mean' over layer names (dotted names also matched by their last part)."""
    import difflib
    names = sorted(set(names))
    close = difflib.get_close_matches(ref, names, n=3, cutoff=0.6)
    if not close:
        tail = ref.rsplit(".", 1)[-1]
        close = [n for n in names if n.rsplit(".", 1)[-1] == tail][:3]
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    return otherwise
