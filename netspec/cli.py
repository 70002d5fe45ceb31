"""The ``netspec`` command line: ``netspec <command> ...``.

Commands live in ``netspec/commands/<name>.py`` (``add_parser(subparsers)`` and
``run(args) -> int``). Only the chosen command's module is imported, so ``netspec check``
never imports numba. To add a command: write its module and add a row to ``COMMANDS``.

Exit status: 0 success, 1 invalid spec or failed run (message on stderr, no traceback),
2 usage error (argparse), 130 interrupted.  Whatever a command lets escape never shows a
traceback: bad-input errors (SpecError, unreadable files, bad data / checkpoints) print
their message, anything else prints a one-line "internal error" asking for a bug report
(the traceback only with ``NETSPEC_DEBUG=1``).
"""
from __future__ import annotations

import argparse
import importlib
import os
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
    ("bench", "netspec.commands.bench", "benchmark training steps and inference (vs PyTorch)"),
    ("export", "netspec.commands.export", "export trained weights: ONNX, .npz or a torch state_dict"),
    ("import-weights", "netspec.commands.import_weights", "import a torch state_dict / .npz as a checkpoint"),
    ("features", "netspec.commands.features", "save a layer's activations over a dataset"),
    ("gradcheck", "netspec.commands.gradcheck", "check the compiled gradients numerically"),
    ("draw", "netspec.commands.draw", "draw the net as a graph (SVG or PNG)"),
    ("viz", "netspec.commands.viz", "pictures of a trained net: filters, activations, occlusion, confusion"),
    ("search", "netspec.commands.search", "random hyperparameter search, coarse to fine"),
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
    try:
        parser = build_parser(argv)   # imports the chosen command's module
    except Exception as e:  # noqa: BLE001
        return _report(_chosen(argv) or "", e)
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
    except Exception as e:  # noqa: BLE001 -- the last line of defence: never a traceback
        return _report(args.command, e)


# (module, class) of errors that mean "bad input"; looked up only in modules already
# imported, so this costs nothing (``netspec check`` must not import numba)
_INPUT_ERRORS = (("runtime.checkpoint", "CheckpointError"), ("runtime.data", "DataError"),
                 ("runtime.train", "TrainingDiverged"), ("compiler.net", "CompileError"))


def _report(command: str, e: Exception) -> int:
    """One message on stderr for an exception a command did not handle; exit status 1."""
    from .errors import SpecError
    kinds = [SpecError, OSError]
    for mod, name in _INPUT_ERRORS:
        m = sys.modules.get(mod)
        if m is not None and isinstance(getattr(m, name, None), type):
            kinds.append(getattr(m, name))
    if isinstance(e, tuple(kinds)):
        msg = str(e) if isinstance(e, SpecError) else f"netspec {command}: {e}"
    elif isinstance(e, MemoryError):
        msg = f"netspec {command}: out of memory; lower the batch size"
    else:
        detail = str(e).splitlines()[0][:200] if str(e) else ""
        msg = (f"netspec {command}: internal error: {type(e).__name__}"
               + (f": {detail}" if detail else "")
               + " -- this is a bug in netspec; please report it with the spec and the command "
               "line (set NETSPEC_DEBUG=1 to see the traceback)")
    if os.environ.get("NETSPEC_DEBUG", "") not in ("", "0"):
        import traceback
        traceback.print_exc()
    print(msg, file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
