"""``netspec features SPEC --checkpoint F --layer NAME --out feats.npz [--split S] [--data D]``.

Transfer learning's "CNN features off the shelf": runs the trained net (eval mode) up to
``--layer`` on the preprocessed images of the chosen split(s) and saves the activations:
``<split>_features`` (N, *layer shape) and ``<split>_labels`` (N,) per split, plus
``layer`` and ``class_names``.  A linear classifier on top is the seeds' recipe for a small
dataset similar to the one the net was trained on.  The output may not be the
``--checkpoint`` file (exit 2) nor a directory (exit 1).
"""
from __future__ import annotations

import argparse

import numpy as np

from ._common import (error_message, fail, fail_output, known_errors, load_spec, load_splits,
                      positive_int, preprocessor, read_checkpoint)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("features", help="save a layer's activations over a dataset",
                              description="Extract the activations of a named layer (transfer "
                              "learning: features for a linear classifier).")
    p.add_argument("spec", metavar="SPEC", help="the spec file (.yaml)")
    p.add_argument("--checkpoint", required=True, metavar="FILE")
    p.add_argument("--layer", required=True, metavar="NAME", help="layer whose output to save")
    p.add_argument("--out", "-o", required=True, metavar="FILE", help="output .npz")
    p.add_argument("--split", choices=("train", "val", "test", "all"), default="all")
    p.add_argument("--data", metavar="SOURCE_OR_PATH", default=None, help="override train.data")
    p.add_argument("--batch-size", type=positive_int, default=64)
    return p


def run(args) -> int:
    from runtime.transfer import TransferError, feature_net
    bad = fail_output("features", args.out, {"--checkpoint": args.checkpoint}, "features.npz")
    if bad is not None:
        return bad
    try:
        spec = load_spec(args.spec)
        arrays, _ = read_checkpoint(args.checkpoint)
        splits = load_splits(spec, args.data)
        pre = preprocessor(spec, arrays, args.checkpoint, splits)
        net = feature_net(spec, arrays, args.layer, batch_size=args.batch_size)
        out = {"layer": np.array(args.layer), "class_names": np.array([str(c) for c in splits.class_names])}
        names = ("train", "val", "test") if args.split == "all" else (args.split,)
        for s in names:
            x, y = getattr(splits, s)
            f = net.forward(pre.apply(x), train=False) if len(y) else \
                np.zeros((0, *net.output_shape), np.float32)
            out[f"{s}_features"], out[f"{s}_labels"] = f, np.asarray(y, np.int64)
        with open(args.out, "wb") as fh:
            np.savez(fh, **out)
    except known_errors() + (TransferError,) as e:
        return fail(error_message("features", e, writes=[args.out]))
    shp = "x".join(map(str, net.output_shape))
    print(f"wrote {args.out}: layer {args.layer} ({shp}) for "
          + ", ".join(f"{s} {len(out[s + '_labels'])}" for s in names))
    return 0
