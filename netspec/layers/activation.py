"""Activations (elementwise, shape-preserving; no MACs): relu, sigmoid, tanh, leaky_relu,
prelu (learned slope, He et al. 2015), elu (Clevert et al. 2015), relu6, hardsigmoid,
hardswish (MobileNets), silu/swish, gelu, softplus, softmax (over channels)."""
from __future__ import annotations

from .base import Attr, LayerDef, ParamSpec, ShapeError, register
from ._common import as_float, is_int


class _Elementwise(LayerDef):
    family = "activation"
    attrs: dict = {}

    def output_shape(self, a, in_shapes):
        return tuple(in_shapes[0])

    def normalize(self, a, in_shapes):
        return {k: (as_float(a.get(k, at.default), k, at.min, at.max)
                    if at.type == "float" else a.get(k, at.default))
                for k, at in self.attrs.items()}


@register
class ReLU(_Elementwise):
    type = "relu"
    doc = "max(0, x)."


@register
class Sigmoid(_Elementwise):
    type = "sigmoid"
    doc = "1 / (1 + exp(-x))."


@register
class Tanh(_Elementwise):
    type = "tanh"
    doc = "tanh(x)."


@register
class LeakyReLU(_Elementwise):
    type = "leaky_relu"
    aliases = ("lrelu",)
    doc = "max(0, x) + slope * min(0, x) (nn.LeakyReLU, negative_slope)."
    attrs = {"slope": Attr("float", 0.01, doc="slope for x < 0")}


@register
class PReLU(_Elementwise):
    type = "prelu"
    doc = ("Parametric ReLU (He et al. 2015), nn.PReLU: max(0, x) + a * min(0, x) with a "
           "learned; num_parameters 1 (one a shared by all channels) or C (one per channel). "
           "Param `weight` (num_parameters,), initialised to `init`, not weight-decayed "
           "(as the paper recommends).")
    attrs = {"num_parameters": Attr("int", 1, doc="1 (shared) or the channel count", min=1),
             "init": Attr("float", 0.25, doc="initial slope")}

    def normalize(self, a, in_shapes):
        out = super().normalize(a, in_shapes)
        n = out["num_parameters"]
        if not is_int(n) or n < 1:
            raise ShapeError(f"num_parameters must be a positive integer, got {n!r}",
                             attr="num_parameters")
        return out

    def output_shape(self, a, in_shapes):
        s = tuple(in_shapes[0])
        n = a["num_parameters"]
        if n != 1 and n != s[0]:
            raise ShapeError(f"prelu num_parameters {n} must be 1 or the channel count {s[0]}",
                             formula=f"num_parameters in (1, C): {n} not in (1, {s[0]})",
                             attr="num_parameters")
        return s

    def params(self, a, in_shapes):
        return [ParamSpec("weight", (a["num_parameters"],), init=f"const:{a['init']}",
                          decay=False)]


@register
class ELU(_Elementwise):
    type = "elu"
    doc = "x if x > 0 else alpha * (exp(x) - 1) (nn.ELU)."
    attrs = {"alpha": Attr("float", 1.0, doc="saturation value for x -> -inf is -alpha",
                           min=0.0)}


@register
class ReLU6(_Elementwise):
    type = "relu6"
    doc = "min(max(0, x), 6) (nn.ReLU6; MobileNet v1/v2)."


@register
class HardSigmoid(_Elementwise):
    type = "hardsigmoid"
    aliases = ("hard_sigmoid",)
    doc = "relu6(x + 3) / 6 (nn.Hardsigmoid; MobileNet v3's squeeze-excite gate)."


@register
class HardSwish(_Elementwise):
    type = "hardswish"
    aliases = ("hard_swish",)
    doc = "x * relu6(x + 3) / 6 (nn.Hardswish; MobileNet v3)."


@register
class SiLU(_Elementwise):
    type = "silu"
    aliases = ("swish",)
    doc = "x * sigmoid(x) (nn.SiLU, 'swish'; EfficientNet)."


@register
class GELU(_Elementwise):
    type = "gelu"
    doc = "x * Phi(x) with the exact normal CDF, 0.5 x (1 + erf(x / sqrt 2)) (nn.GELU())."


@register
class Softplus(_Elementwise):
    type = "softplus"
    doc = "log(1 + exp(x)), and x where x > 20 (nn.Softplus(), beta 1, threshold 20)."


@register
class Softmax(_Elementwise):
    type = "softmax"
    doc = ("Softmax over the channel (first non-batch) dimension, nn.Softmax(dim=1). "
           "Losses take logits: do not end a net with softmax for training.")


__all__ = ["ReLU", "Sigmoid", "Tanh", "LeakyReLU", "PReLU", "ELU", "ReLU6", "HardSigmoid",
           "HardSwish", "SiLU", "GELU", "Softplus", "Softmax"]
