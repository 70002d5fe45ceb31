"""``netspec bench SPEC [--batch-size B] [--threads T] [--json]``: train-step and inference
speed of the compiled net, beside PyTorch eager (default layout and channels_last) when the
torch extra is installed. Medians over timed windows after warm-up; speedups are the best
PyTorch time divided by ours."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("bench", help="benchmark training steps and inference",
                              description=__doc__)
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="default: all available cores")
    p.add_argument("--json", action="store_true")
    return p


def run(args) -> int:
    import netspec
    from ._common import fail, known_errors
    from runtime.bench import TABLE_HEAD, bench_spec, format_row
    try:
        spec = netspec.load(Path(args.spec))
        B = args.batch_size or int((spec.train or {}).get("batch_size") or 64)
        r = bench_spec(spec, B, threads=args.threads)
    except known_errors() as e:
        return fail(str(e))
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(TABLE_HEAD)
        print(format_row(r))
        print(f"compile + first call: {r['ours']['compile_and_first_call_s']:.2f} s")
    return 0
