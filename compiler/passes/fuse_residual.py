"""Fuse a residual add into the conv that produces one of its operands (CPU only).

add(conv2d(x), r) (+ fused ReLU) -> one conv2d node with a fourth input ``residual``:
y = act(conv(x) + bias + r) written by the conv's epilogue while the conv result is still
in cache; backward hands the (masked) output gradient to r from the same pass.  The
conv's full-size output is never written nor re-read, and the add kernel disappears.
In eval graphs of BatchNorm ResNets (BN folded into the conv) every block-closing add
fuses; in training BN sits between conv and add, so only BN-free residual nets fuse.

Legal when the add has exactly two inputs of the same shape, the conv output has exactly
one consumer (the add) and is not a graph output, the conv has no act, pool or residual
yet and runs on the wide-row kernels (conv_wide.usable).  The fused node takes the add's
place in the node order (both operands exist there).  Forward graphs only (before
autodiff); only the CPU kernels implement ``residual`` (pipeline.CPU_ONLY).
"""
from __future__ import annotations

from ..ir import Graph, Node
from . import rewrite as rewrites
from ..ops import conv_wide


def _fusable_conv(g: Graph, v: str, consumers, producers) -> Node | None:
    conv = producers.get(v)
    if conv is None or conv.op != "conv2d" or conv.phase != "fwd" or len(conv.inputs) > 3:
        return None
    a = conv.a
    if a.get("act", "none") != "none" or "pool" in a:
        return None
    if len(consumers.get(v, [])) != 1 or v in g.outputs:
        return None
    xs, ws = g.values[conv.inputs[0]].shape, g.values[conv.inputs[1]].shape
    return conv if len(xs) == 4 and conv_wide.usable(xs, ws, a) else None


def fuse_residual(g: Graph) -> Graph:
    consumers = g.consumers()
    producers = g.producers()
    drop: set[str] = set()
    rewrite: dict[str, Node] = {}
    for n in g.nodes:
        if n.op != "add" or n.phase != "fwd" or len(n.inputs) != 2:
            continue
        a, b = n.inputs
        if g.values[a].shape != g.values[b].shape:
            continue
        for v, r in ((a, b), (b, a)):
            conv = _fusable_conv(g, v, consumers, producers)
            if conv is not None and conv.id not in drop and r not in drop:
                break
        else:
            continue
        x, w, bias = (tuple(conv.inputs) + (None,))[:3]
        layer = conv.layer + "+" + n.layer if n.layer else conv.layer
        rewrite[n.id] = Node(conv.id, "conv2d", (x, w, bias, r), n.outputs,
                             conv.with_attrs(act=n.a.get("act", "none")).attrs, layer, "fwd")
        drop.add(conv.id)
    return rewrites.apply(g, rewrite, drop)
