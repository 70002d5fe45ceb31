"""Pooling family: maxpool, avgpool (PyTorch MaxPool2d / AvgPool2d), global_avgpool,
global_maxpool (AdaptiveAvg/MaxPool2d(1): output (C, 1, 1)), fractional_maxpool
(Graham 2014, torch FractionalMaxPool2d) and maxout (Goodfellow et al. 2013).
No pooling layer counts MACs (see conv.py for the convention)."""
from __future__ import annotations

from .base import Attr, LayerDef, ShapeError, register
from ._common import (as_float, is_int, need_image, pad4, pair, rf_whole, rf_window,
                      window_out)

_POOL_DOC_STRIDE = "stride: an int or [sh, sw]; default (null) = the kernel size"


def _stride(a):
    s = a.get("stride")
    return pair(a["kernel"] if s is None else s, "kernel" if s is None else "stride")


def _pool_pad(a, k, s, d, hw):
    pad = pad4(a.get("pad", 0), k, s, d, hw)
    for (p0, p1), kk, ax in (((pad[0], pad[1]), k[0], "H"), ((pad[2], pad[3]), k[1], "W")):
        if max(p0, p1) > kk // 2:
            raise ShapeError(f"pad {max(p0, p1)} along {ax} must be at most half the kernel "
                             f"{kk} (PyTorch rule)",
                             formula=f"pad <= kernel // 2: {max(p0, p1)} > {kk // 2}",
                             hint=f"use pad <= {kk // 2} along {ax}, or a kernel of at least "
                                  f"{2 * max(p0, p1)}", attr="pad")
    return pad


def _windows_see_input(n, out, k, s, p0, d, ax):
    """Every window must cover at least one input position: with dilation a window can fall
    wholly into the padding (or straddle a small input), where max pooling gives -inf and
    PyTorch's own backward has crashed the process (torch 2.13, max_pool2d on a 1x1 map with
    kernel 2, stride 3, pad 1, dilation 2, ceil_mode)."""
    for o in range(out):
        start = o * s - p0
        if not any(0 <= start + i * d < n for i in range(k)):
            taps = [start + i * d for i in range(k)]
            raise ShapeError(f"window {o} along {ax} reads positions {taps} of an input of size {n}: "
                             f"none is inside the input (only padding)",
                             formula=f"0 <= {o}*{s} - {p0} + i*{d} < {n} for some i < {k}",
                             hint="lower pad or dilation, or turn ceil_mode off", attr="pad")


class _WindowPool(LayerDef):
    family = "pool"
    differentiable = True

    def _out(self, a, in_shapes):
        c, h, w = need_image(in_shapes[0], self.type)
        (kh, kw), (sh, sw), (dh, dw) = a["kernel"], a["stride"], a.get("dilation", (1, 1))
        t, b, l, r = a["pad"]
        ceil = a["ceil_mode"]
        oh, ow = window_out(h, kh, sh, t, b, dh, ceil, "H"), window_out(w, kw, sw, l, r, dw, ceil, "W")
        _windows_see_input(h, oh, kh, sh, t, dh, "H")
        _windows_see_input(w, ow, kw, sw, l, dw, "W")
        return (c, oh, ow)

    def output_shape(self, a, in_shapes):
        return self._out(a, in_shapes)

    def receptive_field(self, a, in_shapes, rfs):
        return rf_window(rfs[0], a["kernel"], a["stride"], (a["pad"][0], a["pad"][2]),
                         a.get("dilation", (1, 1)))


@register
class MaxPool(_WindowPool):
    type = "maxpool"
    aliases = ("max_pool", "maxpool2d")
    doc = ("Max pooling, nn.MaxPool2d semantics: padding is -inf, ceil_mode lets a last "
           "partial window start inside the input or the left padding.")
    attrs = {
        "kernel": Attr("int2", doc="window size: an int or [kh, kw]", min=1),
        "stride": Attr("int2", None, doc=_POOL_DOC_STRIDE, min=1),
        "pad": Attr("pad", 0, doc="implicit -inf padding (at most kernel//2 per side; every "
                                  "window, dilated too, must cover an input pixel)"),
        "dilation": Attr("int2", 1, doc="window dilation", min=1),
        "ceil_mode": Attr("bool", False, doc="round the output size up instead of down"),
    }

    def normalize(self, a, in_shapes):
        _, h, w = need_image(in_shapes[0], "maxpool")
        k, s = pair(a["kernel"], "kernel"), _stride(a)
        d = pair(a.get("dilation", 1), "dilation")
        return {"kernel": k, "stride": s, "pad": _pool_pad(a, k, s, d, (h, w)),
                "dilation": d, "ceil_mode": bool(a.get("ceil_mode", False))}


@register
class AvgPool(_WindowPool):
    type = "avgpool"
    aliases = ("avg_pool", "avgpool2d")
    doc = ("Average pooling, nn.AvgPool2d semantics (count_include_pad: zero padding is "
           "counted in the divisor; windows never count positions beyond the right padding).")
    attrs = {
        "kernel": Attr("int2", doc="window size: an int or [kh, kw]", min=1),
        "stride": Attr("int2", None, doc=_POOL_DOC_STRIDE, min=1),
        "pad": Attr("pad", 0, doc="implicit zero padding (at most kernel//2 per side)"),
        "ceil_mode": Attr("bool", False, doc="round the output size up instead of down"),
        "count_include_pad": Attr("bool", True, doc="include zero padding in the average"),
    }

    def normalize(self, a, in_shapes):
        _, h, w = need_image(in_shapes[0], "avgpool")
        k, s = pair(a["kernel"], "kernel"), _stride(a)
        return {"kernel": k, "stride": s, "pad": _pool_pad(a, k, s, (1, 1), (h, w)),
                "ceil_mode": bool(a.get("ceil_mode", False)),
                "count_include_pad": bool(a.get("count_include_pad", True))}


class _GlobalPool(LayerDef):
    family = "pool"
    attrs: dict = {}

    def output_shape(self, a, in_shapes):
        c, _, _ = need_image(in_shapes[0], self.type)
        return (c, 1, 1)

    def receptive_field(self, a, in_shapes, rfs):
        return rf_whole(rfs[0], in_shapes[0])


@register
class GlobalAvgPool(_GlobalPool):
    type = "global_avgpool"
    aliases = ("global_avg_pool", "gap")
    doc = "Mean over all spatial positions: (C, H, W) -> (C, 1, 1) (AdaptiveAvgPool2d(1))."


@register
class GlobalMaxPool(_GlobalPool):
    type = "global_maxpool"
    aliases = ("global_max_pool",)
    doc = "Max over all spatial positions: (C, H, W) -> (C, 1, 1) (AdaptiveMaxPool2d(1))."


@register
class AdaptiveAvgPool(LayerDef):
    type = "adaptive_avgpool"
    aliases = ("adaptive_avg_pool", "adaptiveavgpool2d")
    family = "pool"
    doc = ("Adaptive average pooling to a fixed output size (nn.AdaptiveAvgPool2d): output "
           "cell i averages input rows floor(i*H/oh) .. ceil((i+1)*H/oh)-1 (likewise columns), "
           "so any input size maps to `size` (torchvision's VGG/AlexNet heads use [7, 7] / "
           "[6, 6]). Receptive field: nominal (the largest window, stride H/oh).")
    attrs = {"size": Attr("int2", doc="output [h, w] (or one int for both)", min=1)}

    def normalize(self, a, in_shapes):
        need_image(in_shapes[0], "adaptive_avgpool")
        return {"size": pair(a["size"], "size")}

    def output_shape(self, a, in_shapes):
        c, _, _ = need_image(in_shapes[0], "adaptive_avgpool")
        return (c,) + tuple(a["size"])

    def receptive_field(self, a, in_shapes, rfs):
        _, h, w = in_shapes[0]
        oh, ow = a["size"]
        # the largest window; beyond 4096 outputs (refused later by the size guards) an
        # upper bound keeps this O(1) for hostile sizes
        k = tuple(max(-(-((i + 1) * n) // o) - (i * n) // o for i in range(o)) if o <= 4096
                  else -(-n // o) + 1 for n, o in ((h, oh), (w, ow)))
        return rf_window(rfs[0], k, (h / oh, w / ow), (0, 0))


@register
class FractionalMaxPool(LayerDef):
    type = "fractional_maxpool"
    aliases = ("fractional_max_pool",)
    family = "pool"
    doc = ("Fractional max pooling (Graham 2014), torch nn.FractionalMaxPool2d semantics: "
           "pseudo-random overlapping kernel x kernel windows, output size given directly or "
           "as int(input * ratio) with 0 < ratio < 1; output + kernel - 1 <= input. "
           "Receptive field: nominal (kernel, stride = input/output, no padding) -- the "
           "random window placement can shift it by up to one stride.")
    attrs = {
        "kernel": Attr("int2", 2, doc="window size", min=1),
        "output_size": Attr("int2", None, doc="output [h, w] (or int); exclusive with "
                                              "output_ratio", min=1),
        "output_ratio": Attr("any", None, doc="output/input size ratio in (0, 1): a number "
                                              "or [rh, rw]; exclusive with output_size"),
    }

    def normalize(self, a, in_shapes):
        _, h, w = need_image(in_shapes[0], "fractional_maxpool")
        k = pair(a.get("kernel", 2), "kernel")
        osz, ratio = a.get("output_size"), a.get("output_ratio")
        if (osz is None) == (ratio is None):
            raise ShapeError("fractional_maxpool needs exactly one of output_size and "
                             "output_ratio", attr="output_size")
        if osz is not None:
            out = pair(osz, "output_size")
            r = None
        else:
            rr = ratio if isinstance(ratio, (list, tuple)) else [ratio, ratio]
            if len(rr) != 2:
                raise ShapeError(f"output_ratio must be a number or [rh, rw], got {ratio!r}",
                                 attr="output_ratio")
            r = tuple(as_float(x, "output_ratio", 0, 1, lo_open=True, hi_open=True) for x in rr)
            out = (int(h * r[0]), int(w * r[1]))
        return {"kernel": k, "output_size": out, "output_ratio": r}

    def output_shape(self, a, in_shapes):
        c, h, w = need_image(in_shapes[0], "fractional_maxpool")
        for ax, n, o, k in zip("HW", (h, w), a["output_size"], a["kernel"]):
            if o <= 0:
                raise ShapeError(f"output {ax} would be {o}",
                                 formula=f"int({ax} * ratio) = {o}", attr="output_ratio")
            if o + k - 1 > n:
                raise ShapeError(
                    f"output {o} + kernel {k} - 1 > input {n} along {ax}",
                    formula=f"out + k - 1 <= {ax}: {o} + {k} - 1 > {n}", attr="output_size")
        return (c,) + tuple(a["output_size"])

    def receptive_field(self, a, in_shapes, rfs):
        _, h, w = in_shapes[0]
        oh, ow = a["output_size"]
        return rf_window(rfs[0], a["kernel"], (h / oh, w / ow), (0, 0))


@register
class Maxout(LayerDef):
    type = "maxout"
    family = "pool"
    doc = ("Maxout (Goodfellow et al. 2013): the max over groups of `k` consecutive channels "
           "(channel c_out takes channels c_out*k ... c_out*k+k-1, i.e. "
           "x.view(N, C//k, k, ...).max(2)). Put it after a conv/linear with out = units*k.")
    attrs = {"k": Attr("int", 2, doc="pieces per unit (channels per group)", min=1)}

    def normalize(self, a, in_shapes):
        k = a.get("k", 2)
        if not is_int(k) or k < 1:
            raise ShapeError(f"k must be a positive integer, got {k!r}", attr="k")
        return {"k": int(k)}

    def output_shape(self, a, in_shapes):
        s = tuple(in_shapes[0])
        if len(s) not in (1, 3):
            raise ShapeError(f"maxout needs a (C, H, W) or (F,) input, got {s}")
        c, k = s[0], a["k"]
        if c % k:
            raise ShapeError(f"maxout k={k} does not divide {c} channels",
                             formula=f"C % k = {c} % {k} = {c % k} != 0", attr="k")
        return (c // k,) + s[1:]


__all__ = ["MaxPool", "AvgPool", "GlobalAvgPool", "GlobalMaxPool", "FractionalMaxPool",
           "Maxout"]
