"""Fuse a ReLU into the op that produces its input (conv/linear bias + ReLU, BatchNorm + ReLU,
a residual add + ReLU).

Forward graphs only (run before autodiff): the producer gets ``act="relu"`` and writes
the activation's output directly; its VJP then masks the incoming gradient by ``y > 0``.
Saves one full pass over the tensor forward and backward, and one buffer.
Legal only when the producer's output has exactly one consumer and is not a graph output.
"""
from __future__ import annotations

from ..ir import Graph, Node
from . import rewrite as rewrites

FUSABLE = {"conv2d", "linear", "conv_transpose2d", "local2d", "batchnorm", "add"}


def fuse_activation(g: Graph) -> Graph:
    consumers = g.consumers()
    producers = g.producers()
    drop: set[str] = set()
    rewrite: dict[str, Node] = {}
    for n in g.nodes:
        if n.op != "activation" or n.a.get("kind") != "relu" or n.phase != "fwd":
            continue
        p = rewrites.sole_producer(g, n.inputs[0], consumers, producers, FUSABLE)
        if p is None or p.a.get("act", "none") != "none":
            continue
        p = rewrite.get(p.id, p)
        rewrite[p.id] = Node(p.id, p.op, p.inputs, (n.outputs[0],), p.with_attrs(act="relu").attrs,
                             rewrites.fused_layer(p, n), p.phase)
        drop.add(n.id)
    return rewrites.apply(g, rewrite, drop)
