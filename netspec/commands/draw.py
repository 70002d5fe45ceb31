"""``netspec draw SPEC -o net.svg|net.png [--engine auto|dot|matplotlib]``.

Draws the checked net: a box per layer (name, type, parameters), edges labelled with the
shapes they carry, branches side by side.  Uses graphviz ``dot`` when installed, else a
pure-Python layered layout with matplotlib.  Imports no numba.
"""
from __future__ import annotations

import argparse

from ._common import fail, load_spec


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("draw", help="draw the net as a graph (SVG or PNG)",
                              description="Draw the layer graph of a spec with shapes on the edges.")
    p.add_argument("spec", metavar="SPEC", help="the spec file (.yaml)")
    p.add_argument("-o", "--out", required=True, metavar="FILE", help="net.svg or net.png")
    p.add_argument("--engine", choices=("auto", "dot", "matplotlib"), default="auto")
    return p


def run(args) -> int:
    import netspec
    from runtime.viz import draw_net
    try:
        path = draw_net(netspec.check(load_spec(args.spec)), args.out, args.engine)
    except (netspec.SpecError, ValueError, OSError, RuntimeError) as e:
        return fail(f"netspec draw: {e}")
    print(f"wrote {path}")
    return 0
