"""Fold inference-mode BatchNorm into the preceding convolution.

    y = γ (conv(x, W) + b − μ) / √(σ² + ε) + β   ==   conv(x, W') + b'
    W' = W · γ/√(σ²+ε)  (per output channel),   b' = (b − μ) · γ/√(σ²+ε) + β

The folded W', b' are computed by two tiny nodes (``bn_fold_weight``/``bn_fold_bias``)
at the start of every inference call, so the result stays right after parameters change.
Legal when the conv output feeds only the BatchNorm; the BN's fused activation moves to
the conv.  Inference graphs only.
"""
from __future__ import annotations

from ..ir import Graph, Node, Value, freeze_attrs


def fold_bn(g: Graph) -> Graph:
    consumers = g.consumers()
    producers = g.producers()
    values = dict(g.values)
    out_nodes: list[Node] = []
    replaced: dict[str, list[Node]] = {}
    drop: set[str] = set()
    for n in g.nodes:
        if n.op != "batchnorm" or n.phase != "fwd":
            continue
        x, gamma, beta, mean, var = n.inputs
        conv = producers.get(x)
        if conv is None or conv.op != "conv2d" or conv.a.get("act") != "none":
            continue
        if len(consumers.get(x, [])) != 1 or x in g.outputs:
            continue
        w, b = conv.inputs[1], conv.inputs[2]
        wf, bf = f"{conv.id}.wfold", f"{conv.id}.bfold"
        cout = values[w].shape[0]
        values[wf] = Value(wf, values[w].shape, "float", "act")
        values[bf] = Value(bf, (cout,), "float", "act")
        eps = {"eps": n.a["eps"]}
        pre = [Node(f"{conv.id}.foldw", "bn_fold_weight", (w, gamma, var), (wf,), freeze_attrs(eps), conv.layer),
               Node(f"{conv.id}.foldb", "bn_fold_bias", (b, gamma, beta, mean, var), (bf,), freeze_attrs(eps), conv.layer)]
        new_conv = Node(conv.id, "conv2d", (conv.inputs[0], wf, bf), n.outputs,
                        conv.with_attrs(act=n.a.get("act", "none")).attrs, conv.layer + "+" + n.layer, "fwd")
        replaced[conv.id] = pre + [new_conv]
        drop.add(n.id)
    if not drop:
        return g
    for n in g.nodes:
        if n.id in drop:
            continue
        out_nodes.extend(replaced.get(n.id, [n]))
    used = {i for n in out_nodes for i in n.inputs if i} | {o for n in out_nodes for o in n.outputs if o}
    values = {k: v for k, v in values.items() if k in used or v.kind in ("input", "target", "param", "buffer")}
    return g.replace(nodes=tuple(out_nodes), values=values)
