"""Merging and resampling family: add (residual sum, with automatic shortcut projection),
multiply (gates: squeeze-and-excitation), concat (along channels), upsample, center_crop (U-Net skip cropping), shortcut_pad
(ResNet option A shortcut), channel_shuffle and channel_slice (ShuffleNet's shuffle and
channel split). No params, no MACs."""
from __future__ import annotations

import math

from .base import RF, Attr, LayerDef, ShapeError, register
from ._common import as_float, ceil_div, fmt_shape, is_int, need_image, pair, rf_merge, \
    rf_window


def _shapes(in_shapes) -> str:
    return ", ".join(fmt_shape(s) for s in in_shapes)


@register
class Add(LayerDef):
    type = "add"
    aliases = ("sum",)
    family = "merge"
    arity = None
    doc = ("Elementwise sum of two or more inputs of equal shape. When shapes differ and "
           "`project` is not none, the checker inserts a projection on every input after "
           "the first (the shortcut): conv_bn (auto) -> `<scope>.downsample.0` 1x1 conv "
           "(stride to match, no bias) + `<scope>.downsample.1` batchnorm; conv -> the conv "
           "alone (with bias); conv_nobias -> the conv alone without bias (pre-activation "
           "ResNets, Wide ResNets); pad -> `<scope>.shortcut` shortcut_pad (ResNet option A).")
    attrs = {"project": Attr("str", "auto", doc="projection of a mismatching shortcut",
                             choices=("auto", "conv_bn", "conv", "conv_nobias", "pad", "none"))}

    def normalize(self, a, in_shapes):
        p = a.get("project", "auto")
        if p not in self.attrs["project"].choices:
            raise ShapeError(f"project must be one of {', '.join(self.attrs['project'].choices)}; "
                             f"got {p!r}",
                             attr="project")
        return {"project": "conv_bn" if p == "auto" else p}

    def output_shape(self, a, in_shapes):
        if len(in_shapes) < 2:
            raise ShapeError(f"add needs at least 2 inputs, got {len(in_shapes)}",
                             hint="use from: [-1, input] (or a list of layer names)")
        first = tuple(in_shapes[0])
        for i, s in enumerate(in_shapes[1:], 1):
            if tuple(s) != first:
                what = "channel counts" if len(s) == len(first) and s[1:] == first[1:] \
                    else "shapes"
                raise ShapeError(
                    f"add inputs have different {what}: {_shapes(in_shapes)}",
                    formula=f"shape(input {i}) == shape(input 0): {fmt_shape(s)} != "
                            f"{fmt_shape(first)}",
                    hint="set project: auto/conv_bn/conv/conv_nobias/pad to project the shortcut, "
                         "or fix the branch's channels/stride", attr="from")
        return first

    def receptive_field(self, a, in_shapes, rfs):
        return rf_merge(rfs)


@register
class Multiply(LayerDef):
    type = "multiply"
    aliases = ("mul",)
    family = "merge"
    arity = 2
    doc = ("Elementwise product x * g of two inputs; g may broadcast over the dims where it "
           "has size 1: a channel gate (C, 1, 1) as in squeeze-and-excitation (SENet, "
           "MobileNet v3, EfficientNet), a spatial map (1, H, W), or the full shape. The first "
           "input has the output's shape.")
    attrs: dict = {}

    def output_shape(self, a, in_shapes):
        x, g = tuple(in_shapes[0]), tuple(in_shapes[1])
        if len(x) != len(g) or any(b not in (1, c) for c, b in zip(x, g)):
            raise ShapeError(
                f"multiply: the second input {fmt_shape(g)} does not broadcast to the first "
                f"{fmt_shape(x)}",
                formula="every dim of input 1 equals input 0's or is 1",
                hint="a gate is (C, 1, 1) or (1, H, W); put the full-size input first in `from`",
                attr="from")
        return x

    def receptive_field(self, a, in_shapes, rfs):
        # the output lives on input 0's grid (jump, start); a gate only widens what each
        # position depends on (a global-pool gate: the whole image)
        size = tuple(max(r.size[i] for r in rfs) for i in range(2))
        return RF(size, rfs[0].jump, rfs[0].start)


@register
class Concat(LayerDef):
    type = "concat"
    aliases = ("cat",)
    family = "merge"
    arity = None
    doc = ("Concatenation along channels (dim 1), torch.cat(xs, 1); spatial sizes must match. "
           "Vector inputs (F,) concatenate their features.")
    attrs: dict = {}

    def output_shape(self, a, in_shapes):
        if len(in_shapes) < 1:
            raise ShapeError("concat needs at least one input")
        first = tuple(in_shapes[0])
        for i, s in enumerate(in_shapes[1:], 1):
            if len(s) != len(first) or tuple(s[1:]) != first[1:]:
                raise ShapeError(
                    f"concat inputs differ in spatial size: {_shapes(in_shapes)}",
                    formula=f"shape(input {i})[1:] == shape(input 0)[1:]: "
                            f"{fmt_shape(s[1:])} != {fmt_shape(first[1:])}",
                    hint="make the branches' strides/padding agree, or center_crop first",
                    attr="from")
        return (sum(int(s[0]) for s in in_shapes),) + first[1:]

    def receptive_field(self, a, in_shapes, rfs):
        return rf_merge(rfs)


@register
class Upsample(LayerDef):
    type = "upsample"
    family = "merge"
    arity = None
    doc = ("Spatial upsampling, nn.Upsample semantics: output floor(H*scale) or `size`, or "
           "(with two inputs, `from: [x, ref]`) the spatial size of input 1, whose values are "
           "not used (F.interpolate(x, size=ref.shape[-2:]): FPN / DeepLab pooling branches). "
           "Receptive field (nominal): jump/scale; bilinear reads 2 neighbours per axis "
           "(size + 1 input jump), nearest one.")
    attrs = {
        "mode": Attr("str", "nearest", doc="interpolation", choices=("nearest", "bilinear")),
        "scale": Attr("any", None, doc="scale factor: a number or [sh, sw] (exclusive with "
                                       "size)"),
        "size": Attr("int2", None, doc="output [h, w] (exclusive with scale)", min=1),
        "align_corners": Attr("bool", False, doc="bilinear only: align corner pixels"),
    }

    def normalize(self, a, in_shapes):
        _, h, w = need_image(in_shapes[0], "upsample")
        mode = a.get("mode", "nearest")
        if mode not in ("nearest", "bilinear"):
            raise ShapeError(f"mode must be nearest or bilinear, got {mode!r}", attr="mode")
        scale, size = a.get("scale"), a.get("size")
        if len(in_shapes) == 2:
            if scale is not None or size is not None:
                raise ShapeError("upsample takes its size from input 1; remove "
                                 + ("`scale`" if scale is not None else "`size`"),
                                 attr="scale" if scale is not None else "size")
            _, rh, rw = need_image(in_shapes[1], "upsample (input 1)")
            size = (rh, rw)
        elif len(in_shapes) != 1:
            raise ShapeError(f"upsample takes 1 input (or 2: from: [x, ref] for ref's size), got "
                             f"{len(in_shapes)}")
        elif (scale is None) == (size is None):
            raise ShapeError("upsample needs exactly one of scale and size",
                             hint="or take the size of another layer: from: [x, ref]", attr="scale")
        if scale is not None:
            sc = scale if isinstance(scale, (list, tuple)) else [scale, scale]
            if len(sc) != 2:
                raise ShapeError(f"scale must be a number or [sh, sw], got {scale!r}",
                                 attr="scale")
            sc = tuple(as_float(x, "scale", 0.0, lo_open=True) for x in sc)
            size = (int(math.floor(h * sc[0])), int(math.floor(w * sc[1])))
            by_size = False
        else:
            size = pair(size, "size")
            sc = (size[0] / h, size[1] / w)
            by_size = True
        ac = bool(a.get("align_corners", False))
        if ac and mode == "nearest":
            raise ShapeError("align_corners only applies to mode bilinear", attr="align_corners")
        # by_size: the output size was given (size, or a reference input): coordinates map
        # with in/out as F.interpolate(size=...) does; `scale` is then only nominal (the RF)
        return {"mode": mode, "scale": sc, "size": size, "align_corners": ac, "by_size": by_size}

    def output_shape(self, a, in_shapes):
        c, _, _ = need_image(in_shapes[0], "upsample")
        for ax, o in zip("HW", a["size"]):
            if o <= 0:
                raise ShapeError(f"output {ax} would be {o}",
                                 formula=f"floor({ax} * scale) = {o}", attr="scale")
        return (c,) + tuple(a["size"])

    def receptive_field(self, a, in_shapes, rfs):
        rf = rfs[0]
        extra = 1 if a["mode"] == "bilinear" else 0
        size = tuple(rf.size[i] + extra * rf.jump[i] for i in range(2))
        jump = tuple(rf.jump[i] / a["scale"][i] for i in range(2))
        # output pixel o's centre (o + 0.5)/scale - 0.5 in input pixel coordinates
        start = tuple(rf.start[i] + (0.5 / a["scale"][i] - 0.5) * rf.jump[i] for i in range(2))
        return RF(size, jump, start)  # type: ignore[arg-type]


@register
class CenterCrop(LayerDef):
    type = "center_crop"
    aliases = ("crop",)
    family = "merge"
    arity = None
    doc = ("Crop input 0 spatially around its centre to `size`, or (with two inputs, U-Net "
           "style) to the spatial size of input 1 (whose values are not used). The crop "
           "starts at top = (H - h) // 2, left = (W - w) // 2.")
    attrs = {"size": Attr("int2", None, doc="target [h, w]; omit when a second input gives it",
                          min=1)}

    def normalize(self, a, in_shapes):
        size = a.get("size")
        if len(in_shapes) == 2:
            if size is not None:
                raise ShapeError("center_crop takes its size from input 1; remove `size`",
                                 attr="size")
            _, h, w = need_image(in_shapes[1], "center_crop (input 1)")
            size = (h, w)
        elif len(in_shapes) == 1:
            if size is None:
                raise ShapeError("center_crop with one input needs `size`",
                                 hint="or give the reference as a second input: "
                                      "from: [x, ref]", attr="size")
            size = pair(size, "size")
        else:
            raise ShapeError(f"center_crop takes 1 or 2 inputs, got {len(in_shapes)}")
        _, H, W = need_image(in_shapes[0], "center_crop")
        return {"size": tuple(size), "offset": ((H - size[0]) // 2, (W - size[1]) // 2)}

    def output_shape(self, a, in_shapes):
        c, h, w = need_image(in_shapes[0], "center_crop")
        for ax, n, o in zip("HW", (h, w), a["size"]):
            if o > n:
                raise ShapeError(f"crop size {o} > input {n} along {ax}",
                                 formula=f"crop {ax} <= input {ax}: {o} > {n}", attr="size")
        return (c,) + tuple(a["size"])

    def receptive_field(self, a, in_shapes, rfs):
        rf = rfs[0]
        start = tuple(rf.start[i] + a["offset"][i] * rf.jump[i] for i in range(2))
        return RF(rf.size, rf.jump, start)  # type: ignore[arg-type]


@register
class ShortcutPad(LayerDef):
    type = "shortcut_pad"
    family = "merge"
    doc = ("ResNet option A shortcut (He et al. 2015): x[:, :, ::s, ::s] zero-padded to `out` "
           "channels, (out - C)//2 zero channels before and the rest after (as in the common "
           "CIFAR ResNet code F.pad(x[:, :, ::2, ::2], (0,0,0,0, planes//4, planes//4))). "
           "No parameters.")
    attrs = {"stride": Attr("int2", 1, doc="spatial subsampling step", min=1),
             "out": Attr("int", doc="output channels (>= input channels)", min=1)}

    def normalize(self, a, in_shapes):
        return {"stride": pair(a.get("stride", 1), "stride"), "out": a["out"]}

    def output_shape(self, a, in_shapes):
        c, h, w = need_image(in_shapes[0], "shortcut_pad")
        if not is_int(a["out"]) or a["out"] < c:
            raise ShapeError(f"shortcut_pad out {a['out']} < input channels {c}",
                             formula=f"out >= C: {a['out']} < {c}", attr="out")
        sh, sw = a["stride"]
        return (a["out"], ceil_div(h, sh), ceil_div(w, sw))

    def receptive_field(self, a, in_shapes, rfs):
        return rf_window(rfs[0], (1, 1), a["stride"], (0, 0))


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(2, n + 1) if n % d == 0 and d <= 64)


@register
class ChannelShuffle(LayerDef):
    type = "channel_shuffle"
    family = "merge"
    doc = ("ShuffleNet's channel shuffle, torch.nn.ChannelShuffle(groups): the C channels, "
           "seen as (groups, C/groups), are transposed to (C/groups, groups) and flattened, "
           "so output channel j*groups + i is input channel i*(C/groups) + j. Same shape; "
           "C must be a multiple of groups. No parameters.")
    attrs = {"groups": Attr("int", doc="number of channel groups (divides C)", min=1)}

    def output_shape(self, a, in_shapes):
        s = tuple(in_shapes[0])
        c, g = int(s[0]), a["groups"]
        if c % g:
            raise ShapeError(
                f"{c} channels do not split into {g} groups",
                formula=f"C % groups == 0: {c} % {g} = {c % g}",
                hint=f"use groups dividing {c}" + (f" ({_divisors(c)})" if _divisors(c) else ""),
                attr="groups")
        return s

    def receptive_field(self, a, in_shapes, rfs):
        return rfs[0]


@register
class ChannelSlice(LayerDef):
    type = "channel_slice"
    aliases = ("channel_split",)
    family = "merge"
    doc = ("Channels [start, stop) of the input, x[:, start:stop] (negative values count from "
           "the end, stop defaults to C); or, with `chunks`/`index`, torch.chunk(x, chunks, "
           "1)[index] (chunk size ceil(C/chunks)). ShuffleNet v2's channel split is two "
           "slices of the same tensor: {chunks: 2, index: 0} and {chunks: 2, index: 1}. "
           "Backward writes the gradient into those channels, zeros elsewhere. No parameters.")
    attrs = {
        "start": Attr("int", None, doc="first channel (negative: from the end; default 0)"),
        "stop": Attr("int", None, doc="one past the last channel (negative: from the end; "
                                      "default C)"),
        "chunks": Attr("int", None, doc="torch.chunk form: number of chunks (with index; "
                                        "exclusive with start/stop)", min=1),
        "index": Attr("int", None, doc="torch.chunk form: which chunk, 0-based", min=0),
    }

    def normalize(self, a, in_shapes):
        c = int(tuple(in_shapes[0])[0])
        start, stop, chunks, index = (a.get(k) for k in ("start", "stop", "chunks", "index"))
        if chunks is not None or index is not None:
            if start is not None or stop is not None:
                raise ShapeError("channel_slice takes either start/stop or chunks/index, not both",
                                 attr="chunks" if chunks is not None else "index")
            if chunks is None or index is None:
                raise ShapeError("channel_slice's chunk form needs both chunks and index",
                                 hint="e.g. {chunks: 2, index: 0} for the first half",
                                 attr="chunks" if chunks is None else "index")
            size = ceil_div(c, chunks)
            start, stop = index * size, min((index + 1) * size, c)
            if start >= c:
                raise ShapeError(
                    f"chunk {index} of {chunks} is empty for {c} channels",
                    formula=f"index * ceil(C / chunks) < C: {index} * {size} >= {c}",
                    hint=f"index < {ceil_div(c, size)}", attr="index")
            return {"start": start, "stop": stop}
        s0 = 0 if start is None else start
        s1 = c if stop is None else stop
        for k, v in (("start", s0), ("stop", s1)):
            if not -c <= v <= c:
                raise ShapeError(f"channel_slice {k} {v} is outside the {c} input channels",
                                 formula=f"-C <= {k} <= C: {v} not in [{-c}, {c}]", attr=k)
        r0, r1 = s0 + c if s0 < 0 else s0, s1 + c if s1 < 0 else s1
        if r0 >= r1:
            raise ShapeError(f"channel_slice selects no channels: start {s0} >= stop {s1}"
                             + (f" (channels {r0} >= {r1})" if (r0, r1) != (s0, s1) else ""),
                             formula=f"start < stop: {r0} >= {r1}",
                             hint=f"the input has {c} channels",
                             attr="start" if start is not None else "stop")
        return {"start": r0, "stop": r1}

    def output_shape(self, a, in_shapes):
        s = tuple(in_shapes[0])
        return (a["stop"] - a["start"],) + s[1:]

    def receptive_field(self, a, in_shapes, rfs):
        return rfs[0]


__all__ = ["Add", "Concat", "Upsample", "CenterCrop", "ShortcutPad", "ChannelShuffle",
           "ChannelSlice"]
