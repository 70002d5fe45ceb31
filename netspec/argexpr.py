"""Arithmetic on block arguments: ``out: $growth * 4``, ``pad: $k // 2``,
``out: ($a + $b) * 2`` (DenseNet's bottleneck width, "same" padding of a kernel argument).

A block-body value that is a string containing ``$name`` and otherwise only numbers,
``+ - * / // %``, unary minus and parentheses is an expression.  It is parsed by the small
recursive-descent parser below and evaluated on the argument values -- never with
``eval`` -- and replaced by its number before the layer is checked (so the usual type and
range checks apply to the result).  ``/`` gives a float; use ``//`` for integers.
"""
from __future__ import annotations

import re

MAX_LEN = 200          # an expression longer than this is refused (no pathological input)
_TOKEN = re.compile(r"\s*(?:(\$[A-Za-z_][A-Za-z0-9_]*)|(\d+\.\d*(?:[eE][-+]?\d+)?|\.\d+|\d+(?:[eE][-+]?\d+)?)"
                    r"|(//|[-+*/%()]))")
REF = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


class ExprError(ValueError):
    """A malformed expression or one that cannot be evaluated (message says why)."""


def refs(text: str) -> list[str]:
    """The argument names an expression (or a plain `$name`) mentions."""
    return REF.findall(text)


def _tokens(text: str) -> list[tuple[str, str]]:
    if len(text) > MAX_LEN:
        raise ExprError(f"expression longer than {MAX_LEN} characters")
    out, i = [], 0
    text = text.rstrip()
    while i < len(text):
        m = _TOKEN.match(text, i)
        if not m or m.end() == i:
            raise ExprError(f"unexpected {text[i:].strip()[:10]!r}")
        ref, num, op = m.groups()
        out.append(("ref", ref[1:]) if ref else ("num", num) if num else ("op", op))
        i = m.end()
    return out


def evaluate(text: str, env: dict) -> int | float:
    """The value of ``text`` with ``$name`` bound to ``env[name]`` (ints or floats)."""
    toks = _tokens(text)
    pos = [0]

    def peek():
        return toks[pos[0]] if pos[0] < len(toks) else ("end", "")

    def take():
        t = peek()
        pos[0] += 1
        return t

    def atom():
        kind, v = take()
        if kind == "num":
            return float(v) if any(c in v for c in ".eE") else int(v)
        if kind == "ref":
            if v not in env:
                raise ExprError(f"unknown argument ${v}")
            x = env[v]
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                raise ExprError(f"${v} is {x!r}, not a number")
            return x
        if (kind, v) == ("op", "("):
            x = expr()
            if take() != ("op", ")"):
                raise ExprError("missing ')'")
            return x
        raise ExprError(f"expected a number, $name or '(' but found {v or 'the end'!r}")

    def unary():
        if peek() == ("op", "-"):
            take()
            return -unary()
        if peek() == ("op", "+"):
            take()
            return unary()
        return atom()

    def term():
        x = unary()
        while peek()[0] == "op" and peek()[1] in ("*", "/", "//", "%"):
            op = take()[1]
            y = unary()
            if op != "*" and y == 0:
                raise ExprError("division by zero")
            x = x * y if op == "*" else x / y if op == "/" else x // y if op == "//" else x % y
        return x

    def expr():
        x = term()
        while peek()[0] == "op" and peek()[1] in ("+", "-"):
            op = take()[1]
            y = term()
            x = x + y if op == "+" else x - y
        return x

    x = expr()
    if pos[0] != len(toks):
        raise ExprError(f"unexpected {peek()[1]!r}")
    if isinstance(x, float) and not (abs(x) < 1e300):
        raise ExprError("result is not a finite number")
    return x
