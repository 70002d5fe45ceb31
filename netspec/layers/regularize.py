"""Stochastic regularisers (identity at evaluation time, shape-preserving, no params):
dropout (inverted dropout, nn.Dropout) and stochastic_depth (Huang et al. 2016)."""
from __future__ import annotations

from .base import Attr, LayerDef, register
from ._common import as_float


class _Identityish(LayerDef):
    family = "regularize"

    def output_shape(self, a, in_shapes):
        return tuple(in_shapes[0])

    def normalize(self, a, in_shapes):
        return {"p": as_float(a.get("p", 0.5), "p", 0.0, 1.0, hi_open=True)}


@register
class Dropout(_Identityish):
    type = "dropout"
    doc = ("Inverted dropout (Srivastava et al. 2014): during training each element is zeroed "
           "with probability p and survivors are scaled by 1/(1-p); identity at evaluation.")
    attrs = {"p": Attr("float", 0.5, doc="drop probability, 0 <= p < 1", min=0.0, max=1.0)}


@register
class StochasticDepth(_Identityish):
    type = "stochastic_depth"
    aliases = ("drop_path",)
    doc = ("Stochastic depth (Huang et al. 2016) on the residual branch it is placed on: "
           "during training the whole branch output of a sample is zeroed with probability p "
           "and otherwise scaled by 1/(1-p) (torchvision StochasticDepth, mode 'row'); "
           "identity at evaluation. Place it as the last layer of a residual branch, just "
           "before the `add` (the checker warns otherwise).")
    attrs = {"p": Attr("float", 0.5, doc="probability of dropping the branch, 0 <= p < 1",
                       min=0.0, max=1.0)}


__all__ = ["Dropout", "StochasticDepth"]
