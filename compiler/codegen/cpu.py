"""CPU printer: a planned IR graph -> the source of a generated step module.

All decisions are made here in Python; the jinja2 template only prints.  No name or
string from a spec reaches the generated source: tensors are referred to by index
(``t17 = V[17]``), op names are registry keys checked against a strict identifier rule,
and attributes are printed from parsed numbers, bools, tuples and identifier strings only
(``safe_literal``).  Same graph -> same source, byte for byte.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..ir import Graph
from .kernel_cache import _env

# \Z, not $: "$" also matches before a trailing newline ("relu\n" would pass)
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
COMMENT_SAFE = re.compile(r"[A-Za-z0-9_.\[\]/:+\- ]{0,120}\Z")


class UnsafeValue(ValueError):
    pass


def safe_literal(v) -> str:
    """Python source for a static attribute value, refusing anything but plain data."""
    if v is None or isinstance(v, bool):
        return repr(v)
    if isinstance(v, (int, np.integer)):
        return repr(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if f != f or f in (float("inf"), float("-inf")):
            return f"float({str(f)!r})"
        return repr(f)
    if isinstance(v, str):
        if not IDENT.match(v):
            raise UnsafeValue(f"attribute string {v!r} is not a plain identifier")
        return repr(v)
    if isinstance(v, (tuple, list)):
        inner = ", ".join(safe_literal(e) for e in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    raise UnsafeValue(f"attribute value of type {type(v).__name__} cannot be printed")


def _dict_literal(d: dict) -> str:
    parts = []
    for k in sorted(d):
        if not IDENT.match(k):
            raise UnsafeValue(f"attribute name {k!r} is not a plain identifier")
        parts.append(f"{k!r}: {d[k]}")
    return "{" + ", ".join(parts) + "}"


@dataclass
class TensorSlot:
    idx: int
    key: str          # value name, or "<node>/saved/<k>", "<node>/ws/<k>"
    shape: tuple
    dtype: str
    comment: str


def tensor_table(g: Graph) -> list[TensorSlot]:
    """Every array the step touches, in a deterministic order (the V list)."""
    from ..ops import OPS
    keys: list[tuple[str, tuple, str]] = []
    seen = set()

    def add(key, shape, dtype):
        if key not in seen:
            seen.add(key)
            keys.append((key, tuple(shape), dtype))

    for v in g.values.values():
        if v.kind in ("input", "target", "param", "buffer", "pgrad", "loss"):
            add(v.name, v.shape, v.dtype)
    for n in g.nodes:
        for name in (*n.inputs, *n.outputs):
            if name:
                v = g.values[name]
                add(name, v.shape, v.dtype)
        if n.op in OPS:
            op = OPS[n.op]
            a = {k: v for k, v in n.attrs if k != "of"}
            fin = n.inputs if n.phase != "bwd" else n.inputs[:-2]
            shapes = [g.values[i].shape if i else None for i in fin]
            if n.phase == "fwd":
                for k, (shp, dt) in op.saved_specs(shapes, a).items():
                    add(f"{n.id}/saved/{k}", shp, dt)
            if n.phase in ("fwd", "bwd", "acc"):
                for k, shp in op.workspace(shapes, a).items():
                    add(f"{n.id}/ws/{k}", shp, "float")
    out = []
    for k, (key, shape, dtype) in enumerate(keys):
        c = key if COMMENT_SAFE.match(key) else "?"
        out.append(TensorSlot(k, key, shape, dtype, f"{c} {list(shape)} {dtype}"))
    return out


def print_step_module(g: Graph, mode: str, dtype: str) -> tuple[str, list[TensorSlot]]:
    from ..ops import OPS
    slots = tensor_table(g)
    ix = {s.key: s.idx for s in slots}
    T = lambda name: "None" if name is None else f"t{ix[name]}"
    ops_used = sorted({n.op for n in g.nodes if n.op in OPS})
    for o in ops_used:
        if not IDENT.match(o):
            raise UnsafeValue(f"op name {o!r}")
    dicts: list[dict] = []
    dict_names: dict[str, str] = {}

    def D(text: str) -> str:
        if text not in dict_names:
            dict_names[text] = f"D{len(dict_names)}"
            dicts.append({"name": dict_names[text], "text": text})
        return dict_names[text]

    def saved_dict(nid, shapes, attrs, op) -> str:
        items = {k: f"t{ix[f'{nid}/saved/{k}']}" for k in op.saved_specs(shapes, attrs)}
        return D(_dict_literal(items))

    def ws_dict(nid, shapes, attrs, op) -> str:
        items = {k: f"t{ix[f'{nid}/ws/{k}']}" for k in op.workspace(shapes, attrs)}
        return D(_dict_literal(items))

    fwd, fwd_train, bwd = [], [], []
    for n in g.nodes:
        if n.op == "reshape":
            continue   # views are bound once (see bind_views in compiler.net)
        if n.op == "fill":
            bwd.append(f"{T(n.outputs[0])}.fill({safe_literal(float(n.a['value']))})")
            continue
        op = OPS[n.op]
        a = {k: v for k, v in n.attrs if k != "of"}
        A = D(_dict_literal({k: safe_literal(v) for k, v in a.items()}))
        if n.phase == "fwd":
            shapes = [g.values[i].shape if i else None for i in n.inputs]
            S, W = saved_dict(n.id, shapes, a, op), ws_dict(n.id, shapes, a, op)
            ins = "[" + ", ".join(T(i) for i in n.inputs) + "]"
            if n.id != "loss":
                fwd.append(f"op_{n.op}.forward({ins}, {T(n.outputs[0])}, {S}, {W}, {A}, train, rng)")
            fwd_train.append(f"op_{n.op}.forward({ins}, {T(n.outputs[0])}, {S}, {W}, {A}, True, rng)")
        elif n.phase == "bwd":
            fin = n.inputs[:-2]
            shapes = [g.values[i].shape if i else None for i in fin]
            S, W = saved_dict(n.a["of"], shapes, a, op), ws_dict(n.id, shapes, a, op)
            ins = "[" + ", ".join(T(i) for i in fin) + "]"
            outs = "[" + ", ".join(T(o) for o in n.outputs) + "]"
            bwd.append(f"op_{n.op}.backward({ins}, {T(n.inputs[-2])}, {S}, {T(n.inputs[-1])}, {outs}, {W}, {A})")
        elif n.phase == "acc":
            shapes = [g.values[i].shape for i in n.inputs]
            W = ws_dict(n.id, shapes, a, op)
            ins = "[" + ", ".join(T(i) for i in n.inputs) + "]"
            bwd.append(f"op_{n.op}.forward({ins}, {T(n.outputs[0])}, {D('{}')}, {W}, {A}, False, None)")
    net_outs = [o for o in g.outputs if o != "loss"]
    outputs = T(net_outs[0]) if len(net_outs) == 1 else "(" + ", ".join(T(o) for o in net_outs) + ",)"
    plan = g.meta.get("plan", {})
    itemsize = 4 if dtype == "float32" else 8
    src = _env.get_template("step_cpu.py.j2").render(
        graph_name=g.name if IDENT.match(g.name) else "net", mode=mode, batch=g.meta.get("batch_size"),
        dtype=dtype, tensors=slots, ops_used=ops_used, dicts=dicts,
        forward_lines=fwd or ["pass"], forward_train_lines=fwd_train, backward_lines=bwd,
        outputs=outputs, dloss=ix.get("dloss", 0), loss=ix.get("loss", 0),
        arena_bytes=plan.get("arena_size", 0) * itemsize,
        unplanned_bytes=plan.get("unplanned", 0) * itemsize)
    return src, slots
