"""``netspec gradcheck SPEC [--batch-size 2] [--coords 6] [--h 1e-5] [--seed 0] [--json]``.

Compiles the spec in float64 with a small batch and compares the compiled backward with
centred finite differences on random coordinates of every trainable parameter (kinks
detected and skipped); prints a table of relative errors per parameter and the verdict
(runtime/gradcheck.py has the procedure and thresholds).  Exit 0 for pass/warn, 1 for fail
or an invalid spec, 2 for a bad flag value (``--batch-size``/``--coords`` < 1, ``--h`` <= 0).
"""
from __future__ import annotations

import argparse
import json
import sys

from ._common import error_message, fail, known_errors, load_spec, positive_float, positive_int


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("gradcheck", help="check the compiled gradients numerically",
                              description="Numerical gradient check (float64, central "
                              "differences, kink detection) of every parameter of a spec.")
    p.add_argument("spec", metavar="SPEC", help="the spec file (.yaml)")
    p.add_argument("--batch-size", type=positive_int, default=2, help="samples (few keep kinks rare)")
    p.add_argument("--coords", type=positive_int, default=6, help="random coordinates per parameter")
    p.add_argument("--h", type=positive_float, default=1e-5, help="finite-difference step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def run(args) -> int:
    from runtime.gradcheck import gradcheck
    try:
        spec = load_spec(args.spec)
        r = gradcheck(spec, batch_size=args.batch_size, coords=args.coords, h=args.h, seed=args.seed,
                      progress=None if args.json else lambda n: print(f"  checking {n}", file=sys.stderr))
    except known_errors() as e:
        return fail(error_message("gradcheck", e))
    print(json.dumps(r.to_json(), indent=2) if args.json else r.table())
    return 1 if r.verdict == "fail" else 0
