"""Helpers shared by the layer families: attribute parsing (pairs, padding), the checked
window-sweep formula and the receptive-field recurrence.

Everything raises ``ShapeError`` (never a bare ValueError) so the checker can locate it.
"""
from __future__ import annotations

from typing import Any

from .base import RF, Shape, ShapeError, conv_out

AXES = ("H", "W")


def prod(shape) -> int:
    n = 1
    for v in shape:
        n *= int(v)
    return n


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def as_int(v: Any, attr: str, lo: int | None = None) -> int:
    if not is_int(v):
        raise ShapeError(f"{attr} must be an integer, got {v!r}", attr=attr)
    if lo is not None and v < lo:
        raise ShapeError(f"{attr} must be >= {lo}, got {v}", attr=attr)
    return int(v)


def as_float(v: Any, attr: str, lo: float | None = None, hi: float | None = None,
             lo_open: bool = False, hi_open: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ShapeError(f"{attr} must be a number, got {v!r}", attr=attr)
    v = float(v)
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise ShapeError(f"{attr} must be {'>' if lo_open else '>='} {lo}, got {v}", attr=attr)
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise ShapeError(f"{attr} must be {'<' if hi_open else '<='} {hi}, got {v}", attr=attr)
    return v


def pair(v: Any, attr: str, lo: int = 1) -> tuple[int, int]:
    """int or [h, w] -> (h, w), each >= lo."""
    if is_int(v):
        v = (v, v)
    if not isinstance(v, (list, tuple)) or len(v) != 2 or not all(is_int(x) for x in v):
        raise ShapeError(f"{attr} must be an integer or a [h, w] pair of integers, got {v!r}",
                         attr=attr)
    for x in v:
        if x < lo:
            raise ShapeError(f"{attr} must be >= {lo}, got {list(v)}", attr=attr)
    return int(v[0]), int(v[1])


def pad4(v: Any, kernel: tuple[int, int], stride: tuple[int, int], dil: tuple[int, int],
         hw: tuple[int, int] | None, attr: str = "pad") -> tuple[int, int, int, int]:
    """Padding -> (top, bottom, left, right).

    Accepted: int p (all sides), [ph, pw] (top=bottom=ph, left=right=pw), [t, b, l, r],
    "valid" (0), "same": the output is ceil(in / stride); the total padding
    max((out-1)*s + d*(k-1) + 1 - in, 0) is split with the smaller half first (top/left),
    which for stride 1 is exactly PyTorch's ``padding='same'`` (and TensorFlow's SAME
    for any stride).
    """
    if isinstance(v, str):
        if v == "valid":
            return (0, 0, 0, 0)
        if v == "same":
            if hw is None:
                raise ShapeError("pad 'same' needs a spatial input", attr=attr)
            out = []
            for n, k, s, d in zip(hw, kernel, stride, dil):
                o = -(-n // s)
                tot = max((o - 1) * s + d * (k - 1) + 1 - n, 0)
                out += [tot // 2, tot - tot // 2]
            return tuple(out)  # type: ignore[return-value]
        raise ShapeError(f"pad must be an integer, [h, w], [t, b, l, r], 'same' or 'valid', "
                         f"got {v!r}", attr=attr)
    if is_int(v):
        v = [v]
    if not isinstance(v, (list, tuple)) or len(v) not in (1, 2, 4) \
            or not all(is_int(x) for x in v):
        raise ShapeError(f"pad must be an integer, [h, w], [t, b, l, r], 'same' or 'valid', "
                         f"got {v!r}", attr=attr)
    if any(x < 0 for x in v):
        raise ShapeError(f"pad must be >= 0, got {list(v)}", attr=attr)
    if len(v) == 1:
        return (v[0],) * 4  # type: ignore[return-value]
    if len(v) == 2:
        return (v[0], v[0], v[1], v[1])
    return tuple(int(x) for x in v)  # type: ignore[return-value]


def need_image(in_shape: Shape, what: str) -> tuple[int, int, int]:
    if len(in_shape) != 3:
        raise ShapeError(f"{what} needs a (C, H, W) input, got {tuple(in_shape)}",
                         hint="flatten/linear produce vectors; image layers must come before them")
    c, h, w = in_shape
    return int(c), int(h), int(w)


def window_out(n: int, k: int, s: int, p0: int, p1: int, d: int = 1, ceil: bool = False,
               axis: str = "H") -> int:
    """Checked output length of a window sweep along one axis (PyTorch's formula)."""
    keff = d * (k - 1) + 1
    q0, q1 = ("pt", "pb") if axis == "H" else ("pl", "pr")
    dk = f"dil*(k-1)" if d != 1 else "(k-1)"
    if keff > n + p0 + p1 and not ceil:    # ceil_mode: a window may overhang (PyTorch allows it)
        kk = f"kernel {k}" if d == 1 else f"dilated kernel {d}*({k}-1)+1 = {keff}"
        raise ShapeError(
            f"{kk} > padded input {n}+{p0}+{p1} along {axis}",
            formula=f"{axis} + {q0} + {q1} >= {dk} + 1: {n} + {p0} + {p1} < {keff}",
            hint="use a smaller kernel, more padding, or remove a downsampling layer earlier",
            attr="kernel")
    out = conv_out(n, k, s, p0, p1, d, ceil)
    if out <= 0:
        rnd = "ceil" if ceil else "floor"
        raise ShapeError(
            f"output {axis} would be {out}",
            formula=f"{rnd}(({axis} + {q0} + {q1} - {dk} - 1)/stride) + 1 = "
                    f"{rnd}(({n} + {p0} + {p1} - {keff - 1} - 1)/{s}) + 1 = {out}")
    return out


# ---------------------------------------------------------------- receptive fields

def rf_window(rf: RF, k: tuple[int, int], s: tuple[float, float], p: tuple[float, float],
              d: tuple[int, int] = (1, 1)) -> RF:
    """Araujo et al. recurrence for one window layer; ``p`` is the top/left padding."""
    size, jump, start = [], [], []
    for ax in range(2):
        keff = d[ax] * (k[ax] - 1) + 1
        j = rf.jump[ax]
        size.append(rf.size[ax] + (keff - 1) * j)
        jump.append(j * s[ax])
        start.append(rf.start[ax] + ((keff - 1) / 2 - p[ax]) * j)
    return RF(tuple(size), tuple(jump), tuple(start))  # type: ignore[arg-type]


def rf_whole(rf: RF, in_shape: Shape) -> RF:
    """A layer whose every output sees the whole input (global pooling, linear, flatten):
    a window as large as the input with no padding."""
    if len(in_shape) == 3:
        _, h, w = in_shape
        return rf_window(rf, (int(h), int(w)), (int(h), int(w)), (0, 0))
    return rf  # a vector input: its RF already covers what it covers


def rf_merge(rfs: list[RF]) -> RF:
    """Merges (add, concat): the largest receptive field over the paths, per axis."""
    size = tuple(max(r.size[a] for r in rfs) for a in range(2))
    best = [max(rfs, key=lambda r: r.size[a]) for a in range(2)]
    return RF(size, (best[0].jump[0], best[1].jump[1]),  # type: ignore[arg-type]
              (best[0].start[0], best[1].start[1]))


def fmt_shape(s: Shape) -> str:
    """(C, H, W) -> "(C, H, W)"; (F,) -> "(F,)"."""
    return str(tuple(int(x) for x in s))


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)
