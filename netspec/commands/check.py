"""``netspec check SPEC [--json] [--input-shape C,H,W]``.

Loads and checks a spec; prints the layer table (or, with ``--json``, the JSON object of
DESIGN.md §3). Exit 0 when the spec is valid, 1 when it is not (the located error on
stderr, no traceback) or cannot be read, 2 for usage errors. Imports no numba.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(x) for x in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 3,32,32, got {text!r}")
    if len(dims) not in (1, 3) or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"expected C,H,W (or F) with positive sizes, "
                                         f"got {text!r}")
    return dims


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("check", help="validate a spec; print shapes, parameters, MACs "
                              "and receptive fields",
                              description="Validate a spec and print, per layer, the output "
                              "shape, parameters, MACs and receptive field.")
    p.add_argument("spec", metavar="SPEC", help="the spec file (.yaml)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of "
                   "the table")
    p.add_argument("--input-shape", type=_shape, metavar="C,H,W", default=None,
                   help="override the spec's input shape (no batch dimension)")
    return p


def run(args) -> int:
    import netspec
    try:
        spec = netspec.load(Path(args.spec))
        report = netspec.check(spec, input_shape=args.input_shape)
    except netspec.SpecError as e:
        print(str(e), file=sys.stderr)
        return 1
    except OSError as e:
        print(f"netspec check: cannot read {args.spec!r}: {e.strerror or e}", file=sys.stderr)
        return 1
    if args.json:
        out = report.to_json()
        print(out if isinstance(out, str) else json.dumps(out, indent=2))
    else:
        print(report.format_table())
    return 0
