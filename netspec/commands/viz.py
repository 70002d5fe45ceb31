"""``netspec viz SPEC --checkpoint F --what filters|activations|occlusion|confusion -o out.png``.

Pictures of a trained net (runtime/viz.py): ``filters`` -- the first conv layer's filters
(or ``--layer``); ``activations`` -- the activation maps of ``--layer`` layers (default:
the first four conv layers) for one image (``--index`` in ``--split``); ``occlusion`` --
how much the true class's probability drops when a grey patch (``--patch``, ``--stride``)
hides each part of that image (Zeiler & Fergus 2014); ``confusion`` -- the confusion
matrix over ``--split``.  ``--patch``/``--stride`` < 1 are usage errors (exit 2), as is an
output that is the ``--checkpoint`` file.  Exit 0, or 1 with one message.
"""
from __future__ import annotations

import argparse

import numpy as np

from compiler.outputs import main_output
from ._common import (error_message, fail, fail_output, known_errors, load_spec, load_splits,
                      positive_int, preprocessor, read_checkpoint)

WHAT = ("filters", "activations", "occlusion", "confusion")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("viz", help="pictures of a trained net: filters, activations, "
                              "occlusion saliency, confusion matrix",
                              description="Visualise a trained net.")
    p.add_argument("spec", metavar="SPEC", help="the spec file (.yaml)")
    p.add_argument("--checkpoint", required=True, metavar="FILE")
    p.add_argument("--what", required=True, choices=WHAT)
    p.add_argument("-o", "--out", required=True, metavar="FILE", help="picture (.png or .svg)")
    p.add_argument("--layer", nargs="+", default=None, metavar="NAME",
                   help="filters: the conv layer; activations: the layers to show")
    p.add_argument("--index", type=int, default=0, help="which image of the split")
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.add_argument("--data", metavar="SOURCE_OR_PATH", default=None, help="override train.data")
    p.add_argument("--patch", type=positive_int, default=None, help="occlusion patch size (pixels)")
    p.add_argument("--stride", type=positive_int, default=None, help="occlusion stride (pixels)")
    return p


def _weights(arrays):
    return {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(("params/", "buffers/"))}


def _filters(report, arrays, layer):
    w = _weights(arrays)
    convs = [L.name for L in report.layers if L.type == "conv"]
    name = layer or (convs[0] if convs else None)
    if name is None:
        raise ValueError("the net has no conv layer")
    if name not in convs:
        types = {L.name: L.type for L in report.layers}
        what = f"a {types[name]} layer" if name in types else "not a layer of the net"
        raise ValueError(f"--layer {name!r} is {what}; filters are drawn for conv layers: {convs}")
    if f"{name}.weight" in w:
        return name, w[f"{name}.weight"]
    if f"{name}.weight_v" in w:          # weight normalisation: w = g v / ||v||
        v, g = w[f"{name}.weight_v"], w[f"{name}.weight_g"]
        return name, g * v / np.sqrt((v ** 2).sum(axis=(1, 2, 3), keepdims=True))
    raise ValueError(f"no conv weight for layer {name!r} in the checkpoint (conv layers: {convs})")


def _image(spec, arrays, args):
    splits = load_splits(spec, args.data)
    pre = preprocessor(spec, arrays, args.checkpoint, splits)
    x, y = getattr(splits, args.split)
    if len(y) == 0:
        raise ValueError(f"the {args.split} split is empty")
    return splits, pre, x, y


def run(args) -> int:
    import netspec
    from runtime import viz
    from runtime.transfer import TransferError, feature_net
    bad = fail_output("viz", args.out, {"--checkpoint": args.checkpoint}, f"{args.what}.png")
    if bad is not None:
        return bad
    try:
        spec = load_spec(args.spec)
        report = netspec.check(spec)
        arrays, _ = read_checkpoint(args.checkpoint)
        if args.what == "filters":
            name, w = _filters(report, arrays, (args.layer or [None])[0])
            path = viz.plot_filters(w, args.out, title=f"{name} filters")
        else:
            splits, pre, x, y = _image(spec, arrays, args)
            if args.what != "confusion" and not 0 <= args.index < len(y):
                raise ValueError(f"--index {args.index} is outside the {args.split} split (0..{len(y) - 1})")
            if args.what == "activations":
                layers = args.layer or [L.name for L in report.layers if L.type == "conv"][:4]
                img = pre.apply(x[args.index:args.index + 1])
                acts = {L: feature_net(spec, arrays, L, batch_size=1).forward(img)[0] for L in layers}
                path = viz.plot_activations(acts, args.out, image=img[0])
            else:
                from ._common import build_net
                net = build_net(spec, arrays)
                if args.what == "occlusion":
                    img, label = pre.apply(x[args.index:args.index + 1])[0], int(y[args.index])
                    drop, base = viz.occlusion_map(lambda b: main_output(net.forward(b)), img, label,
                                                   args.patch, args.stride)
                    path = viz.plot_occlusion(img, drop, args.out, splits.class_names[label]
                                              if label < len(splits.class_names) else label, base)
                else:
                    from runtime.metrics import confusion_matrix
                    out = main_output(net.forward(pre.apply(x))).reshape(len(y), -1)
                    k = max(len(splits.class_names), out.shape[1])
                    cm = confusion_matrix(y, out.argmax(1), k)
                    path = viz.plot_confusion(cm, args.out, [str(c) for c in splits.class_names][:k]
                                              if len(splits.class_names) == k else None,
                                              title=f"{spec.name} ({args.split})")
    except known_errors() + (TransferError,) as e:
        return fail(error_message("viz", e, writes=[args.out]))
    print(f"wrote {path}")
    return 0
