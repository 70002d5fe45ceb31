"""Run one CLI command module in-process (for tests): ``run_command("export", [...])``."""
from __future__ import annotations

import argparse
import importlib


def run_command(module: str, argv: list[str]) -> int:
    """Build the parser of ``netspec.commands.<module>`` alone and run it; returns the exit status."""
    mod = importlib.import_module(f"netspec.commands.{module}")
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    mod.add_parser(sub)
    return mod.run(parser.parse_args([next(iter(sub.choices)), *argv]))
