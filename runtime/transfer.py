"""Transfer learning: start a net from another run's weights; read features off a layer.

The seeds' recipe (Donahue et al. 2014, Razavian et al. 2014): train on a big dataset, then
on your small one either (very little data, similar images) train a linear classifier on
the features of a late layer -- ``extract_features`` + any linear model -- or (more data)
re-initialise the classifier and fine-tune the last few layers -- ``init_from_checkpoint``
with ``skip: [fc]`` and ``freeze_until(spec, "layer3")``; the more data, the more layers.

``init_from_checkpoint(net, source, skip)`` copies every tensor whose name and shape match
into the net (``net.params``/``net.buffers``) and returns a ``TransferReport`` listing what
was loaded, skipped (by the skip list), mis-shaped, missing from the checkpoint (left at
their fresh initialisation) and unexpected (in the checkpoint only).  Mis-shaped tensors of
layers not in the skip list are an error (``TransferError`` with every one named, both
shapes, and the hint to add the layer to ``init.skip``) unless ``mismatch="skip"``.
A skip entry names a layer (``fc``, ``layer4``) and covers its tensors and every layer below
it in the name hierarchy (``layer4.1.conv2.weight``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np


class TransferError(ValueError):
    """The checkpoint does not fit the net (the message names every mis-shaped tensor)."""


@dataclass
class TransferReport:
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)   # name, file, net
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def format(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors"]
        if self.skipped:
            lines.append(f"skipped (init.skip): {', '.join(self.skipped)}")
        for n, a, b in self.mismatched:
            lines.append(f"shape mismatch {n}: {a} in the checkpoint, {b} in the net (left fresh)")
        if self.missing:
            lines.append(f"not in the checkpoint (left fresh): {', '.join(self.missing)}")
        if self.unexpected:
            lines.append(f"in the checkpoint only (ignored): {', '.join(self.unexpected)}")
        return "\n".join(lines)


def _skipped(name: str, skip: Iterable[str]) -> bool:
    return any(name == s or name.startswith(s + ".") for s in skip)


def _weights(source) -> dict[str, np.ndarray]:
    """A checkpoint path, a checkpoint's arrays or a plain {name: array} -> {name: array}."""
    if isinstance(source, (str, Path)):
        # a netspec checkpoint (verified: a tampered one raises CheckpointError), a plain
        # .npz or a torch state_dict
        from .export import read_weights
        source = read_weights(Path(source))
    d = dict(source)
    if any(k.startswith(("params/", "buffers/")) for k in d):
        d = {k.split("/", 1)[1]: v for k, v in d.items() if k.startswith(("params/", "buffers/"))}
    return {k: np.asarray(v) for k, v in d.items() if not k.endswith("num_batches_tracked")}


def init_from_checkpoint(net, source, skip: Iterable[str] = (), mismatch: str = "error"
                         ) -> TransferReport:
    """Copy matching tensors of ``source`` (path / checkpoint arrays / {name: array}) into
    ``net`` (anything with ``params`` and ``buffers`` dicts of arrays).  ``mismatch``:
    "error" (raise TransferError listing them) or "skip" (report and leave them fresh)."""
    skip = list(skip or ())
    src = _weights(source)
    targets = {**net.params, **getattr(net, "buffers", {})}
    rep = TransferReport()
    for k, tgt in targets.items():
        if _skipped(k, skip):
            rep.skipped.append(k)
        elif k not in src:
            rep.missing.append(k)
        elif tuple(src[k].shape) != tuple(tgt.shape):
            rep.mismatched.append((k, tuple(src[k].shape), tuple(tgt.shape)))
    rep.unexpected = [k for k in src if k not in targets and not _skipped(k, skip)]
    if rep.mismatched and mismatch == "error":
        layers = sorted({n.rsplit(".", 1)[0] for n, _, _ in rep.mismatched})
        raise TransferError("the checkpoint does not fit the net: " + "; ".join(
            f"{n} is {a} in the checkpoint but {b} in the net" for n, a, b in rep.mismatched)
            + f" (to start these layers fresh, add them to init.skip: {layers})")
    bad = {n for n, _, _ in rep.mismatched}
    for k, tgt in targets.items():
        if k in src and k not in bad and not _skipped(k, skip):
            tgt[...] = src[k].astype(tgt.dtype, copy=False)
            rep.loaded.append(k)
    return rep


def apply_spec_init(net, spec, mismatch: str = "error") -> TransferReport | None:
    """Honour a spec's ``init: {checkpoint, skip}`` (the path relative to the spec file)."""
    init = getattr(spec, "init", None)
    if not init:
        return None
    from .data import spec_dir
    path, base = Path(init["checkpoint"]), spec_dir(spec)
    if not path.is_absolute() and base is not None:
        path = base / path
    return init_from_checkpoint(net, path, init.get("skip") or (), mismatch)


def freeze_until(spec, layer: str):
    """A copy of ``spec`` with ``freeze: true`` on every layer up to and including ``layer``
    (the seeds' "finetune a few layers": train only what comes after)."""
    names = [l.name for l in spec.layers]
    if layer not in names:
        raise TransferError(_unknown(layer, names))
    stop = names.index(layer)
    layers = [dataclasses.replace(l, attrs={**l.attrs, "freeze": True}) if i <= stop else l
              for i, l in enumerate(spec.layers)]
    return dataclasses.replace(spec, layers=layers)


def _unknown(layer, names) -> str:
    from netspec.errors import did_you_mean
    hint = did_you_mean(layer, names)
    return f"no layer named {layer!r}" + (f" ({hint})" if hint else "")


def truncated_spec(spec, layer: str):
    """The spec cut after ``layer`` with ``outputs: [layer]``: the net whose output is that
    layer's activation (later layers are dropped; earlier unused branches stay, DCE'd)."""
    import netspec
    for s in (spec, None):
        if s is None:   # a layer the checker inserted (shortcut projection)
            s = netspec.check(spec).spec
        names = [l.name for l in s.layers]
        if layer in names:
            i = names.index(layer)
            return dataclasses.replace(s, layers=list(s.layers[:i + 1]), outputs=[layer])
    raise TransferError(_unknown(layer, [l.name for l in netspec.check(spec).layers]))


def feature_net(spec, weights: Mapping[str, np.ndarray], layer: str, batch_size: int = 64,
                backend: str = "cpu"):
    """An eval-only compiled net computing ``layer``'s output, with ``weights`` loaded."""
    import compiler
    net = compiler.compile(truncated_spec(spec, layer), backend=backend, batch_size=batch_size,
                           train=False)
    w = _weights(weights)
    want = {**net.params, **net.buffers}
    missing = [k for k in want if k not in w]
    if missing:
        raise TransferError(f"the weights lack {', '.join(missing)} needed up to layer {layer!r}")
    net.load_params({k: w[k] for k in want})
    return net


def extract_features(spec, weights, layer: str, x: np.ndarray, batch_size: int = 64,
                     backend: str = "cpu") -> np.ndarray:
    """Eval-mode activations of ``layer`` for inputs x (N, C, H, W) -> (N, *layer shape)."""
    return feature_net(spec, weights, layer, batch_size, backend).forward(x, train=False)
