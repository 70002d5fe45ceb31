"""Memory planning: liveness-based reuse of one float arena for every transient tensor.

Transients are activations, activation gradients, float tensors saved for backward and
per-node scratch (workspace).  Each gets a live interval [first write, last read] over
the node sequence (a tensor saved for backward lives until its VJP node; a reshape view
extends the life of the tensor it views).  Intervals are placed greedily, largest first,
at the lowest offset that does not overlap any placed tensor with an intersecting
interval (first-fit on a sorted offset list).  Two tensors live at the same node never
share bytes, so a kernel's outputs never alias its inputs.

Result (in ``graph.meta["plan"]``): ``offsets`` (name -> element offset), ``arena_size``
(elements), ``unplanned`` (sum of all transient sizes) and ``views`` (alias -> base).
Workspace and saved tensors are named ``<node id>/ws/<key>`` and ``<node id>/saved/<key>``.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph

ALIGN = 16  # elements (64 bytes for float32): keep every tensor cache-line aligned


def transient_specs(g: Graph) -> tuple[dict[str, int], dict[str, tuple[int, int]], dict[str, str]]:
    """(sizes, intervals, views) of every transient float tensor of ``g``."""
    from ..ops import OPS
    sizes: dict[str, int] = {}
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    views: dict[str, str] = {}
    index = {n.id: k for k, n in enumerate(g.nodes)}
    shapes = lambda names: [g.values[i].shape if i else None for i in names]

    def use(name, k):
        while name in views:
            name = views[name]
        if name in sizes:
            last[name] = max(last.get(name, k), k)

    for k, n in enumerate(g.nodes):
        if n.op == "reshape":
            views[n.outputs[0]] = n.inputs[0]
            use(n.inputs[0], k)
            continue
        for i in n.inputs:
            if i:
                use(i, k)
        for o in n.outputs:
            if o and g.values[o].kind in ("act", "grad"):
                sizes[o] = g.values[o].size
                first[o] = k
                last.setdefault(o, k)
        if n.op in OPS and n.op != "fill":
            op = OPS[n.op]
            fwd_inputs = n.inputs if n.phase != "bwd" else n.inputs[:len(n.inputs) - 2]
            for key, shp in op.workspace(shapes(fwd_inputs), {k2: v for k2, v in n.attrs if k2 != "of"}).items():
                name = f"{n.id}/ws/{key}"
                sizes[name] = int(np.prod(shp, dtype=np.int64))
                first[name] = last[name] = k
            if n.phase == "fwd":
                for key, (shp, dt) in op.saved_specs(shapes(n.inputs), n.a).items():
                    if dt == "float":
                        name = f"{n.id}/saved/{key}"
                        sizes[name] = int(np.prod(shp, dtype=np.int64))
                        first[name] = last[name] = k
            elif n.phase == "bwd":
                for key, (shp, dt) in op.saved_specs(shapes(fwd_inputs), n.a).items():
                    name = f"{n.a['of']}/saved/{key}"
                    if name in sizes:
                        last[name] = max(last[name], k)
    end = len(g.nodes)
    for o in g.outputs:
        use(o, end)
    return sizes, {v: (first[v], last[v]) for v in sizes}, views


def plan_memory(g: Graph) -> Graph:
    sizes, intervals, views = transient_specs(g)
    order = sorted(sizes, key=lambda v: (-sizes[v], intervals[v][0], v))
    placed: list[tuple[int, int, int, int]] = []   # (offset, end, t0, t1)
    offsets: dict[str, int] = {}
    for v in order:
        size = -(-sizes[v] // ALIGN) * ALIGN
        t0, t1 = intervals[v]
        clash = sorted((o, e) for o, e, a, b in placed if not (b < t0 or t1 < a))
        off = 0
        for o, e in clash:
            if off + size <= o:
                break
            off = max(off, e)
        offsets[v] = off
        placed.append((off, off + size, t0, t1))
    arena = max((e for _, e, _, _ in placed), default=0)
    plan = {"offsets": offsets, "arena_size": int(arena), "views": views,
            "unplanned": int(sum(sizes.values())), "intervals": intervals}
    meta = dict(g.meta)
    meta["plan"] = plan
    return g.replace(meta=meta)
