"""What the fusion passes share: the producer a node may absorb, the fused node's layer
name, and the tail that applies node rewrites and drops and prunes values."""
from __future__ import annotations

from ..ir import Graph, Node

PERSISTENT = ("input", "target", "param", "buffer")


def sole_producer(g: Graph, v: str, consumers, producers, ops) -> Node | None:
    """The forward node (op in ``ops``) that produces ``v``, when ``v`` has exactly one
    consumer and is not a graph output -- so that consumer may be fused into it."""
    p = producers.get(v)
    if p is None or p.op not in ops or p.phase != "fwd":
        return None
    return p if len(consumers.get(v, [])) == 1 and v not in g.outputs else None


def fused_layer(p: Node, n: Node) -> str:
    """The layer name of ``n`` fused into its producer ``p``."""
    return p.layer + "+" + n.layer if n.layer else p.layer


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
