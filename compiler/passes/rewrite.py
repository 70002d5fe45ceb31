"""The shared tail of the fusion passes: apply node rewrites and drops, prune values."""
from __future__ import annotations

from ..ir import Graph, Node

PERSISTENT = ("input", "target", "param", "buffer")


def apply(g: Graph, rewrite: dict[str, Node], drop: set[str]) -> Graph:
    """``g`` with node ``id`` replaced by ``rewrite[id]`` (in that node's place), the nodes
    in ``drop`` removed, and the values no node uses any more dropped (persistent ones
    kept).  Returns ``g`` itself when there is nothing to do."""
    if not drop and not rewrite:
        return g
    nodes = tuple(rewrite.get(n.id, n) for n in g.nodes if n.id not in drop)
    used = {i for n in nodes for i in n.inputs if i} | {o for n in nodes for o in n.outputs if o}
    values = {k: v for k, v in g.values.items() if k in used or v.kind in PERSISTENT}
    return g.replace(nodes=nodes, values=values)
