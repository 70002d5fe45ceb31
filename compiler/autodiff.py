"""Reverse-mode autodiff on the IR: forward graph -> forward + backward graph.

A reverse walk over the forward nodes emits, for each node that some gradient flows
through, one VJP node (phase "bwd", same op, ``of`` = the forward node id).  The VJP
rule of an op lives with the op (``compiler/ops``: ``ref_backward`` beside the kernel
``backward``); here we only wire values:

    vjp node inputs  = forward inputs + (forward output y, incoming gradient dy)
    vjp node outputs = one gradient per forward input, None where none is needed
                       (the net input, targets, buffers, frozen parameters)

Where a value fans out (residual shortcuts, U-Net skips) its gradient contributions are
summed by an "acc" node (op ``add``).  A parameter's final gradient is written straight
into its slot of the gradient arena (kind ``pgrad``).
"""
from __future__ import annotations

from .ir import Graph, Node, Value, check_graph, freeze_attrs


def grad_name(v: str) -> str:
    return f"d[{v}]"


def differentiate(g: Graph, frozen: set[str] = frozenset()) -> Graph:
    """Append the backward pass of ``g`` (which must output "loss") and return the new graph.
    ``frozen``: parameter names that get no gradient."""
    if "loss" not in g.outputs:
        raise ValueError("differentiate needs a graph with a loss output")
    values = dict(g.values)
    trainable = {v.name for v in g.values.values() if v.kind == "param" and v.name not in frozen}

    # which values carry a gradient: produced (transitively) from a trainable parameter
    needs: set[str] = set(trainable)
    for n in g.nodes:
        if any(i in needs for i in n.inputs if i):
            needs.update(o for o in n.outputs if o)

    contributions: dict[str, list[str]] = {}
    nodes: list[Node] = list(g.nodes)
    counter = [0]

    def fresh(shape, kind="grad") -> str:
        counter[0] += 1
        name = f"g{counter[0]}"
        values[name] = Value(name, shape, "float", kind)
        return name

    # seed: d loss / d loss = 1 (the value "dloss" is filled with ones by the runtime)
    values["dloss"] = Value("dloss", (1,), "float", "input")
    contributions["loss"] = ["dloss"]

    def total_grad(v: str, layer: str) -> str | None:
        parts = contributions.get(v)
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        out = fresh(values[v].shape)
        nodes.append(Node(f"acc[{v}]", "add", tuple(parts), (out,), (), layer, "acc"))
        return out

    for n in reversed(g.nodes):
        y = n.outputs[0]
        if y not in needs:
            continue
        dy = total_grad(y, n.layer)
        if dy is None:
            continue
        outs: list[str | None] = []
        for i in n.inputs:
            if i is None or i not in needs:
                outs.append(None)
                continue
            gi = fresh(values[i].shape)
            contributions.setdefault(i, []).append(gi)
            outs.append(gi)
        if all(o is None for o in outs):
            continue
        if n.phase == "view":
            nodes.append(Node(f"{n.id}.vjp", "reshape", (dy,), tuple(outs),
                              freeze_attrs({"shape": values[n.inputs[0]].shape}), n.layer, "view"))
            continue
        attrs = dict(n.attrs)
        attrs["of"] = n.id
        nodes.append(Node(f"{n.id}.vjp", n.op, (*n.inputs, y, dy), tuple(outs),
                          freeze_attrs(attrs), n.layer, "bwd"))

    # parameter gradients: write the (summed) contribution into the pgrad slot
    param_grads: dict[str, str] = {}
    for p in sorted(trainable, key=list(g.values).index):
        pg = grad_name(p)
        values[pg] = Value(pg, values[p].shape, "float", "pgrad")
        param_grads[p] = pg
        parts = contributions.get(p, [])
        if len(parts) == 1:
            _rename(nodes, parts[0], pg)
            del values[parts[0]]
        elif parts:
            nodes.append(Node(f"acc[{p}]", "add", tuple(parts), (pg,), (), "", "acc"))
        else:   # parameter that does not influence the loss: its gradient is zero
            nodes.append(Node(f"zero[{p}]", "fill", (), (pg,), freeze_attrs({"value": 0.0}), "", "acc"))
    return check_graph(g.replace(values=values, nodes=tuple(nodes), param_grads=param_grads))


def _rename(nodes: list[Node], old: str, new: str) -> None:
    for k, n in enumerate(nodes):
        if old in n.outputs or old in n.inputs:
            nodes[k] = Node(n.id, n.op, tuple(new if i == old else i for i in n.inputs),
                            tuple(new if o == old else o for o in n.outputs), n.attrs, n.layer, n.phase)
