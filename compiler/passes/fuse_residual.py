"""Fuse a residual add into the conv or BatchNorm that produces one of its operands (CPU only).

add(conv2d(x), r) (+ fused ReLU) -> one conv2d node with a fourth input ``residual``:
y = act(conv(x) + bias + r) written by the conv's epilogue while the conv result is still
in cache; backward hands the (masked) output gradient to r from the same pass.  The
conv's full-size output is never written nor re-read, and the add kernel disappears.
In eval graphs of BatchNorm ResNets (BN folded into the conv) every block-closing add
fuses.  In training BN sits between conv and add: add(batchnorm(x), r) (+ ReLU) becomes a
batchnorm with a sixth input ``residual``, y = act(bn(x) + r) written by BatchNorm's
normalising pass, and BatchNorm's backward writes r's gradient from its reduction pass
(every block of a ResNet: one full-size write and read fewer each way, no add kernels).

Legal when the add has exactly two inputs of the same shape, the producer's output has
exactly one consumer (the add) and is not a graph output, and the producer has no act,
pool or residual yet; a conv must run on the wide-row kernels (conv_wide.usable), a
BatchNorm on image planes (not its flat (N, F) kernels).  A conv operand is preferred.
The fused node takes the add's place in the node order (both operands exist there).
Forward graphs only (before autodiff); only the CPU kernels implement ``residual``
(pipeline.CPU_ONLY).
"""
from __future__ import annotations

from ..ir import Graph, Node
from . import rewrite as rewrites
from ..ops import conv_wide, norm


def _fusable_conv(g: Graph, v: str, consumers, producers) -> Node | None:
    conv = rewrites.sole_producer(g, v, consumers, producers, ("conv2d",))
    if conv is None or len(conv.inputs) > 3:
        return None
    a = conv.a
    if a.get("act", "none") != "none" or "pool" in a:
        return None
    xs, ws = g.values[conv.inputs[0]].shape, g.values[conv.inputs[1]].shape
    return conv if len(xs) == 4 and conv_wide.usable(xs, ws, a) else None


def _fusable_bn(g: Graph, v: str, consumers, producers) -> Node | None:
    bn = rewrites.sole_producer(g, v, consumers, producers, ("batchnorm",))
    if bn is None or len(bn.inputs) > 5 or bn.a.get("act", "none") != "none":
        return None
    xs = g.values[bn.inputs[0]].shape
    return bn if len(xs) == 4 and xs[2] * xs[3] >= norm.FLAT_S else None


def _fused(n: Node, prod: Node, r: str) -> Node:
    """prod with r as its residual input and the add's act, in the add's place."""
    layer = rewrites.fused_layer(prod, n)
    act = n.a.get("act", "none")
    if prod.op == "conv2d":
        x, w, bias = (tuple(prod.inputs) + (None,))[:3]
        return Node(prod.id, "conv2d", (x, w, bias, r), n.outputs, prod.with_attrs(act=act).attrs, layer, "fwd")
    return Node(prod.id, "batchnorm", tuple(prod.inputs) + (r,), n.outputs, prod.with_attrs(act=act).attrs,
                layer, "fwd")


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
        found = None
        for find in (_fusable_conv, _fusable_bn):
            for v, r in ((a, b), (b, a)):
                prod = find(g, v, consumers, producers)
                if prod is not None and prod.id not in drop:
                    found = (prod, r)
                    break
            if found:
                break
        if not found:
            continue
        prod, r = found
        rewrite[n.id] = _fused(n, prod, r)
        drop.add(prod.id)
    return rewrites.apply(g, rewrite, drop)
