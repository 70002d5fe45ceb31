"""Typed attribute values: check one located YAML value against an attribute type
(``int``, ``float``, ``bool``, ``str``, ``int2``, ``pad``, ``ints``, ``float_or_ints``,
``any``) with bounds and choices, raising a located ``SpecError`` that says what was
expected.  Shared by the loader, block arguments and the train schema."""
from __future__ import annotations

from typing import Any

from .yamlsrc import Document, YMap, YNode, YScalar, YSeq, _small, show  # noqa: F401

MAX_INT = 2 ** 62   # larger integers are rejected in integer-typed fields

_EXPECT = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "int2": "an integer or a [height, width] pair of integers",
    "pad": "an integer, [h, w], [top, bottom, left, right], 'same' or 'valid'",
    "ints": "a list of integers",
    "floats": "a list of numbers",
    "float_or_ints": "a number or a list of integers",
}


def expected(type_: str, choices: tuple = ()) -> str:
    """How a type is described in messages ('an integer', "one of 'a', 'b'")."""
    if choices:
        return "one of " + ", ".join(show(c) for c in choices)
    return _EXPECT.get(type_, type_)


def choice_hint(value: Any, choices) -> str:
    import difflib
    names = [str(c) for c in choices]
    close = difflib.get_close_matches(str(value), names, n=3, cutoff=0.6)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    return "choose one of: " + ", ".join(names)


def coerce(doc: Document, node: YNode, type_: str, what: str, *, min=None, max=None,
           choices: tuple = (), nullable: bool = False) -> Any:
    """Validate ``node`` against a value type and return the plain value.

    ``type_`` is one of netspec.layers.base.ATTR_TYPES or "floats". Pairs and lists come
    back as tuples; ints given for floats become floats. ``what`` names the field in
    messages ("conv layer 'conv1': 'kernel'"). Errors point at the offending element."""
    v = node.plain() if isinstance(node, YScalar) else None
    if isinstance(node, YScalar) and v is None:
        if nullable:
            return None
        raise doc.error(node, f"{what} must be {expected(type_, choices)}, got null",
                        "remove the key to use the default, or give a value")
    if type_ == "any":
        return node.plain()
    if type_ in ("int", "float", "bool", "str"):
        return _scalar(doc, node, type_, what, min, max, choices)
    if type_ == "pad" and isinstance(node, YScalar) and isinstance(v, str):
        if v in ("same", "valid"):
            return v
        raise doc.error(node, f"{what}: unknown padding {v!r}", choice_hint(v, ("same", "valid"))
                        + " (or an integer / list of integers)", v)
    if type_ in ("int2", "pad", "float_or_ints") and isinstance(node, YScalar):
        return _scalar(doc, node, "float" if type_ == "float_or_ints" else "int", what, min, max,
                       shown=expected(type_))
    if isinstance(node, YSeq):
        sizes = {"int2": (2,), "pad": (2, 4)}.get(type_)
        if sizes and len(node.items) not in sizes:
            raise doc.error(node, f"{what} must be {expected(type_)}, got a list of "
                            f"{len(node.items)}", f"give {' or '.join(map(str, sizes))} "
                            "integers, or a single integer", node.plain() if _small(node) else None)
        elem = "float" if type_ == "floats" else "int"
        return tuple(_scalar(doc, x, elem, what, min, max, shown=expected(type_) + " (element)")
                     for x in node.items)
    raise doc.error(node, f"{what} must be {expected(type_, choices)}, got {node.kind}"
                    + (f" {show(node)}" if isinstance(node, YScalar) else ""),
                    _type_hint(type_, node), v)


def _type_hint(type_: str, node: YNode) -> str | None:
    if isinstance(node, YScalar) and isinstance(node.value, str) and type_ in ("int", "float"):
        if any(op in node.value for op in "+-*/%") and any(c.isdigit() for c in node.value):
            return ("arithmetic works only on $arguments inside block bodies (`out: $c * 2`); "
                    "elsewhere write the number")
        return "write the number without quotes"
    if type_ in ("int2", "pad", "ints", "floats", "float_or_ints") and isinstance(node, YMap):
        return "write a list like [3, 3]"
    return None


def _scalar(doc, node, type_, what, min, max, choices=(), shown=None):
    v = node.plain() if isinstance(node, YScalar) else None
    bad = not isinstance(node, YScalar)
    if not bad:
        if type_ == "int":
            if isinstance(v, float) and v.is_integer() and abs(v) < MAX_INT:
                raise doc.error(node, f"{what} must be an integer, got {show(v)}",
                                "use // for integer division" if "/" in getattr(node, "text", "")
                                else f"write {int(v)}", v)
            bad = isinstance(v, bool) or not isinstance(v, int)
        elif type_ == "float":
            bad = isinstance(v, bool) or not isinstance(v, (int, float))
            if not bad:
                if isinstance(v, int) and abs(v) > MAX_INT:
                    raise doc.error(node, f"{what}: {show(v)} is too large", None, v)
                v = float(v)
                if v != v:
                    raise doc.error(node, f"{what} must be a number, got .nan", None, v)
                if v in (float("inf"), float("-inf")):
                    raise doc.error(node, f"{what} must be a finite number, got {node.text}",
                                    "give a finite value", v)
        elif type_ == "bool":
            bad = not isinstance(v, bool)
        elif type_ == "str":
            bad = not isinstance(v, str)
    if bad:
        hint = _type_hint(type_, node)
        if type_ == "bool" and isinstance(v, str):
            hint = "write true or false (without quotes)"
        if type_ == "str" and isinstance(node, YScalar) and v is not None and not choices:
            hint = f"quote it: '{node.text}'"
        raise doc.error(node, f"{what} must be {shown or expected(type_, choices)}, got "
                        f"{node.kind}" + (f" {show(v)}" if isinstance(node, YScalar) else ""),
                        hint, v)
    if type_ == "int" and abs(v) > MAX_INT:
        raise doc.error(node, f"{what}: integer {show(v, 30)} is too large (limit 2**62)",
                        "use a realistic size", v)
    if choices and v not in choices:
        raise doc.error(node, f"{what} must be {expected(type_, choices)}, got {show(v)}",
                        choice_hint(v, choices), v)
    if min is not None and v < min:
        raise doc.error(node, f"{what} must be >= {min}, got {show(v)}", None, v)
    if max is not None and v > max:
        raise doc.error(node, f"{what} must be <= {max}, got {show(v)}", None, v)
    return v
