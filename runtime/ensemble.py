"""Model ensembles and Polyak averaging at test time (the seeds' "Model Ensembles" slides).

* ``ensemble_probs(net, sources, x)``: average the class probabilities of several weight
  sets (independent runs, or snapshots of one run: ``snapshot_<k>.npz``) -- "train multiple
  independent models, at test time average their results".  ``net`` is one compiled
  eval net of the architecture; each member's weights are loaded into it in turn and the
  net's own weights are restored afterwards.
* ``evaluate_ensemble(net, sources, x, y)``: accuracy of every member and of the average.
* ``polyak_vs_raw(net, checkpoint, x, y)``: "instead of the actual parameter vector keep a
  moving average and use that at test time": the training loop stores the EMA of the
  parameter arena as ``ema/arena`` in ``checkpoint.npz`` (``train.ema: {decay: ...}``);
  this evaluates the raw and the averaged weights side by side.
* ``polyak_average(arrays_list, decay)``: the EMA x_test = decay*x_test + (1-decay)*x over a
  sequence of weight dicts (e.g. the checkpoints of consecutive epochs), for runs that were
  trained without ``ema``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from compiler.outputs import main_output
from .train_utils import class_probs, load_weights, softmax


def _arrays(src) -> dict:
    if isinstance(src, (str, Path)):
        from .checkpoint import load_checkpoint
        return load_checkpoint(src)[0]
    return dict(src)


def _load(net, arrays: Mapping) -> None:
    """A member's weights: checkpoint arrays (``params/*``, ``buffers/*``) or a plain
    {name: array}."""
    if any(k.startswith(("params/", "buffers/")) for k in arrays):
        load_weights(net, arrays)
        return
    d = {k: v for k, v in arrays.items() if "/" not in k}
    if not d:
        raise ValueError("no weights (params/* arrays) in an ensemble member")
    net.load_params(d, strict=True)


def _own(net) -> dict:
    return {**{k: v.copy() for k, v in net.params.items()},
            **{k: v.copy() for k, v in getattr(net, "buffers", {}).items()}}


def pixel_probs(out: np.ndarray) -> np.ndarray:
    """Per-position class probabilities of a per-pixel classifier's output (N, K, *S):
    the softmax over K, one row per position (N*prod(S), K), in the labels' flat order."""
    from compiler.ops.loss import position_rows
    return softmax(position_rows(np.asarray(out)))


def member_probs(net, sources: Sequence, x: np.ndarray, per_pixel: bool = False) -> list[np.ndarray]:
    """[class probabilities (N, K) of each member (train_utils.class_probs: softmax, or
    sigmoid for a bce_with_logits net); with ``per_pixel`` (softmax_cross_entropy spatial)
    one row per pixel (``pixel_probs``)]; the net's weights are restored."""
    own = _own(net)
    try:
        out = []
        for s in sources:
            _load(net, _arrays(s))
            y = main_output(net.forward(x, train=False))
            out.append(pixel_probs(y) if per_pixel else class_probs(net, y))
        return out
    finally:
        net.load_params(own)


def ensemble_probs(net, sources: Sequence, x: np.ndarray, per_pixel: bool = False) -> np.ndarray:
    return np.mean(member_probs(net, sources, x, per_pixel), axis=0)


def evaluate_ensemble(net, sources: Sequence, x: np.ndarray, y: np.ndarray) -> dict:
    """{"members": [accuracy of each], "ensemble": accuracy of the mean probabilities,
    "ensemble_nll": its mean negative log-likelihood}."""
    probs = member_probs(net, sources, x)
    y = np.asarray(y)
    mean = np.mean(probs, axis=0)
    return {"members": [float(np.mean(p.argmax(1) == y)) for p in probs],
            "ensemble": float(np.mean(mean.argmax(1) == y)),
            "ensemble_nll": mean_nll(mean, y)}


def mean_nll(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of the labels y under probabilities (N, K)."""
    return float(-np.mean(np.log(np.maximum(probs[np.arange(len(y)), y], 1e-12))))


def polyak_average(members: Sequence, decay: float = 0.995) -> dict[str, np.ndarray]:
    """EMA over a sequence of weight sets (checkpoint paths or arrays), oldest first: the
    first one starts the average.  Parameters are averaged; buffers (BatchNorm running
    statistics) are taken from the last member, as the training loop's EMA does."""
    avg: dict[str, np.ndarray] = {}
    last: dict = {}
    for m in members:
        last = _arrays(m)
        for k, v in last.items():
            if not k.startswith("params/"):
                continue
            v = np.asarray(v, np.float64)
            avg[k] = v.copy() if k not in avg else decay * avg[k] + (1.0 - decay) * v
    out = {k: v.astype(np.float32) for k, v in avg.items()}
    out.update({k: np.asarray(v) for k, v in last.items() if k.startswith("buffers/")})
    return out


def polyak_vs_raw(net, checkpoint, x: np.ndarray, y: np.ndarray) -> dict:
    """Accuracy of the raw weights and of the Polyak/EMA weights (``ema/arena``) of one
    checkpoint, side by side: {"raw": acc, "ema": acc or None, "agreement": fraction of
    equal predictions}.  The net's own weights are restored."""
    arrays = _arrays(checkpoint)
    own = _own(net)
    y = np.asarray(y)
    try:
        _load(net, arrays)
        raw = class_probs(net, main_output(net.forward(x, train=False))).argmax(1)
        res = {"raw": float(np.mean(raw == y)), "ema": None, "agreement": None}
        if "ema/arena" in arrays:
            ema = np.asarray(arrays["ema/arena"])
            if ema.shape != net.param_arena.shape:
                raise ValueError(f"ema/arena has {ema.size} values, the net's arena {net.param_arena.size}")
            net.param_arena[...] = ema
            pred = class_probs(net, main_output(net.forward(x, train=False))).argmax(1)
            res.update(ema=float(np.mean(pred == y)), agreement=float(np.mean(pred == raw)))
        return res
    finally:
        net.load_params(own)


def ema_weights(report, arrays: Mapping) -> dict[str, np.ndarray]:
    """The Polyak/EMA weights of a checkpoint as ``params/<name>`` arrays (plus its
    ``buffers/*``): ``ema/arena`` split in the parameter arena's order (spec order, params
    only -- how ``compiler.compile`` lays the arena out)."""
    if "ema/arena" not in arrays:
        raise ValueError("the checkpoint has no ema/arena (train with `ema: {decay: 0.999}`)")
    arena = np.asarray(arrays["ema/arena"])
    out, off = {}, 0
    for L in report.layers:
        for full, ps in L.param_specs:
            if ps.kind != "param":
                continue
            n = int(np.prod(ps.shape)) if ps.shape else 1
            out[f"params/{full}"] = arena[off:off + n].reshape(ps.shape).astype(np.float32)
            off += n
    if off != arena.size:
        raise ValueError(f"ema/arena has {arena.size} values but the net has {off} parameters")
    out.update({k: np.asarray(v) for k, v in arrays.items() if k.startswith("buffers/")})
    return out
