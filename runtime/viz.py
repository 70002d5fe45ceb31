"""Pictures of a net and of what it learned (matplotlib, Agg; graphviz ``dot`` when installed).

* ``draw_net(report, path)``: the layer graph with branches -- one box per layer (name, type,
  parameter count), edges labelled with the tensor shape they carry.  With graphviz's
  ``dot`` on PATH it writes DOT and renders it; otherwise a pure-Python layered layout
  (depth = longest path from the input, boxes spread per depth) drawn with matplotlib.
  SVG or PNG by the file extension.
* ``plot_filters(weight, path)``: the first layer's filters as a grid (RGB when the layer
  sees 3 channels, grey otherwise; each filter min-max scaled on its own) -- the seeds'
  "good training: learned filters exhibit structure".
* ``plot_activations({layer: (C, H, W)}, path)``: activation maps of chosen layers for one
  input (a row per layer, up to ``max_channels`` maps each).
* ``occlusion_map(predict, x, label)`` + ``plot_occlusion``: Zeiler & Fergus (2014) as in the
  seeds: slide a grey patch over the image and record how much the true class's
  probability drops at each position.
* ``plot_confusion(cm, path)``: the confusion matrix with counts.
"""
from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def _fmt_shape(s) -> str:
    return "x".join(str(int(d)) for d in s)


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100 if path.suffix.lower() == ".png" else None, bbox_inches="tight")
    _plt().close(fig)
    return path


# ----------------------------------------------------------------------------- the net

def _graph(report):
    """(nodes [(name, label)], edges [(src, dst, shape label)]) of a checked net."""
    nodes = [("input", f"input\n{_fmt_shape(report.input_shape)}")]
    shapes = {"input": report.input_shape}
    edges = []
    for L in report.layers:
        p = f"\n{L.params:,} params" if L.params else ""
        nodes.append((L.name, f"{L.name}\n{L.type}{p}"))
        for i in L.inputs:
            edges.append((i, L.name, _fmt_shape(shapes[i])))
        shapes[L.name] = L.output_shape
    for o in report.outputs:
        nodes.append((f"__out_{o}", "output"))
        edges.append((o, f"__out_{o}", _fmt_shape(shapes[o])))
    return nodes, edges


# Layers drawn inside the box of the layer feeding them when the net is big (COMPACT_AT):
# a conv-bn-relu chain becomes one box, so ResNet-20 needs ~30 rows instead of ~70.
_DECOR = {"batchnorm", "relu", "leaky_relu", "prelu", "elu", "gelu", "sigmoid", "tanh",
          "softmax", "dropout", "flatten", "groupnorm", "layernorm", "instancenorm", "lrn"}
_SHORT = {"batchnorm": "bn", "global_avgpool": "gap", "flatten": "flat"}
COMPACT_AT = 40


def _compact_graph(report):
    """Like ``_graph`` but every single-input ``_DECOR`` layer whose producer feeds only it
    joins the producer's box (name of the first layer, the types joined by '+', the
    parameters summed).  Edges keep the shape they carry."""
    uses: dict[str, int] = {}
    for L in report.layers:
        for i in L.inputs:
            uses[i] = uses.get(i, 0) + 1
    for o in report.outputs:
        uses[o] = uses.get(o, 0) + 1
    head, groups, shapes = {"input": "input"}, {}, {"input": report.input_shape}
    for L in report.layers:
        src = L.inputs[0] if len(L.inputs) == 1 else None
        if L.type in _DECOR and src in head and src != "input" and uses.get(src) == 1:
            head[L.name] = head[src]
            groups[head[src]].append(L)
        else:
            head[L.name] = L.name
            groups[L.name] = [L]
        shapes[L.name] = L.output_shape
    nodes = [("input", f"input\n{_fmt_shape(report.input_shape)}")]
    edges = []
    for h, members in groups.items():
        kinds = "+".join(_SHORT.get(m.type, m.type) for m in members)
        n = sum(m.params for m in members)
        nodes.append((h, f"{h}\n{kinds}" + (f"\n{n:,} params" if n else "")))
        for i in members[0].inputs:
            edges.append((head[i], h, _fmt_shape(shapes[i])))
    for o in report.outputs:
        nodes.append((f"__out_{o}", "output"))
        edges.append((head[o], f"__out_{o}", _fmt_shape(shapes[o])))
    return nodes, edges


def to_dot(report) -> str:
    nodes, edges = _graph(report)
    q = lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'  # noqa: E731
    out = [f"digraph {q(report.name)} {{", "  rankdir=TB; node [shape=box, style=rounded, fontsize=10];",
           "  edge [fontsize=8];"]
    out += [f"  {q(n)} [label={q(lab)}];" for n, lab in nodes]
    out += [f"  {q(a)} -> {q(b)} [label={q(s)}];" for a, b, s in edges]
    return "\n".join(out + ["}"]) + "\n"


def _layout(nodes, edges):
    """Layered layout: depth = longest path from the input, then pushed down to just above
    its first consumer; x spread per depth, ordered by the mean x of the parents (one
    barycentre sweep keeps branches apart)."""
    parents: dict[str, list[str]] = {}
    for a, b, _ in edges:
        parents.setdefault(b, []).append(a)
    depth = {}
    for n, _ in nodes:   # nodes are in topological order
        depth[n] = 1 + max((depth[p] for p in parents.get(n, [])), default=-1)
    children: dict[str, list[str]] = {}
    for a, b, _ in edges:
        children.setdefault(a, []).append(b)
    for n, _ in reversed(nodes):   # then as late as possible: a side branch (a shortcut
        if children.get(n) and n != "input":   # projection) sits beside its consumer's input
            depth[n] = max(depth[n], min(depth[c] for c in children[n]) - 1)
    rows: dict[int, list[str]] = {}
    for n, _ in nodes:
        rows.setdefault(depth[n], []).append(n)
    xpos = {}
    for d in sorted(rows):
        row = rows[d]
        if d:
            row.sort(key=lambda n: np.mean([xpos[p] for p in parents.get(n, [])] or [0.0]))
        for k, n in enumerate(row):
            xpos[n] = k - (len(row) - 1) / 2.0
    return {n: (xpos[n], -depth[n]) for n, _ in nodes}, max(len(r) for r in rows.values()), len(rows)


def draw_net(report, path, engine: str = "auto") -> Path:
    """Draw the net of a checked Report into ``path`` (.svg or .png).  engine: "auto"
    (dot when installed), "dot" or "matplotlib"."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("svg", "png"):
        raise ValueError(f"{path}: the picture must be .svg or .png")
    if engine in ("auto", "dot") and shutil.which("dot"):
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dot", f"-T{fmt}", "-o", str(path)], input=to_dot(report).encode(),
                       check=True, capture_output=True)
        return path
    if engine == "dot":
        raise RuntimeError("graphviz `dot` is not installed")
    plt = _plt()
    compact = len(report.layers) > COMPACT_AT
    nodes, edges = (_compact_graph if compact else _graph)(report)
    pos, width, height = _layout(nodes, edges)
    fig, ax = plt.subplots(figsize=(max(4.0, 2.4 * width), max(3.0, 0.9 * height)))
    for a, b, s in edges:
        (x0, y0), (x1, y1) = pos[a], pos[b]
        skip = x0 == x1 and y0 - y1 > 1      # a skip connection would run over the boxes between
        long = x0 != x1 and y0 - y1 > 1     # a side branch passing the row between: bow outwards
        rad = 0.6 if skip else (-0.3 if x1 > x0 else 0.3) if long else 0.0 if x0 == x1 else 0.15
        ax.annotate("", (x1, y1 + 0.22), (x0, y0 - 0.22),      # skips in blue, bowed left
                    arrowprops=dict(arrowstyle="->", color="#3b6fb6" if skip else "0.4", lw=0.9,
                                    connectionstyle=f"arc3,rad={rad}"))
        tx = (x0 + x1) / 2 + (-0.5 if skip else 0.05)
        if long:
            tx = max(x0, x1) + 0.05 if x1 > x0 else min(x0, x1) - 0.05
        ax.text(tx, (y0 + y1) / 2, s, fontsize=6, color="#3b6fb6" if skip else "0.3",
                va="center", ha="right" if skip or (long and x1 < x0) else "left")
    for n, lab in nodes:
        x, y = pos[n]
        color = "#dde8f7" if n == "input" or n.startswith("__out_") else "#f7f2dd"
        ax.text(x, y, lab, ha="center", va="center", fontsize=7,
                bbox=dict(boxstyle="round,pad=0.3", fc=color, ec="0.3", lw=0.8))
    ax.set_xlim(-width / 2 - 0.5, width / 2 + 0.5)
    ax.set_ylim(-height + 0.4, 0.6)
    ax.axis("off")
    ax.set_title(f"{report.name}: {report.total_params:,} parameters, {report.total_macs:,} MACs"
                 + ("\n(bn / activation layers drawn in the box of the layer feeding them)"
                    if compact else ""), fontsize=9)
    return _save(fig, path)


# ----------------------------------------------------------------------------- what it learned

def _unit(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    lo, hi = np.nanmin(a), np.nanmax(a)
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def _image(x: np.ndarray):
    """(C, H, W) -> something imshow draws: (H, W) grey or (H, W, 3) in [0, 1]."""
    x = np.asarray(x)
    if x.ndim == 3 and x.shape[0] == 3:
        return _unit(np.transpose(x, (1, 2, 0)))
    return _unit(x[0] if x.ndim == 3 else x)


def plot_filters(weight: np.ndarray, path, title: str = "first-layer filters") -> Path:
    """weight (O, C, kh, kw) -> a grid of O tiles (C == 3: colour; else the mean over C)."""
    w = np.asarray(weight)
    if w.ndim != 4:
        raise ValueError(f"filters must be (O, C, kh, kw), got shape {w.shape}")
    plt = _plt()
    O = w.shape[0]
    cols = min(O, 8)
    rows = math.ceil(O / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols, 1.2 * rows + 0.4), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < O:
            f = w[k] if w.shape[1] == 3 else w[k].mean(axis=0, keepdims=True)
            ax.imshow(_image(f), cmap="gray", interpolation="nearest")
    fig.suptitle(f"{title} {tuple(w.shape)}", fontsize=9)
    return _save(fig, path)


def plot_activations(acts: Mapping[str, np.ndarray], path, max_channels: int = 16,
                     image: np.ndarray | None = None) -> Path:
    """acts: {layer: (C, H, W) or (F,)} of one input -> one row per layer."""
    plt = _plt()
    items = list(acts.items())
    widest = max((np.asarray(a).shape[0] if np.ndim(a) > 1 else 1) for _, a in items)
    cols = min(max_channels, widest) + (1 if image is not None else 0)
    fig, axes = plt.subplots(len(items), cols, figsize=(1.1 * cols, 1.3 * len(items) + 0.3),
                             squeeze=False)
    for r, (name, a) in enumerate(items):
        a = np.asarray(a)
        row = axes[r]
        for ax in row:
            ax.axis("off")
        if image is not None:
            row[0].imshow(_image(image), cmap="gray", interpolation="nearest")
            if r == 0:
                row[0].set_title("input", fontsize=8)
            row = row[1:]
        if a.ndim == 1:      # a vector: one bar-like strip
            row[0].imshow(_unit(a)[None, :], cmap="viridis", aspect="auto")
        else:
            for c in range(min(a.shape[0], max_channels)):
                row[c].imshow(a[c], cmap="viridis", interpolation="nearest")
        row[0].set_title(f"{name} {_fmt_shape(a.shape)}" + (f" (first {max_channels} maps)"
                         if a.ndim > 1 and a.shape[0] > max_channels else ""), fontsize=8, loc="left")
    return _save(fig, path)


def occlusion_map(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, label: int,
                  patch: int | None = None, stride: int | None = None, fill: float = 0.0,
                  chunk: int = 256):
    """Occlusion saliency of one image x (C, H, W) for class ``label``.

    ``predict(batch) -> logits (B, K)``; a square patch of ``fill`` (0: the mean grey after
    standardisation) slides with ``stride``.  Returns (heat (H, W), base probability): at
    each pixel, the mean over the patches covering it of (base probability - occluded
    probability); positive where hiding the pixel hurts the class."""
    C, H, W = x.shape
    patch = patch or max(1, min(H, W) // 4)
    stride = stride or max(1, patch // 2)
    ys = list(range(0, max(H - patch, 0) + 1, stride))
    xs = list(range(0, max(W - patch, 0) + 1, stride))

    def prob(batch):
        z = np.asarray(predict(batch), np.float64).reshape(len(batch), -1)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(axis=1, keepdims=True))[:, label]

    base = float(prob(x[None])[0])
    pos = [(i, j) for i in ys for j in xs]
    out = np.empty(len(pos))
    for s in range(0, len(pos), chunk):
        part = pos[s:s + chunk]
        b = np.repeat(x[None], len(part), axis=0)
        for k, (i, j) in enumerate(part):
            b[k, :, i:i + patch, j:j + patch] = fill
        out[s:s + len(part)] = prob(b)
    heat, count = np.zeros((H, W)), np.zeros((H, W))
    for (i, j), p in zip(pos, out):
        heat[i:i + patch, j:j + patch] += base - p
        count[i:i + patch, j:j + patch] += 1
    return heat / np.maximum(count, 1), base


def plot_occlusion(x: np.ndarray, drop: np.ndarray, path, label=None, base: float | None = None) -> Path:
    plt = _plt()
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(6.4, 3.2))
    a0.imshow(_image(x), cmap="gray")
    a0.set_title(f"input (class {label})" if label is not None else "input", fontsize=8)
    lim = max(float(np.abs(drop).max()), 1e-6)
    im = a1.imshow(drop, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    a1.set_title("drop of p(true class) when occluded" + (f"\n(p = {base:.3f} unoccluded)" if base is not None else ""),
                 fontsize=8)
    fig.colorbar(im, ax=a1, fraction=0.046)
    for a in (a0, a1):
        a.axis("off")
    return _save(fig, path)


def plot_confusion(cm: np.ndarray, path, class_names: Sequence[str] | None = None,
                   title: str = "confusion matrix") -> Path:
    cm = np.asarray(cm)
    k = cm.shape[0]
    names = list(class_names or [str(i) for i in range(k)])
    plt = _plt()
    s = max(3.5, 0.45 * k + 1.5)
    fig, ax = plt.subplots(figsize=(s, s))
    ax.imshow(cm, cmap="Blues")
    fs = 9 if k <= 12 else 7 if k <= 20 else 6          # counts readable at README width
    ax.set_xticks(range(k), names, fontsize=fs, rotation=90 if k > 10 else 0)
    ax.set_yticks(range(k), names, fontsize=fs)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    hi = cm.max() if cm.size else 0
    if k <= 30:
        for i in range(k):
            for j in range(k):
                v = int(cm[i, j])        # zeros faint, so the mistakes stand out
                ax.text(j, i, str(v), ha="center", va="center", fontsize=fs,
                        color="white" if cm[i, j] > hi / 2 else "black" if v else "0.75")
    acc = np.trace(cm) / max(cm.sum(), 1)
    ax.set_title(f"{title} (accuracy {acc:.3f})", fontsize=9)
    return _save(fig, path)
