"""Normalisation family, PyTorch semantics and state_dict names:
batchnorm (BatchNorm1d/2d), layernorm (LayerNorm over (C, H, W)), instancenorm
(InstanceNorm2d), groupnorm (GroupNorm), lrn (LocalResponseNorm).
Elementwise for the receptive field; no MACs counted."""
from __future__ import annotations

import math

from .base import Attr, LayerDef, ParamSpec, ShapeError, register
from ._common import as_float, is_int, need_image

_EPS = Attr("float", 1e-5, doc="added to the variance", min=0.0)
_MOM = Attr("float", 0.1, doc="running statistics: r = (1-momentum)*r + momentum*batch_stat",
            min=0.0, max=1.0)


def _affine(shape, affine: bool) -> list[ParamSpec]:
    if not affine:
        return []
    return [ParamSpec("weight", shape, init="ones", decay=False),
            ParamSpec("bias", shape, init="zeros", decay=False)]


def _channels(in_shape, what: str) -> int:
    if len(in_shape) not in (1, 3):
        raise ShapeError(f"{what} needs a (C, H, W) or (F,) input, got {tuple(in_shape)}")
    return int(in_shape[0])


def _one_value(n: int, what: str, over: str, fix: str) -> None:
    """A normalisation over a single value has no variance: its output is the bias (or 0) and
    no gradient flows through it (PyTorch refuses it: "Expected more than 1 value")."""
    if n <= 1:
        raise ShapeError(f"{what} normalises {over}, which is a single value: the output would be "
                         f"the bias alone and no gradient would flow", hint=f"use {fix}")


class _Norm(LayerDef):
    family = "norm"

    def output_shape(self, a, in_shapes):
        self.check_input(a, in_shapes[0])
        return tuple(in_shapes[0])

    def check_input(self, a, s):
        _channels(s, self.type)

    def normalize(self, a, in_shapes):
        out = {}
        for k, at in self.attrs.items():
            v = a.get(k, at.default)
            out[k] = as_float(v, k, at.min, at.max) if at.type == "float" else v
        return out


@register
class BatchNorm(_Norm):
    type = "batchnorm"
    aliases = ("bn", "batchnorm2d")
    doc = ("Batch normalisation (nn.BatchNorm2d on (C, H, W), BatchNorm1d on (F,)): "
           "params weight, bias (C,); buffers running_mean (zeros), running_var (ones). "
           "num_batches_tracked is not kept (momentum is always given).")
    attrs = {"eps": _EPS, "momentum": _MOM,
             "affine": Attr("bool", True, doc="learn per-channel scale (weight) and shift (bias)"),
             "use_global_stats": Attr("bool", False, doc=(
                 "normalise with the running statistics in training too and leave them "
                 "unchanged (Caffe's use_global_stats; what Keras does for a frozen "
                 "BatchNormalization): for fine-tuning, where small or shifted batches would "
                 "spoil the statistics learnt on the source data"))}

    def params(self, a, in_shapes):
        c = (in_shapes[0][0],)
        return _affine(c, a["affine"]) + [
            ParamSpec("running_mean", c, kind="buffer", init="zeros"),
            ParamSpec("running_var", c, kind="buffer", init="ones")]


@register
class LayerNorm(_Norm):
    type = "layernorm"
    aliases = ("layer_norm",)
    doc = ("Layer normalisation over all of (C, H, W) per sample, like "
           "nn.LayerNorm(input.shape[1:]): weight and bias have the input's shape.")
    attrs = {"eps": _EPS,
             "affine": Attr("bool", True, doc="learn elementwise weight and bias")}

    def check_input(self, a, s):
        _one_value(math.prod(s), "layernorm", "the whole input", "a larger input")

    def params(self, a, in_shapes):
        return _affine(tuple(in_shapes[0]), a["affine"])


@register
class InstanceNorm(_Norm):
    type = "instancenorm"
    aliases = ("instance_norm", "instancenorm2d")
    doc = ("Instance normalisation, nn.InstanceNorm2d (per sample and channel over H, W; "
           "always uses the instance statistics, no running buffers). affine defaults to "
           "false like PyTorch.")
    attrs = {"eps": _EPS,
             "affine": Attr("bool", False, doc="learn per-channel weight and bias")}

    def check_input(self, a, s):
        _, h, w = need_image(s, "instancenorm")
        _one_value(h * w, "instancenorm", f"each {h}x{w} plane", "a larger input or batchnorm")

    def params(self, a, in_shapes):
        return _affine((in_shapes[0][0],), a["affine"])


@register
class GroupNorm(_Norm):
    type = "groupnorm"
    aliases = ("group_norm",)
    doc = ("Group normalisation (Wu & He 2018), nn.GroupNorm(groups, C): statistics over "
           "each group of C/groups channels and all positions; weight, bias (C,).")
    attrs = {"groups": Attr("int", doc="number of channel groups (must divide C)", min=1),
             "eps": _EPS,
             "affine": Attr("bool", True, doc="learn per-channel weight and bias")}

    def normalize(self, a, in_shapes):
        out = super().normalize(a, in_shapes)
        if not is_int(out["groups"]) or out["groups"] < 1:
            raise ShapeError(f"groups must be a positive integer, got {out['groups']!r}",
                             attr="groups")
        return out

    def check_input(self, a, s):
        c, g = _channels(s, "groupnorm"), a["groups"]
        if c % g:
            raise ShapeError(f"groups {g} does not divide {c} channels",
                             formula=f"C % groups = {c} % {g} = {c % g} != 0", attr="groups")
        _one_value(c // g * math.prod(s[1:]), "groupnorm", "each group", "fewer groups")

    def params(self, a, in_shapes):
        return _affine((in_shapes[0][0],), a["affine"])


@register
class LRN(_Norm):
    type = "lrn"
    aliases = ("local_response_norm",)
    doc = ("Local response normalisation across channels (Krizhevsky et al. 2012), "
           "torch nn.LocalResponseNorm semantics: b_c = a_c / (k + alpha/size * "
           "sum_{c' in window of `size` channels centred at c} a_c'^2)^beta "
           "(Caffe's and torch's AlexNet setting: size 5, alpha 1e-4, beta 0.75, k 2; the "
           "paper's alpha = 1e-4 has no /size, i.e. alpha: 5e-4 here).")
    attrs = {"size": Attr("int", doc="channels in the window", min=1),
             "alpha": Attr("float", 1e-4, doc="scale"),
             "beta": Attr("float", 0.75, doc="exponent"),
             "k": Attr("float", 1.0, doc="additive constant")}

    def normalize(self, a, in_shapes):
        out = super().normalize(a, in_shapes)
        if not is_int(out["size"]) or out["size"] < 1:
            raise ShapeError(f"size must be a positive integer, got {out['size']!r}",
                             attr="size")
        return out

    def check_input(self, a, s):
        need_image(s, "lrn")


__all__ = ["BatchNorm", "LayerNorm", "InstanceNorm", "GroupNorm", "LRN"]
