"""``netspec schema [-o FILE]``: print (or write) the JSON Schema of the spec language,
generated from the layer catalogue and the train schema (netspec/schema.py)."""
from __future__ import annotations

import argparse
import json
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("schema", help="print the JSON Schema of the spec language",
                              description="Print the JSON Schema (draft-07) of the spec "
                              "language, for YAML-aware editors (yaml-language-server).")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    return p


def run(args) -> int:
    from ..schema import json_schema
    text = json.dumps(json_schema(), indent=2) + "\n"
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as e:
            print(f"netspec schema: cannot write {args.output!r}: {e.strerror or e}",
                  file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0
