"""``netspec eval SPEC --checkpoint FILE [--data SOURCE_OR_PATH] [--ensemble CKPT ...] [--json]``.

Evaluates trained weights on the test split of the spec's data (the same seeded split as
training): accuracy, loss, per-class accuracy and the confusion matrix. ``--ensemble``
adds more checkpoints (e.g. snapshot_*.npz) whose class probabilities are averaged with
the main one's. Exit 0, or 1 with one message for a bad spec, data file or checkpoint.
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from ._common import (build_net, fail, known_errors, load_spec, load_splits, preprocessor,
                      read_checkpoint, refuse_reconstruction, with_ema)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("eval", help="evaluate a trained checkpoint",
                              description="Accuracy, per-class accuracy and confusion matrix "
                              "of trained weights on the test split.")
    p.add_argument("spec", metavar="SPEC", help="the spec file (.yaml)")
    p.add_argument("--checkpoint", required=True, metavar="FILE", help="checkpoint.npz / best.npz")
    p.add_argument("--data", metavar="SOURCE_OR_PATH", default=None, help="override train.data")
    p.add_argument("--ensemble", nargs="+", metavar="CKPT", default=[],
                   help="more checkpoints to average probabilities with")
    p.add_argument("--split", choices=("test", "val", "train"), default="test")
    p.add_argument("--backend", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--ema", action="store_true",
                   help="evaluate the Polyak/EMA weights the run kept (train.ema) instead of the raw ones")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def evaluate_checkpoints(spec, paths, data=None, split="test", backend="cpu", ema=False) -> dict:
    """Evaluate one checkpoint (or the probability average of several) -> result dict;
    ``ema``: each checkpoint's Polyak/EMA weights (``ema/arena``) instead of the raw ones."""
    from runtime.ensemble import ensemble_probs, mean_nll
    from runtime.train_utils import confusion, per_pixel
    refuse_reconstruction(spec, "eval")
    members = [read_checkpoint(p) for p in paths]          # fail early on a bad file
    if ema:
        members = [(with_ema(spec, arrays), meta) for arrays, meta in members]
    splits = load_splits(spec, data)
    x, y = getattr(splits, split)
    if len(y) == 0:
        raise ValueError(f"the {split} split is empty")
    pre = preprocessor(spec, members[0][0], paths[0], splits)
    x = pre.apply(x)
    net = build_net(spec, members[0][0], backend)
    pixels = per_pixel(net)
    probs = ensemble_probs(net, [arrays for arrays, _ in members], x, per_pixel=pixels)
    n = len(y)
    y = np.asarray(y).reshape(-1)                # per pixel for a segmentation net
    pred = np.argmax(probs, axis=1)
    k = max(len(splits.class_names), int(probs.shape[1]))
    cm = confusion(y, pred, k)
    per = [float(cm[i, i] / cm[i].sum()) if cm[i].sum() else float("nan") for i in range(k)]
    nll = mean_nll(probs, y)
    names = list(splits.class_names) + [str(i) for i in range(len(splits.class_names), k)]
    r = {"split": split, "n": int(n), "accuracy": float(np.mean(pred == y)), "nll": nll,
         "members": [str(p) for p in paths], "class_names": names,
         "per_class_accuracy": per, "confusion_matrix": cm.tolist()}
    if pixels:                    # segmentation: IoU per class and its mean over present classes
        tp = np.diag(cm).astype(np.float64)
        union = cm.sum(0) + cm.sum(1) - tp
        iou = [float(t / u) if u else float("nan") for t, u in zip(tp, union)]
        r.update(pixels=int(y.size), iou=iou, mean_iou=float(np.nanmean(iou)))
    return r


def run(args) -> int:
    try:
        spec = load_spec(args.spec)
        r = evaluate_checkpoints(spec, [args.checkpoint, *args.ensemble], args.data,
                                 args.split, args.backend, ema=args.ema)
    except known_errors() as e:
        return fail(f"netspec eval: {e}")
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    what = "ensemble of %d" % len(r["members"]) if len(r["members"]) > 1 else r["members"][0]
    print(f"{spec.name} ({what}) on the {r['split']} split ({r['n']} images): "
          + (f"pixel accuracy {r['accuracy']:.4f}, mean IoU {r['mean_iou']:.4f}, " if "iou" in r
             else f"accuracy {r['accuracy']:.4f}, ") + f"nll {r['nll']:.4f}")
    w = max(len(n) for n in r["class_names"])
    print("per-class accuracy" + (" and IoU:" if "iou" in r else ":"))
    for i, (n, a) in enumerate(zip(r["class_names"], r["per_class_accuracy"])):
        print(f"  {n:>{w}}  {a:.4f}" + (f"  {r['iou'][i]:.4f}" if "iou" in r else ""))
    print("confusion matrix (rows: true, columns: predicted):")
    for n, row in zip(r["class_names"], r["confusion_matrix"]):
        print(f"  {n:>{w}} " + " ".join(f"{v:4d}" for v in row))
    return 0
