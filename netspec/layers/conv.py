"""Convolution family: conv (nn.Conv2d), conv_transpose (nn.ConvTranspose2d),
locally_connected (unshared weights).

MAC convention (all families): only multiply-accumulates of conv/linear-like layers are
counted, bias additions are not (fvcore / ptflops convention, which reproduces
torchvision's published GFLOPS figures, e.g. resnet18 1.814G).
"""
from __future__ import annotations

from .initattrs import INIT_ATTRS
from .base import RF, Attr, LayerDef, ParamSpec, ShapeError, register
from ._common import ceil_div, need_image, pad4, pair, prod, rf_window, window_out

_KERNEL = Attr("int2", doc="kernel size: an int or [kh, kw]", min=1)
_STRIDE = Attr("int2", 1, doc="stride: an int or [sh, sw]", min=1)
_PAD = Attr("pad", 0, doc="zero padding: int, [ph, pw], [top, bottom, left, right], "
                          "'same' (output = ceil(input/stride)) or 'valid' (0)")
_DIL = Attr("int2", 1, doc="dilation: an int or [dh, dw]", min=1)
_BIAS = Attr("bool", True, doc="learn an additive bias per output channel")


def weight_params(prefix_shape: tuple, fan_in: int, weight_norm: bool, bias: bool,
                  bias_shape: tuple) -> list[ParamSpec]:
    """weight (+ bias), or with weight_norm the torch.nn.utils.weight_norm(dim=0) pair.

    Order follows the PyTorch state_dict: weight, bias -- or bias, weight_g, weight_v
    (weight_norm removes ``weight`` and registers g and v after the bias).
    ``weight_g`` (out, 1, ...) is initialised to the norm of the initial ``weight_v``
    (init string ``norm_of:weight_v``), so the initial function equals the unnormalised one.
    """
    out: list[ParamSpec] = []
    b = [ParamSpec("bias", bias_shape, init="uniform_fan_in", decay=False, fan_in=fan_in)] \
        if bias else []
    if weight_norm:
        g_shape = (prefix_shape[0],) + (1,) * (len(prefix_shape) - 1)
        out += b
        out.append(ParamSpec("weight_g", g_shape, init="norm_of:weight_v", decay=False,
                             fan_in=fan_in))
        out.append(ParamSpec("weight_v", prefix_shape, init="kaiming_uniform", decay=True,
                             fan_in=fan_in))
    else:
        out.append(ParamSpec("weight", prefix_shape, init="kaiming_uniform", decay=True,
                             fan_in=fan_in))
        out += b
    return out


def _groups_hint(cin: int, out: int, g: int | None = None) -> str:
    if g == cin:              # a depthwise conv: out is what to change
        return (f"a depthwise conv ({cin} groups) needs `out` a multiple of its {cin} input "
                f"channels: {cin}, {2 * cin}, {3 * cin}, ...")
    both = [d for d in range(1, min(cin, out) + 1) if cin % d == 0 and out % d == 0]
    return (f"groups must divide both {cin} input and {out} output channels: one of "
            f"{', '.join(map(str, both[-8:]))}" + (f" (depthwise: groups = {cin})" if out % cin == 0 else ""))


def _groups_ok(cin: int, out: int, g: int) -> None:
    if cin % g:
        raise ShapeError(f"groups {g} does not divide input channels {cin}",
                         formula=f"C_in % groups = {cin} % {g} = {cin % g} != 0",
                         hint=_groups_hint(cin, out), attr="groups")
    if out % g:
        raise ShapeError(f"groups {g} does not divide output channels {out}",
                         formula=f"out % groups = {out} % {g} = {out % g} != 0",
                         hint=_groups_hint(cin, out, g), attr="out" if g == cin else "groups")


@register
class Conv(LayerDef):
    type = "conv"
    aliases = ("conv2d",)
    family = "conv"
    doc = ("2-D convolution, PyTorch nn.Conv2d semantics (cross-correlation). "
           "weight (out, in/groups, kh, kw), bias (out,). weight_norm: true reparametrises "
           "the weight as g * v/||v|| per output channel (torch.nn.utils.weight_norm).")
    attrs = {
        "out": Attr("int", None, doc="output channels (required; with groups: depthwise the "
                                     "default is the input channels)", min=1),
        "kernel": _KERNEL, "stride": _STRIDE, "pad": _PAD, "dilation": _DIL,
        "groups": Attr("any", 1, doc="channel groups (in and out must be divisible), or "
                                     "`depthwise`: one group per input channel, whatever their "
                                     "number (MobileNet / Xception blocks need no channel argument)"),
        "bias": _BIAS,
        "weight_norm": Attr("bool", False, doc="weight normalisation (Salimans & Kingma 2016)"),
        **INIT_ATTRS,
    }

    def normalize(self, a, in_shapes):
        cin, h, w = need_image(in_shapes[0], "conv")
        k = pair(a["kernel"], "kernel")
        s = pair(a.get("stride", 1), "stride")
        d = pair(a.get("dilation", 1), "dilation")
        g = a.get("groups", 1)
        if g == "depthwise":
            g = cin
        elif isinstance(g, bool) or not isinstance(g, int) or g < 1:
            raise ShapeError(f"groups must be a positive integer or `depthwise`, got {g!r}",
                             hint="depthwise: one group per input channel", attr="groups")
        out = a.get("out")
        if out is None:
            if a.get("groups") != "depthwise":
                raise ShapeError("conv needs `out` (output channels)",
                                 hint="e.g. `conv: {out: 64, kernel: 3}`; only a depthwise conv "
                                      "(groups: depthwise) defaults to its input channels")
            out = cin
        return {"out": out, "kernel": k, "stride": s,
                "pad": pad4(a.get("pad", 0), k, s, d, (h, w)), "dilation": d,
                "groups": g, "bias": bool(a.get("bias", True)),
                "weight_norm": bool(a.get("weight_norm", False))}

    def output_shape(self, a, in_shapes):
        cin, h, w = need_image(in_shapes[0], "conv")
        _groups_ok(cin, a["out"], a["groups"])
        (kh, kw), (sh, sw), (dh, dw) = a["kernel"], a["stride"], a["dilation"]
        t, b, l, r = a["pad"]
        return (a["out"], window_out(h, kh, sh, t, b, dh, axis="H"),
                window_out(w, kw, sw, l, r, dw, axis="W"))

    def params(self, a, in_shapes):
        cin = in_shapes[0][0]
        kh, kw = a["kernel"]
        cg = cin // a["groups"]
        return weight_params((a["out"], cg, kh, kw), cg * kh * kw, a["weight_norm"],
                             a["bias"], (a["out"],))

    def macs(self, a, in_shapes, out_shape):
        kh, kw = a["kernel"]
        return prod(out_shape) * (in_shapes[0][0] // a["groups"]) * kh * kw

    def receptive_field(self, a, in_shapes, rfs):
        return rf_window(rfs[0], a["kernel"], a["stride"], (a["pad"][0], a["pad"][2]),
                         a["dilation"])


@register
class ConvTranspose(LayerDef):
    type = "conv_transpose"
    aliases = ("deconv", "conv_transpose2d")
    family = "conv"
    doc = ("Transposed 2-D convolution, PyTorch nn.ConvTranspose2d semantics. "
           "H_out = (H-1)*stride - pt - pb + dil*(k-1) + output_padding + 1. "
           "weight (in, out/groups, kh, kw), bias (out,). MACs = input elements x "
           "out/groups x kh x kw (every input pixel scatters one kernel).")
    attrs = {
        "out": Attr("int", doc="output channels", min=1),
        "kernel": _KERNEL, "stride": _STRIDE,
        "pad": Attr("pad", 0, doc="implicit padding removed from the output: int, [ph, pw] "
                                  "or [top, bottom, left, right]"),
        "output_padding": Attr("int2", 0, doc="extra size added to one side of the output "
                                              "(must be < stride or < dilation)", min=0),
        "dilation": _DIL,
        "groups": Attr("int", 1, doc="channel groups", min=1),
        "bias": _BIAS,
        **INIT_ATTRS,
    }

    def normalize(self, a, in_shapes):
        need_image(in_shapes[0], "conv_transpose")
        k = pair(a["kernel"], "kernel")
        s = pair(a.get("stride", 1), "stride")
        d = pair(a.get("dilation", 1), "dilation")
        if isinstance(a.get("pad", 0), str):
            raise ShapeError("conv_transpose pad must be numeric ('same'/'valid' are "
                             "ambiguous for transposed convolutions)", attr="pad")
        return {"out": a["out"], "kernel": k, "stride": s,
                "pad": pad4(a.get("pad", 0), k, s, d, None),
                "output_padding": pair(a.get("output_padding", 0), "output_padding", lo=0),
                "dilation": d, "groups": a.get("groups", 1), "bias": bool(a.get("bias", True))}

    def output_shape(self, a, in_shapes):
        cin, h, w = need_image(in_shapes[0], "conv_transpose")
        _groups_ok(cin, a["out"], a["groups"])
        t, b, l, r = a["pad"]
        outs = []
        for ax, n, k, s, d, op, p0, p1 in zip("HW", (h, w), a["kernel"], a["stride"],
                                              a["dilation"], a["output_padding"], (t, l), (b, r)):
            if op >= s and op >= d:
                raise ShapeError(
                    f"output_padding {op} must be smaller than stride {s} or dilation {d}",
                    formula=f"output_padding < max(stride, dilation): {op} >= {max(s, d)}",
                    attr="output_padding")
            o = (n - 1) * s - p0 - p1 + d * (k - 1) + op + 1
            if o <= 0:
                raise ShapeError(
                    f"output {ax} would be {o}",
                    formula=f"({ax}-1)*stride - p0 - p1 + dil*(k-1) + output_padding + 1 = "
                            f"({n}-1)*{s} - {p0} - {p1} + {d}*({k}-1) + {op} + 1 = {o}",
                    attr="pad")
            outs.append(o)
        return (a["out"], outs[0], outs[1])

    def params(self, a, in_shapes):
        cin = in_shapes[0][0]
        kh, kw = a["kernel"]
        og = a["out"] // a["groups"]
        # torch computes fan_in of a transposed conv from weight.size(1) = out/groups
        return weight_params((cin, og, kh, kw), og * kh * kw, False, a["bias"], (a["out"],))

    def macs(self, a, in_shapes, out_shape):
        kh, kw = a["kernel"]
        return prod(in_shapes[0]) * (a["out"] // a["groups"]) * kh * kw

    def receptive_field(self, a, in_shapes, rfs):
        """Upsampling by s: jump/s; an output sees ceil(k_eff/s) input positions; its
        centre maps to input coordinate (o + p - (k_eff-1)/2)/s (nominal, interior)."""
        rf = rfs[0]
        size, jump, start = [], [], []
        for ax in range(2):
            k, s, d = a["kernel"][ax], a["stride"][ax], a["dilation"][ax]
            p = a["pad"][2 * ax]
            keff = d * (k - 1) + 1
            j = rf.jump[ax]
            size.append(rf.size[ax] + (ceil_div(keff, s) - 1) * j)
            jump.append(j / s)
            start.append(rf.start[ax] + (p - (keff - 1) / 2) / s * j)
        return RF(tuple(size), tuple(jump), tuple(start))


@register
class LocallyConnected(LayerDef):
    type = "locally_connected"
    aliases = ("local",)
    family = "conv"
    doc = ("Locally connected layer: a convolution whose weights are not shared across "
           "positions. Layout (documented choice): weight (OH, OW, out, in, kh, kw) -- i.e. one "
           "OIHW conv kernel per output position --, bias (out, OH, OW). "
           "MACs as for conv: out elements x in x kh x kw.")
    attrs = {
        "out": Attr("int", doc="output channels", min=1),
        "kernel": _KERNEL, "stride": _STRIDE,
        "pad": _PAD,
        "bias": Attr("bool", True, doc="learn a bias per output channel and position"),
        **INIT_ATTRS,
    }

    def normalize(self, a, in_shapes):
        _, h, w = need_image(in_shapes[0], "locally_connected")
        k = pair(a["kernel"], "kernel")
        s = pair(a.get("stride", 1), "stride")
        return {"out": a["out"], "kernel": k, "stride": s,
                "pad": pad4(a.get("pad", 0), k, s, (1, 1), (h, w)),
                "bias": bool(a.get("bias", True))}

    def output_shape(self, a, in_shapes):
        _, h, w = need_image(in_shapes[0], "locally_connected")
        (kh, kw), (sh, sw) = a["kernel"], a["stride"]
        t, b, l, r = a["pad"]
        return (a["out"], window_out(h, kh, sh, t, b, axis="H"),
                window_out(w, kw, sw, l, r, axis="W"))

    def params(self, a, in_shapes):
        cin = in_shapes[0][0]
        kh, kw = a["kernel"]
        _, oh, ow = self.output_shape(a, in_shapes)
        fan = cin * kh * kw
        out = [ParamSpec("weight", (oh, ow, a["out"], cin, kh, kw), init="kaiming_uniform",
                         decay=True, fan_in=fan, unit_dims=3,      # unit (oh, ow, out)
                         fan_out=a["out"] * kh * kw)]   # as a conv's, not the 6-D shape's
        if a["bias"]:
            out.append(ParamSpec("bias", (a["out"], oh, ow), init="uniform_fan_in",
                                 decay=False, fan_in=fan))
        return out

    def macs(self, a, in_shapes, out_shape):
        kh, kw = a["kernel"]
        return prod(out_shape) * in_shapes[0][0] * kh * kw

    def receptive_field(self, a, in_shapes, rfs):
        return rf_window(rfs[0], a["kernel"], a["stride"], (a["pad"][0], a["pad"][2]))


__all__ = ["Conv", "ConvTranspose", "LocallyConnected", "weight_params"]
