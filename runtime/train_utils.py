"""Helpers of the training loop (runtime/train.py): data resolution, evaluation, EMA weights,
checkpoint packing and the metrics file/plot.

Everything here talks to a net only through the CompiledNet members listed in
docs/compiled-net.md: ``param_arena``, ``params``, ``buffers``, ``forward``, ``loss_fn``,
``state_dict`` / ``load_state_dict``, ``load_params``.
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from compiler.outputs import main_output
from .data import SOURCES


# ----------------------------------------------------------------------------- data
def data_config(base: Mapping[str, Any] | None, data: Any) -> dict:
    """The ``train.data`` dict overridden by a CLI ``--data`` value: a source name
    (``digits``), or a path (``.npz`` file; a folder holding CIFAR-10 batches, MNIST IDX
    files or one sub-folder per class); or a dict merged over ``base``."""
    cfg = dict(base or {})
    if data is None:
        return cfg
    if isinstance(data, Mapping):
        cfg.update(data)
        return cfg
    s = str(data)
    if s in SOURCES:
        cfg.update(source=s, path=cfg.get("path") if s == cfg.get("source") else None)
        return cfg
    p = Path(s)
    if p.is_dir():
        names = {q.name for q in p.iterdir()}
        if "data_batch_1" in names or (p / "cifar-10-batches-py").is_dir():
            src = "cifar10"
        elif any(n.startswith(("train-images", "t10k-images")) for n in names):
            src = "mnist"
        else:
            src = "folder"
    else:
        src = "npz"
    cfg.update(source=src, path=str(p.absolute()))     # a command-line path: from the cwd,
    return cfg                                          # not the spec's folder


def check_data_fits(spec, sample_shape, data_desc: str) -> None:
    """Refuse, before compiling, data whose samples (after preprocessing and augmentation)
    do not have the spec's input shape, naming both and the way out."""
    want = tuple(getattr(spec, "input_shape", ()) or ())
    if not want or tuple(sample_shape) == want:
        return
    raise ValueError(
        f"the training data's samples are {tuple(sample_shape)} but the spec's input is {list(want)}"
        f" (data: {data_desc}); point --data or train.data at a dataset of that shape, crop larger"
        f" images with train.augment [{{random_crop: {{pad: 0, size: [h, w]}}}}], or change the"
        f" spec's input")


def check_trainable(net) -> None:
    """Refuse to train a net with nothing to train (no parameters, or every one frozen):
    each step would only re-evaluate the loss.  ``net``: a compiled net, or the checker's
    report (so the refusal comes before the compile)."""
    if hasattr(net, "param_info"):
        frozen = [pi.frozen for pi in net.param_info.values()]
    elif hasattr(net, "layers"):       # a netspec.check report
        frozen = [bool(getattr(L, "freeze", False)) for L in net.layers for _, ps in L.param_specs
                  if ps.kind == "param"]
    else:
        return
    if not all(frozen):
        return
    why = "every parameter is frozen (freeze: true)" if frozen else "the net has no parameters"
    raise ValueError(f"nothing to train: {why}; remove freeze: from a layer to fine-tune it, or "
                     f"evaluate the net as it is with `netspec eval`")


# ----------------------------------------------------------------------------- evaluation
def softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float64).reshape(z.shape[0], -1)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def loss_name(net) -> str:
    (name, _), = net.loss_cfg.items()
    return name


def per_pixel(net) -> bool:
    """softmax_cross_entropy with spatial: one class per output position."""
    from compiler.lower import spatial_loss
    return spatial_loss(net.loss_cfg)


def has_class_probs(net) -> bool:
    """Whether ``class_probs`` applies: one class per image (not mse, not per pixel)."""
    return loss_name(net) != "mse" and not per_pixel(net)


def class_probs(net, out: np.ndarray) -> np.ndarray:
    """(N, K) class probabilities of a net's main output ``out`` under its training loss:
    softmax over the flattened output for softmax_cross_entropy and hinge; for
    bce_with_logits with one logit per sample the two classes [1 - sigmoid(z), sigmoid(z)]
    (label 1 is the positive class), with several logits each one's sigmoid (multi-label
    scores, not normalised).  mse has no classes: ValueError."""
    name = loss_name(net)
    if per_pixel(net):
        raise ValueError("predict reports one class per image, and this net classifies every pixel "
                         "(softmax_cross_entropy spatial): there is no per-image class to report; "
                         "`netspec eval` scores it per pixel (accuracy, IoU)")
    if name == "mse":
        raise ValueError("this net is trained with the mse loss (regression): it has no class "
                         "probabilities; accuracy, eval and predict need softmax_cross_entropy, hinge "
                         "or bce_with_logits")
    if name == "bce_with_logits":
        z = np.asarray(out, np.float64).reshape(len(out), -1)
        p = 0.5 * (1.0 + np.tanh(0.5 * z))          # sigmoid without overflow warnings
        return np.concatenate([1.0 - p, p], axis=1) if z.shape[1] == 1 else p
    return softmax(out)


def check_targets(report, cfg, x: np.ndarray, y: np.ndarray, recon: bool) -> None:
    """Before compiling: the training targets fit the loss and the net (ValueError naming the
    fix).  recon (train.target: input): a dense loss, an output shaped like the input, bce's
    [0, 1] range, no accuracy to watch.  Labels: classes inside the output, 0/1 for a
    one-logit bce, per-pixel masks only with softmax_cross_entropy's ``spatial``.  report:
    the spec's checker report (None for a test double's spec: nothing to check against)."""
    loss = cfg.get("loss") or {"softmax_cross_entropy": {}}
    (name, _), = loss.items()
    if report is None:
        return
    out = tuple(report.output_shape)
    watched = [str((cfg.get("early_stopping") or {}).get("metric", "val_accuracy"))
               if cfg.get("early_stopping") else "",
               str(((cfg.get("schedule") or {}).get("plateau") or {}).get("metric", ""))]
    if recon:
        if name not in ("mse", "bce_with_logits"):
            raise ValueError(f"train.target: input compares the output with the input, which needs the "
                             f"mse or bce_with_logits loss, not {name}; set train.loss")
        if out != tuple(x.shape[1:]):
            raise ValueError(f"train.target: input needs the output shaped like the input: the net gives "
                             f"{out}, the input is {tuple(x.shape[1:])}")
        if any("accuracy" in m for m in watched):
            raise ValueError("train.target: input has no accuracy to watch: set early_stopping.metric "
                             "and the plateau metric to val_loss (or train_loss)")
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 1.0)
        if name == "bce_with_logits" and (lo < 0 or hi > 1):
            raise ValueError(f"bce_with_logits compares with targets in [0, 1], but the preprocessed "
                             f"inputs span [{lo:.3g}, {hi:.3g}]: rescale them into [0, 1] (train.preprocess: "
                             f"[{{rescale: {{scale: ..., shift: 0}}}}]) or use mse")
        return
    if y.dtype.kind not in "iub" or not y.size:
        return
    per_sample = int(np.prod(y.shape[1:])) if y.ndim > 1 else 1
    from compiler.lower import spatial_loss
    spatial = spatial_loss(loss)
    got = out[1:] if spatial else out[-len(y.shape[1:]):] if y.ndim > 1 else ()
    if y.ndim > 1 and tuple(got) != tuple(y.shape[1:]) and (spatial or name in ("mse", "bce_with_logits")):
        raise ValueError(f"the per-pixel labels are {tuple(y.shape[1:])} per image, but the net's output "
                         f"is {out}: its spatial size must match; resize the last layer to the input "
                         f"with `upsample: {{mode: bilinear, from: [x, input]}}` (or crop the masks)")
    if name in ("mse", "bce_with_logits") and int(np.prod(out)) != per_sample:
        raise ValueError(f"{name} compares every output value with a target, but the net gives {out} "
                         f"per image and the data {per_sample} label(s): class labels need "
                         f"softmax_cross_entropy (or a one-value output)")
    top = int(y.max())
    if y.ndim > 1 and name in ("softmax_cross_entropy", "hinge") and not spatial:
        raise ValueError(f"the labels are per pixel (shape {y.shape[1:]}): per-pixel classes need "
                         f"train.loss: {{softmax_cross_entropy: {{spatial: true}}}}")
    if name in ("softmax_cross_entropy", "hinge"):
        k = out[0] if spatial else int(np.prod(out))
        if spatial and k < 2:
            raise ValueError(f"softmax_cross_entropy spatial needs an output with >= 2 class channels; "
                             f"the net's output {out} has {k} (binary masks: bce_with_logits)")
        if top >= k:
            raise ValueError(f"the data has label {top}, but the net's output {out} scores {k} classes: "
                             f"give the last layer {top + 1} outputs")
    if name == "bce_with_logits" and top > 1:
        raise ValueError(f"bce_with_logits needs 0/1 targets, but the labels go up to {top}: use "
                         f"softmax_cross_entropy for {top + 1} classes")


def predicted_class(net, out: np.ndarray, labels=None):
    """(N,) labels predicted by a main output under the net's loss -- the argmax of
    ``class_probs`` without computing it (a sigmoid or softmax is monotonic); (N, H, W) for
    per-pixel classification; for bce_with_logits with one 0/1 label per output value
    (binary masks, multi-label; ``labels`` given) the per-value decisions; None for mse."""
    name = loss_name(net)
    if name == "mse":
        return None
    out = np.asarray(out)
    if per_pixel(net):                              # (N, K, H, W) -> (N, H, W)
        return out.argmax(axis=1)
    z = out.reshape(len(out), -1)
    if name == "bce_with_logits":
        if z.shape[1] == 1:
            return (z[:, 0] > 0).astype(np.int64)
        if labels is not None and np.size(labels) == z.size:
            return (out > 0).astype(np.int64)
    return z.argmax(axis=1)


def accuracy_of(pred, y) -> float:
    """Fraction of equal values (per pixel for masks); NaN without predictions, or when y
    is not labels (a reconstruction target) or does not match them."""
    y = np.asarray(y)
    if pred is None or y.dtype.kind not in "iub" or pred.size != y.size:
        return math.nan
    return float(np.mean(pred.reshape(-1) == y.reshape(-1)))


def evaluate(net, x: np.ndarray, y: np.ndarray) -> dict:
    """Eval-mode forward over (x, y) -> {"loss", "accuracy", "logits"}; NaNs when x is empty.
    Accuracy is the argmax of ``class_probs`` against the labels (NaN for mse)."""
    if x.shape[0] == 0:
        return {"loss": math.nan, "accuracy": math.nan, "logits": None}
    out = main_output(net.forward(x, train=False))
    loss = float(net.loss_fn(out, y))
    acc = accuracy_of(predicted_class(net, out, y), y)       # per pixel for masks
    return {"loss": loss, "accuracy": acc, "logits": out}


def confusion(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    m = np.zeros((k, k), np.int64)
    np.add.at(m, (y_true.astype(np.int64), y_pred.astype(np.int64)), 1)
    return m


class EMA:
    """Polyak / exponential moving average of the parameter arena, host-side:
    ``avg = d*avg + (1-d)*w`` after every step (the lecture's x_test update).  With
    ``warmup`` (default) d = min(decay, (1 + t) / (10 + t)) at step t, TensorFlow's
    ExponentialMovingAverage(num_updates): a plain 0.999 average still holds 0.999**t of the
    random initial weights after t steps (68 % after an epoch of the digits job, whose EMA
    accuracy was then 16 % against 98.6 % raw).  ``swap_in(net)`` / ``swap_out(net)`` put
    the averaged weights into the net for evaluation and back (BatchNorm running statistics
    stay the raw ones)."""

    def __init__(self, arena: np.ndarray, decay: float, warmup: bool = True):
        self.decay, self.warmup = float(decay), bool(warmup)
        self.avg = np.array(arena, dtype=np.float64)
        self._tmp = np.empty_like(self.avg)
        self._saved = None

    def update(self, arena: np.ndarray, step: int) -> None:
        """Average in the weights after training step ``step`` (1, 2, ...)."""
        d = min(self.decay, (1.0 + step) / (10.0 + step)) if self.warmup else self.decay
        self.avg *= d
        np.multiply(arena, 1.0 - d, out=self._tmp)
        self.avg += self._tmp

    def swap_in(self, net) -> None:
        self._saved = net.param_arena.copy()
        net.param_arena[...] = self.avg

    def swap_out(self, net) -> None:
        net.param_arena[...] = self._saved
        self._saved = None


# ----------------------------------------------------------------------------- checkpoints
def net_arrays(net) -> tuple[dict[str, np.ndarray], dict]:
    """``net.state_dict()`` split into arrays (copies) and JSON-able scalars."""
    arrays, scalars = {}, {}
    for k, v in net.state_dict().items():
        if isinstance(v, np.ndarray) and v.ndim > 0:
            arrays[k] = np.array(v)
        else:
            scalars[k] = v.item() if isinstance(v, np.generic | np.ndarray) else v
    return arrays, scalars


def restore_net(net, arrays: Mapping[str, np.ndarray], scalars: Mapping[str, Any]) -> None:
    """Resume state into ``net``; a checkpoint of another architecture is refused, naming
    the tensors that differ."""
    want = {f"params/{k}": tuple(v.shape) for k, v in net.params.items()}
    want.update({f"buffers/{k}": tuple(v.shape) for k, v in getattr(net, "buffers", {}).items()})
    got = {k: tuple(np.shape(v)) for k, v in arrays.items() if k.startswith(("params/", "buffers/"))}
    diff = ([f"{k[k.index('/') + 1:]} missing" for k in sorted(set(want) - set(got))]
            + [f"{k[k.index('/') + 1:]} not in this net" for k in sorted(set(got) - set(want))]
            + [f"{k[k.index('/') + 1:]} {got[k]} vs {want[k]} here" for k in sorted(want)
               if k in got and got[k] != want[k]])
    if diff:
        more = f" (and {len(diff) - 6} more)" if len(diff) > 6 else ""
        raise ValueError(f"the checkpoint is for another net: {'; '.join(diff[:6])}{more}. --resume "
                         f"continues a run of the same spec; to start from these weights use "
                         f"init: {{checkpoint: ..., skip: [...]}}")
    # the net's own state: params/buffers/opt slots and its plain keys (step_count, an
    # int64 (1,) array -- dropping it restarted Adam's bias correction and the EMA warmup)
    d = {k: v for k, v in arrays.items() if k.split("/", 1)[0] in ("params", "buffers", "opt") or "/" not in k}
    d.update(scalars)
    net.load_state_dict(d)


def weights_of(net) -> dict[str, np.ndarray]:
    """Copies of params and buffers, keyed ``params/<name>`` / ``buffers/<name>``."""
    out = {f"params/{k}": np.array(v) for k, v in net.params.items()}
    out.update({f"buffers/{k}": np.array(v) for k, v in getattr(net, "buffers", {}).items()})
    return out


def load_weights(net, arrays: Mapping[str, np.ndarray]) -> None:
    """Load ``params/*`` and ``buffers/*`` entries of a checkpoint into the net."""
    d = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(("params/", "buffers/"))}
    if not d:
        raise ValueError("the checkpoint holds no params/* arrays")
    net.load_params(d, strict=True)


# ----------------------------------------------------------------------------- metrics
_ROW_ORDER = ("epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "ema_val_loss",
              "ema_val_accuracy", "images_per_second", "seconds")


def write_metrics(out_dir: Path, rows: list[dict], plot: bool = True) -> None:
    """metrics.csv (one row per epoch, atomic replace) and, with ``plot``, curves.png
    (drawing takes ~0.3 s, so the loop asks for it only now and then and at the end)."""
    if not rows:
        return
    # a fixed column order: rows restored from a checkpoint's JSON come back with their keys
    # sorted, which reordered the columns of a resumed run
    seen = {k for r in rows for k in r}
    keys = [k for k in _ROW_ORDER if k in seen]
    for r in rows:
        keys += [k for k in r if k not in keys]
    tmp = out_dir / ".metrics.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    os.replace(tmp, out_dir / "metrics.csv")
    if not plot:
        return
    try:
        from .metrics import plot_curves
        plot_curves(out_dir / "metrics.csv", out_dir / "curves.png")
    except Exception as e:  # a plot must never stop training
        print(f"warning: could not draw curves.png: {e}")


def fold_summary(per: list[dict]) -> dict:
    """The k-fold run's summary: mean/std of the folds' accuracies, fold_val_accuracy."""
    va = np.array([p["val_accuracy"] for p in per], np.float64)
    te = np.array([p["test_accuracy"] for p in per], np.float64)
    s = {k: per[-1][k] for k in ("epochs", "status") if k in per[-1]}
    s.update(folds=len(per), val_accuracy=float(va.mean()), val_accuracy_std=float(va.std()),
             test_accuracy=float(te.mean()), test_accuracy_std=float(te.std()),
             train_loss=float(np.mean([p["train_loss"] for p in per])),
             images_per_second=float(np.mean([p["images_per_second"] for p in per])),
             compile_seconds=float(sum(p.get("compile_seconds", 0.0) for p in per)),
             fold_val_accuracy=va.tolist())
    return s
