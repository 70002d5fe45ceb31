"""``netspec search SPEC --trials N --out DIR [--epochs E] [--param NAME=KIND:A,B ...]``.

Random hyperparameter search, coarse to fine (runtime/search.py): learning rate and weight
decay log-uniform by default; a coarse stage of short runs, then a finer stage around the
best ones; scored by validation accuracy.  Writes ``DIR/results.csv`` (best first),
``DIR/trials/<id>/`` and ``DIR/best.yaml`` (the spec with the best train: values).
Running the same command again continues an interrupted search.
"""
from __future__ import annotations

import argparse
import math
import sys

from ._common import error_message, fail, int_range, known_errors, positive_int


def _stages(text: str):
    try:
        out = [tuple(int(v) for v in part.lower().split("x")) for part in text.split(",")]
    except ValueError:
        out = []
    if not out or any(len(s) != 2 or s[0] < 1 or s[1] < 0 for s in out):
        raise argparse.ArgumentTypeError(f"expected TRIALSxEPOCHS,... like 8x1,4x3, got {text!r}")
    return out


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("search", help="random hyperparameter search, coarse to fine",
                              description="Random search over train: hyperparameters with short "
                              "runs scored on the validation split; resumable.")
    p.add_argument("spec", metavar="SPEC", help="the spec file (.yaml)")
    p.add_argument("--trials", type=positive_int, default=12, help="trials in all (2/3 coarse, 1/3 fine)")
    p.add_argument("--out", "-o", required=True, metavar="DIR")
    p.add_argument("--epochs", type=int_range(0, 10**6, "--epochs"), default=1, help="epochs per coarse trial (fine: twice)")
    p.add_argument("--stages", type=_stages, default=None, metavar="NxE,...",
                   help="explicit stages, e.g. 8x1,4x3 (overrides --trials/--epochs)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=KIND:A,B",
                   help="a searched hyperparameter, e.g. lr=log:1e-4,1e-1, momentum=uniform:0.8,0.99,"
                        " batch_size=choice:32,64 (default: lr and weight_decay, log-uniform)")
    p.add_argument("--top-k", type=positive_int, default=3, help="best trials that set the next ranges")
    p.add_argument("--seed", type=int, default=0)
    return p


def run(args) -> int:
    from runtime.search import SearchError, parse_param, random_search
    try:
        space = dict(parse_param(t) for t in args.param) or None
        if args.stages:
            stages = args.stages
        else:
            coarse = max(1, math.ceil(2 * args.trials / 3))
            stages = [(coarse, args.epochs)] + ([(args.trials - coarse, 2 * args.epochs)]
                                                if args.trials > coarse else [])
        rows = random_search(args.spec, args.out, space, stages, top_k=args.top_k, seed=args.seed,
                             log=lambda s: print(s, file=sys.stderr))
    except known_errors() + (SearchError,) as e:
        return fail(error_message("search", e, writes=[args.out]))
    good = [r for r in rows if not math.isnan(r["score"])]
    if not good:
        return fail("netspec search: every trial diverged; lower the learning-rate range")
    b = good[0]
    print(f"{len(rows)} trials; best {b['trial']} val_accuracy {b['score']:.4f}; "
          f"results in {args.out}/results.csv, best spec in {args.out}/best.yaml")
    return 0
