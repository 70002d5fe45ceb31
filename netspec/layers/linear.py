"""Fully connected family: linear (nn.Linear), dropconnect (a linear layer with
DropConnect, Wan et al. 2013), flatten, reshape.

A linear/dropconnect layer given a (C, H, W) input flattens it first, C-major like
``torch.flatten(x, 1)``, so ``weight`` is (out, C*H*W) exactly as in torchvision's
classifiers. MACs = in_features x out (bias additions not counted)."""
from __future__ import annotations

from .initattrs import INIT_ATTRS
from .base import Attr, LayerDef, ShapeError, register
from ._common import as_float, is_int, prod, rf_whole
from .conv import weight_params


class _Dense(LayerDef):
    family = "linear"

    def output_shape(self, a, in_shapes):
        return (a["out"],)

    def params(self, a, in_shapes):
        fin = prod(in_shapes[0])
        return weight_params((a["out"], fin), fin, a.get("weight_norm", False), a["bias"],
                             (a["out"],))

    def macs(self, a, in_shapes, out_shape):
        return prod(in_shapes[0]) * a["out"]

    def receptive_field(self, a, in_shapes, rfs):
        return rf_whole(rfs[0], in_shapes[0])


@register
class Linear(_Dense):
    type = "linear"
    aliases = ("fc", "dense")
    doc = ("Fully connected layer, nn.Linear: y = x W^T + b, weight (out, in), bias (out,). "
           "Image inputs are flattened C-major first.")
    attrs = {
        "out": Attr("int", doc="output features", min=1),
        "bias": Attr("bool", True, doc="learn an additive bias"),
        "weight_norm": Attr("bool", False, doc="weight normalisation: weight_g (out, 1) and "
                                               "weight_v (out, in), as torch weight_norm(dim=0)"),
        **INIT_ATTRS,
    }

    def normalize(self, a, in_shapes):
        return {"out": a["out"], "bias": bool(a.get("bias", True)),
                "weight_norm": bool(a.get("weight_norm", False))}


@register
class DropConnect(_Dense):
    type = "dropconnect"
    aliases = ("drop_connect",)
    doc = ("Linear layer with DropConnect (Wan et al. 2013): during training each weight is "
           "zeroed with probability p and the kept ones scaled by 1/(1-p) (inverted, so "
           "evaluation uses the weights as they are). Same parameters as linear.")
    attrs = {
        "out": Attr("int", doc="output features", min=1),
        "p": Attr("float", 0.5, doc="probability of dropping each weight", min=0.0, max=1.0),
        "bias": Attr("bool", True, doc="learn an additive bias (never dropped)"),
        **INIT_ATTRS,
    }

    def normalize(self, a, in_shapes):
        p = as_float(a.get("p", 0.5), "p", 0.0, 1.0, hi_open=True)
        return {"out": a["out"], "p": p, "bias": bool(a.get("bias", True))}


@register
class Flatten(LayerDef):
    type = "flatten"
    family = "linear"
    doc = "Flatten (C, H, W) to (C*H*W,), C-major like torch.flatten(x, 1)."
    attrs: dict = {}

    def output_shape(self, a, in_shapes):
        return (prod(in_shapes[0]),)

    def receptive_field(self, a, in_shapes, rfs):
        return rf_whole(rfs[0], in_shapes[0])


@register
class Identity(LayerDef):
    type = "identity"
    family = "linear"
    doc = ("Passes its input through unchanged (nn.Identity): the 'no layer' choice of a "
           "layer-type argument (`- $se: {}` with se: identity or a block's name).")
    attrs: dict = {}

    def output_shape(self, a, in_shapes):
        return tuple(in_shapes[0])

    def receptive_field(self, a, in_shapes, rfs):
        return rfs[0]


@register
class Reshape(LayerDef):
    type = "reshape"
    aliases = ("view",)
    family = "linear"
    doc = ("Reshape to `shape` (without batch; one entry may be -1 and is inferred), "
           "row-major like torch.reshape. The element count must not change. Receptive field: "
           "unchanged if the spatial size is kept, else the whole input.")
    attrs = {"shape": Attr("ints", doc="target shape without the batch dimension, e.g. "
                                       "[16, 5, 5]; one entry may be -1")}

    def normalize(self, a, in_shapes):
        shp = a["shape"]
        if not isinstance(shp, (list, tuple)) or not shp or not all(is_int(x) for x in shp):
            raise ShapeError(f"shape must be a non-empty list of integers, got {shp!r}",
                             attr="shape")
        if sum(1 for x in shp if x == -1) > 1:
            raise ShapeError(f"shape {list(shp)} has more than one -1", attr="shape")
        if any(x == 0 or x < -1 for x in shp):
            raise ShapeError(f"shape {list(shp)} has a non-positive size (only -1 is allowed)",
                             attr="shape")
        return {"shape": tuple(int(x) for x in shp)}

    def output_shape(self, a, in_shapes):
        n = prod(in_shapes[0])
        shp = list(a["shape"])
        known = prod(x for x in shp if x != -1)
        if -1 in shp:
            if n % known:
                raise ShapeError(
                    f"cannot infer -1 in shape {list(a['shape'])}: {n} elements are not a "
                    f"multiple of {known}",
                    formula=f"{n} % {known} = {n % known} != 0", attr="shape")
            shp[shp.index(-1)] = n // known
        elif known != n:
            raise ShapeError(
                f"shape {list(a['shape'])} holds {known} elements, the input {n}",
                formula=f"prod({list(a['shape'])}) = {known} != {n}", attr="shape")
        return tuple(shp)

    def receptive_field(self, a, in_shapes, rfs):
        ins, out = tuple(in_shapes[0]), self.output_shape(a, in_shapes)
        if len(ins) == 3 and len(out) == 3 and ins[1:] == out[1:]:
            return rfs[0]
        return rf_whole(rfs[0], ins)


__all__ = ["Linear", "DropConnect", "Flatten", "Identity", "Reshape"]
