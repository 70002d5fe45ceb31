"""CLI subcommands, one module each (``netspec/commands/<name>.py``).

Each module exposes ``add_parser(subparsers) -> argparse.ArgumentParser`` and
``run(args) -> int`` (the exit status). Modules import heavy things (numba, the compiler,
the runtime) inside ``run`` only: ``netspec check`` must not import numba. The list of
commands lives in netspec/cli.py.
"""
