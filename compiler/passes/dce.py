"""Dead-code elimination: drop nodes none of whose outputs reach a graph output or a
parameter gradient.  (BatchNorm's running-statistics update is a side effect of a node
whose output is live whenever the layer matters, so nothing observable is lost.)"""
from __future__ import annotations

from ..ir import Graph


def dce(g: Graph) -> Graph:
    live = set(g.outputs) | set(g.param_grads.values())
    keep = []
    for n in reversed(g.nodes):
        if any(o in live for o in n.outputs if o):
            keep.append(n)
            live.update(i for i in n.inputs if i)
    if len(keep) == len(g.nodes):
        return g
    nodes = tuple(reversed(keep))
    values = {k: v for k, v in g.values.items()
              if k in live or v.kind in ("input", "target", "param", "buffer", "pgrad")}
    return g.replace(nodes=nodes, values=values)
