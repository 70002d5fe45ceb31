"""The IR: a static computation graph, frozen nodes in topological order.

A ``Graph`` holds ``values`` (tensors: name -> ``Value`` with shape incl. batch, dtype and
kind) and ``nodes`` (each one op call: op name, input and output value names, static
attrs, the spec layer it came from, and its phase).  Passes are pure ``Graph -> Graph``
functions (``compiler/passes``); ``check_graph`` verifies the invariants after each.

Value kinds:
  input, target          fed by the caller each step
  param, buffer          persistent (parameter arena / BatchNorm running stats)
  act                    forward activations (memory-planned)
  grad                   gradients of activations (memory-planned)
  pgrad                  gradients of parameters (the persistent gradient arena)
  loss                   the scalar loss, shape (1,)
Node phases: "fwd" (forward op), "bwd" (the VJP of forward node ``attrs['of']``), "acc"
(summing gradient contributions where a value fans out), "view" (reshape, no kernel).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterable

import numpy as np

Shape = tuple[int, ...]
VALUE_KINDS = ("input", "target", "param", "buffer", "act", "grad", "pgrad", "loss")
PHASES = ("fwd", "bwd", "acc", "view")


@dataclass(frozen=True)
class Value:
    name: str
    shape: Shape
    dtype: str = "float"      # "float" (the net's float type) | "int64"
    kind: str = "act"

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1


@dataclass(frozen=True)
class Node:
    id: str                       # unique, e.g. "n7" (forward) or "n7.vjp"
    op: str                       # key in compiler.ops.OPS, or "reshape"
    inputs: tuple[str | None, ...]
    outputs: tuple[str | None, ...]
    attrs: tuple[tuple[str, Any], ...] = ()   # canonical static attributes, sorted by key
    layer: str = ""               # the spec layer it implements
    phase: str = "fwd"

    @property
    def a(self) -> dict:
        return dict(self.attrs)

    def with_attrs(self, **kw) -> "Node":
        d = self.a
        d.update(kw)
        return replace(self, attrs=freeze_attrs(d))


def freeze_attrs(d: dict) -> tuple[tuple[str, Any], ...]:
    def fz(v):
        if isinstance(v, list):
            return tuple(fz(e) for e in v)
        if isinstance(v, dict):
            return freeze_attrs(v)
        return v
    return tuple(sorted((k, fz(v)) for k, v in d.items()))


@dataclass(frozen=True)
class Graph:
    name: str
    values: dict[str, Value]
    nodes: tuple[Node, ...]
    inputs: tuple[str, ...]                 # ("x",) or ("x", "target")
    outputs: tuple[str, ...]                # net outputs (and "loss" when present)
    param_grads: dict[str, str] = field(default_factory=dict)   # param value -> its pgrad value
    meta: dict[str, Any] = field(default_factory=dict)

    def producers(self) -> dict[str, Node]:
        return {o: n for n in self.nodes for o in n.outputs if o is not None}

    def consumers(self) -> dict[str, list[Node]]:
        c: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                if i is not None:
                    c.setdefault(i, []).append(n)
        return c

    def node(self, nid: str) -> Node:
        for n in self.nodes:
            if n.id == nid:
                return n
        raise KeyError(nid)

    def replace(self, **kw) -> "Graph":
        return replace(self, **kw)


class GraphError(Exception):
    pass


def check_graph(g: Graph) -> Graph:
    """Verify invariants: unique node ids; every input defined before use (topological
    order); each value produced at most once; persistent values never produced by fwd
    nodes (except in-place buffer updates, which are not outputs); outputs exist."""
    from .ops import OPS
    defined = {v.name for v in g.values.values() if v.kind in ("input", "target", "param", "buffer")}
    seen_ids: set[str] = set()
    for n in g.nodes:
        if n.id in seen_ids:
            raise GraphError(f"duplicate node id {n.id}")
        seen_ids.add(n.id)
        if n.phase not in PHASES:
            raise GraphError(f"{n.id}: bad phase {n.phase}")
        if n.op not in ("reshape", "fill") and n.op not in OPS:
            raise GraphError(f"{n.id}: unknown op {n.op}")
        for i in n.inputs:
            if i is None:
                continue
            if i not in g.values:
                raise GraphError(f"{n.id} ({n.op}): input {i} has no Value")
            if i not in defined:
                raise GraphError(f"{n.id} ({n.op}): input {i} used before it is defined")
        for o in n.outputs:
            if o is None:
                continue
            if o not in g.values:
                raise GraphError(f"{n.id}: output {o} has no Value")
            if o in defined:
                raise GraphError(f"{n.id}: value {o} produced twice")
            defined.add(o)
    for o in g.outputs:
        if o not in defined:
            raise GraphError(f"graph output {o} is never produced")
    for p, gv in g.param_grads.items():
        if g.values[gv].kind != "pgrad" or g.values[gv].shape != g.values[p].shape:
            raise GraphError(f"gradient {gv} of {p} has the wrong kind or shape")
    return g


def format_graph(g: Graph) -> str:
    """A readable listing: one line per node, `out[shape] = op(inputs) {attrs}  # layer`."""
    def sh(v):
        return "x".join(map(str, g.values[v].shape)) if v else "-"
    lines = [f"graph {g.name}  inputs=({', '.join(g.inputs)})  outputs=({', '.join(g.outputs)})"]
    persist = [v for v in g.values.values() if v.kind in ("param", "buffer")]
    if persist:
        lines.append(f"  # {len(persist)} persistent tensors, "
                     f"{sum(v.size for v in persist if v.kind == 'param'):,} parameters")
    for n in g.nodes:
        outs = ", ".join(f"{o}[{sh(o)}]" if o else "_" for o in n.outputs)
        ins = ", ".join(i if i else "_" for i in n.inputs)
        attrs = " ".join(f"{k}={v}" for k, v in n.attrs if k != "of")
        tag = {"fwd": "", "bwd": "∂", "acc": "Σ", "view": "view "}[n.phase]
        lines.append(f"  {n.id:>10}: {outs} = {tag}{n.op}({ins})" + (f" {{{attrs}}}" if attrs else "")
                     + (f"  # {n.layer}" if n.layer else ""))
    return "\n".join(lines) + "\n"
