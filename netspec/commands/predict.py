"""``netspec predict SPEC --checkpoint FILE INPUT ...`` -> predicted class and probability.

INPUTs are ``.npz`` files (array ``x``, or the only array: (N, C, H, W), (N, H, W) or one
image (C, H, W) / (H, W)) or image files (PNG/JPEG ...; read like the training image
folders, 0..255; ``--scale`` rescales them to the training data's range). Images go through
the run's preprocessing (from the checkpoint). Prints
one line per image (``--json``: one JSON list). Exit 1 with one message for bad inputs
(missing file, directory, no images, wrong shape, NaN/inf pixels); exit 2 for ``--top`` < 1
or a ``--scale`` that is not a finite number > 0.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from compiler.outputs import main_output
from runtime.train_utils import class_probs

from ._common import (build_net, error_message, fail, known_errors, load_spec, positive_float,
                      positive_int, preprocessor, read_checkpoint, refuse_reconstruction, with_ema)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("predict", help="classify images with a trained checkpoint",
                              description="Predicted class and probability for each input image.")
    p.add_argument("spec", metavar="SPEC", help="the spec file (.yaml)")
    p.add_argument("--checkpoint", required=True, metavar="FILE")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help=".npz or image files")
    p.add_argument("--top", type=positive_int, default=1, help="show the top-k classes")
    p.add_argument("--scale", type=positive_float, default=1.0, metavar="F",
                   help="multiply the inputs' pixel values by F before the run's preprocessing: "
                        "image files are read as 0..255, so a model trained on the built-in "
                        "digits (0..16) wants --scale 0.0627 (16/255)")
    p.add_argument("--backend", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--ema", action="store_true", help="use the Polyak/EMA weights the run kept (train.ema)")
    p.add_argument("--json", action="store_true")
    return p


_SHAPES = "(N, C, H, W), (N, H, W), one image (C, H, W) or (H, W)"


def _npz_images(p: Path, input_shape) -> np.ndarray:
    """The images of one .npz INPUT as (N, C, H, W) float32 (DataError naming the file)."""
    from runtime.data import DataError
    from ._common import check_npz
    check_npz(p, DataError)         # e.g. a text file named .npz: not numpy's pickle advice
    try:
        with np.load(p, allow_pickle=False) as z:
            keys = list(z.files)
            key = "x" if "x" in keys else (keys[0] if len(keys) == 1 else None)
            a = None if key is None else z[key]
    except (OSError, ValueError, EOFError) as e:
        if "pickle" in str(e) or "Object arrays" in str(e):
            raise DataError(f"{p}: holds Python objects (pickled data), which netspec never "
                            f"loads; save the images as a numeric array") from e
        raise DataError(f"{p}: not a readable .npz ({type(e).__name__}: {e})") from e
    if key is None:
        raise DataError(f"{p}: no array 'x' among {keys or 'no arrays'}: expected the images "
                        f"as array 'x' (or as the only array), {_SHAPES}")
    what = f"{p}: array {key!r}" + ("" if key == "x" else " (the only array; no 'x')")
    if a.dtype.kind not in "iufb":
        raise DataError(f"{what}: images must be numeric, got {a.dtype}")
    if tuple(a.shape) == tuple(input_shape):            # one image (C, H, W)
        a = a[None]
    elif a.ndim == 2 and input_shape[0] == 1:            # one grey image (H, W)
        a = a[None, None]
    elif a.ndim == 3 and input_shape[0] == 1:            # grey images (N, H, W)
        a = a[:, None]
    if a.ndim != 4:
        raise DataError(f"{what} has shape {tuple(a.shape)}, not images: expected {_SHAPES} "
                        f"for a net of input {tuple(input_shape)} (C, H, W)")
    if a.shape[0] == 0:
        raise DataError(f"{what}: no images (shape {tuple(a.shape)})")
    return a.astype(np.float32)


def read_inputs(paths, input_shape) -> tuple[np.ndarray, list[str]]:
    """-> (x (N, C, H, W) float32, labels naming each image).  DataError naming the INPUT for
    a missing file, a directory, an unreadable or empty .npz, wrong shapes, NaN/inf pixels."""
    from runtime.data import DataError, read_image
    xs, names = [], []
    for p in map(Path, paths):
        if p.is_dir():
            raise DataError(f"{p}: is a directory; give .npz or image files (e.g. {p}/*.png)")
        if not p.is_file():
            raise DataError(f"{p}: no such file")
        if p.suffix.lower() == ".npz":
            a = _npz_images(p, input_shape)
            names += [f"{p}[{i}]" for i in range(a.shape[0])] if a.shape[0] > 1 else [str(p)]
        else:
            a = read_image(p)[None]
            names.append(str(p))
        bad = ~np.isfinite(a).reshape(a.shape[0], -1).all(axis=1)
        if bad.any():
            idx = np.flatnonzero(bad)
            raise DataError(f"{p}: {len(idx)} of {a.shape[0]} images contain NaN or infinite "
                            f"pixel values (first: image {int(idx[0])})")
        xs.append(a)
    for a, n in zip(xs, paths):
        if tuple(a.shape[1:]) != tuple(input_shape):
            raise DataError(f"{n}: images of shape {tuple(a.shape[1:])}, the net expects "
                            f"{tuple(input_shape)} (C, H, W)")
    return np.concatenate(xs), names


def run(args) -> int:
    try:
        spec = load_spec(args.spec)
        refuse_reconstruction(spec, "predict")
        arrays, meta = read_checkpoint(args.checkpoint)
        if args.ema:
            arrays = with_ema(spec, arrays)
        # the training data's sample shape (larger than the net's input when the run trained
        # on random crops and evaluates the centre one), else the spec's input
        x, names = read_inputs(args.inputs, tuple(meta.get("input_shape") or spec.input_shape))
        pre = preprocessor(spec, arrays, args.checkpoint)
        net = build_net(spec, arrays, args.backend)
        xs = x * np.float32(args.scale)
        if not np.isfinite(xs).all():
            raise ValueError(f"--scale {args.scale:g} makes pixel values overflow float32")
        probs = class_probs(net, main_output(net.forward(pre.apply(xs), train=False)))
    except known_errors() as e:
        return fail(error_message("predict", e))
    classes = meta.get("class_names") or [str(i) for i in range(probs.shape[1])]
    k = max(1, min(args.top, probs.shape[1]))
    out = []
    for n, p in zip(names, probs):
        top = np.argsort(-p)[:k]
        out.append({"input": n, "predictions": [{"class": classes[i] if i < len(classes) else str(i),
                                                 "index": int(i), "probability": float(p[i])} for i in top]})
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for o in out:
            print(o["input"] + ": " + ", ".join(f"{q['class']} ({q['probability']:.3f})"
                                                for q in o["predictions"]))
    return 0
