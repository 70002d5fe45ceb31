"""The ``netspec`` command line: ``netspec <command> ...``.

Commands live in ``netspec/commands/<name>.py`` (``add_parser(subparsers)`` and
``run(args) -> int``). Only the chosen command's module is imported, so ``netspec check``
never imports numba. To add a command: write its module and add a row to ``COMMANDS``.

Exit status: 0 success, 1 invalid spec or failed run (message on stderr, no traceback),
2 usage error (argparse).
"""
from __future__ import annotations

import argparse
import importlib
import sys

# (name, module, one-line help) -- the visible list of commands, in help order.
COMMANDS: list[tuple[str, str, str]] = [
    ("check", "netspec.commands.check",
     "validate a spec; print shapes, parameters, MACs and receptive fields"),
    ("schema", "netspec.commands.schema", "print the JSON Schema of the spec language"),
    ("compile", "netspec.commands.compile", "compile a spec to a cached numba module"),
    ("train", "netspec.commands.train", "train the net of a spec"),
    ("eval", "netspec.commands.eval", "evaluate a trained checkpoint"),
    ("predict", "netspec.commands.predict", "classify images with a trained checkpoint"),
    ("bench", "netspec.commands.bench", "benchmark forward / training steps"),
]


def _chosen(argv: list[str]) -> str | None:
    """The command named on the command line (first non-option word), if any."""
    names = {c[0] for c in COMMANDS}
    for a in argv:
        if a == "--":
            return None
        if not a.startswith("-"):
            return a if a in names else None
    return None


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    from . import __version__
    p = argparse.ArgumentParser(prog="netspec", description="ConvNets declared in YAML, "
                                "checked like a program, compiled to numba code.")
    p.add_argument("--version", action="version", version=f"netspec {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = _chosen(argv)
    for name, modname, help_ in COMMANDS:
        if name == chosen:
            try:
                mod = importlib.import_module(modname)
            except ModuleNotFoundError as e:
                if e.name != modname:
                    raise
                sp = sub.add_parser(name, help=help_)
                sp.set_defaults(_run=_missing(name))
                continue
            sp = mod.add_parser(sub)
            sp.set_defaults(_run=mod.run)
        else:  # a stub that only shows in the help
            sub.add_parser(name, help=help_, add_help=False)
    return p


def _missing(name: str):
    def run(args) -> int:
        print(f"netspec {name}: this command is not available in this installation",
              file=sys.stderr)
        return 2
    return run


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (argparse usage errors exit with 2)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help / --version (0) or usage error (2)
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    try:
        return int(args._run(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `netspec schema | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
