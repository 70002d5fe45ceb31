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


def step_listing(g: Graph, mode: str, dtype: str, fwd_call, bwd_call, fill_call) -> dict:
    """Walk a planned graph once and return the template variables of a step module.

    Shared by the CPU and CUDA printers, which differ only in how one call is spelled:
    ``fwd_call(op, args, train)`` with args = "ins, out, saved, ws, attrs" and train a
    Python expression; ``bwd_call(op, args)`` with args = "ins, y, saved, dy, grads, ws,
    attrs"; ``fill_call(out, value)``.  Everything printed comes from ``safe_literal``,
    identifiers checked against ``IDENT`` and tensor indices.
    """
    from ..ops import OPS
    slots = tensor_table(g)
    ix = {s.key: s.idx for s in slots}
    T = lambda name: "None" if name is None else f"t{ix[name]}"
    L = lambda names: "[" + ", ".join(T(i) for i in names) + "]"
    ops_used = sorted({n.op for n in g.nodes if n.op in OPS and n.op != "fill"})
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

    def sub(nid: str, kind: str, keys) -> str:
        """The dict literal {key: t<k>} of node ``nid``'s saved tensors or workspace."""
        return D(_dict_literal({k: f"t{ix[f'{nid}/{kind}/{k}']}" for k in keys}))

    fwd, fwd_train, bwd = [], [], []
    for n in g.nodes:
        if n.op == "reshape":
            continue   # views are bound once (compiler.net._allocate)
        if n.op == "fill":
            bwd.append(fill_call(T(n.outputs[0]), safe_literal(float(n.a["value"]))))
            continue
        op = OPS[n.op]
        a = {k: v for k, v in n.attrs if k != "of"}
        A = D(_dict_literal({k: safe_literal(v) for k, v in a.items()}))
        fin = n.inputs[:-2] if n.phase == "bwd" else n.inputs
        shapes = [g.values[i].shape if i else None for i in fin]
        W = sub(n.id, "ws", op.workspace(shapes, a))
        if n.phase == "fwd":
            args = f"{L(n.inputs)}, {T(n.outputs[0])}, {sub(n.id, 'saved', op.saved_specs(shapes, a))}, {W}, {A}"
            if n.layer != "loss":       # the loss nodes (and the sum of weighted heads) need targets
                fwd.append(fwd_call(n.op, args, "train"))
            fwd_train.append(fwd_call(n.op, args, "True"))
        elif n.phase == "bwd":
            S = sub(n.a["of"], "saved", op.saved_specs(shapes, a))
            bwd.append(bwd_call(n.op, f"{L(fin)}, {T(n.inputs[-2])}, {S}, {T(n.inputs[-1])}, "
                                      f"{L(n.outputs)}, {W}, {A}"))
        elif n.phase == "acc":
            bwd.append(fwd_call(n.op, f"{L(n.inputs)}, {T(n.outputs[0])}, {D('{}')}, {W}, {A}", "False"))
    net_outs = [o for o in g.outputs if o != "loss"]
    outputs = T(net_outs[0]) if len(net_outs) == 1 else "(" + ", ".join(T(o) for o in net_outs) + ",)"
    plan = g.meta.get("plan", {})
    itemsize = 4 if dtype == "float32" else 8
    return dict(graph_name=g.name if IDENT.match(g.name) else "net", mode=mode,
                batch=g.meta.get("batch_size"), dtype=dtype, tensors=slots, ops_used=ops_used,
                dicts=dicts, forward_lines=fwd, forward_train_lines=fwd_train, backward_lines=bwd,
                outputs=outputs, dloss=ix.get("dloss", 0), loss=ix.get("loss", 0),
                arena_bytes=plan.get("arena_size", 0) * itemsize,
                unplanned_bytes=plan.get("unplanned", 0) * itemsize)


def print_step_module(g: Graph, mode: str, dtype: str) -> tuple[str, list[TensorSlot]]:
    """-> (source, slots) of the CPU step module of one planned graph."""
    v = step_listing(g, mode, dtype,
                     fwd_call=lambda op, args, train: f"op_{op}.forward({args}, {train}, rng)",
                     bwd_call=lambda op, args: f"op_{op}.backward({args})",
                     fill_call=lambda out, value: f"{out}.fill({value})")
    v["forward_lines"] = v["forward_lines"] or ["pass"]
    return _env.get_template("step_cpu.py.j2").render(**v), v["tensors"]
