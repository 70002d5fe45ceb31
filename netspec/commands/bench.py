"""``netspec bench SPEC [--batch-size B] [--threads T] [--json]``: train-step and inference
speed of the compiled net, beside PyTorch eager (default layout and channels_last) when the
torch extra is installed. Medians over timed windows after warm-up; speedups are the best
PyTorch time divided by ours.

``--batch-size`` and ``--threads`` must be >= 1 (usage error, exit 2); ``--threads`` above
the cores this process may use is clamped to them with a note on stderr (more threads than
cores oversubscribes PyTorch and makes the comparison meaningless).  Exit 0, or 1 with one
``netspec bench: ...`` message for a bad spec.
"""
from __future__ import annotations

import argparse
import json
import sys

from ._common import cpu_cores, positive_int


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("bench", help="benchmark training steps and inference",
                              description=__doc__)
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--threads", type=positive_int, default=None,
                   help="default: all available cores (more are clamped to them)")
    p.add_argument("--json", action="store_true")
    return p


def run(args) -> int:
    from ._common import error_message, fail, known_errors, load_spec
    threads = args.threads
    if threads is not None and threads > cpu_cores():
        print(f"netspec bench: note: --threads {threads} is more than the {cpu_cores()} "
              f"available cores; using {cpu_cores()}", file=sys.stderr)
        threads = cpu_cores()
    try:
        spec = load_spec(args.spec)
        from runtime.bench import TABLE_HEAD, bench_spec, format_row
        B = args.batch_size or int((spec.train or {}).get("batch_size") or 64)
        r = bench_spec(spec, B, threads=threads)
    except known_errors() as e:
        return fail(error_message("bench", e))
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(TABLE_HEAD)
        print(format_row(r))
        print(f"compile + first call: {r['ours']['compile_and_first_call_s']:.2f} s")
    return 0
