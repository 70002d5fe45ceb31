"""``netspec train SPEC [--out DIR] [--epochs N] [--batch-size B] [--data SOURCE_OR_PATH]
[--resume] [--folds K] [--backend cpu|cuda] [--no-progress] [--distributed]``.

``--distributed`` [distributed]: data-parallel over MPI ranks, launched as
``mpiexec -n K netspec train SPEC --distributed`` (runtime/distributed.py; the batch size is
global, rank 0 writes the files and prints the summary).

Runs ``runtime.train.train`` and prints a one-line summary. Exit status: 0 done, 1 failed
(bad spec, data, checkpoint, divergence: one message on stderr, no traceback), 130 when
interrupted with Ctrl-C (a checkpoint was saved; continue with ``--resume``).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from ._common import fail, known_errors, positive_int


def _folds(text: str) -> int:
    v = positive_int(text)
    if v < 2:
        raise argparse.ArgumentTypeError(f"K-fold cross-validation needs K >= 2, got {text!r}")
    return v


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train", help="train the net of a spec",
                              description="Train the net of a spec with its train: section; "
                              "writes metrics.csv, curves.png, checkpoint.npz and summary.json.")
    p.add_argument("spec", metavar="SPEC", help="the spec file (.yaml)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="run directory (default: runs/<spec name>)")
    p.add_argument("--epochs", type=positive_int, default=None, help="override train.epochs")
    p.add_argument("--batch-size", type=positive_int, default=None, help="override train.batch_size")
    p.add_argument("--data", metavar="SOURCE_OR_PATH", default=None,
                   help="data source name (digits) or path (.npz, CIFAR-10/MNIST/image folder)")
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.npz")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in DIR (refused without it or --resume)")
    p.add_argument("--folds", type=_folds, default=None, help="K-fold cross-validation (K >= 2)")
    p.add_argument("--backend", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or epoch lines")
    p.add_argument("--distributed", action="store_true",               # [distributed]
                   help="data-parallel training over MPI ranks: mpiexec -n K netspec train "
                   "SPEC --distributed (needs mpi4py + an MPI; --batch-size is global)")
    return p


def _metric(s: dict, split: str) -> str:
    """'val acc 0.9861'; the loss where there is no accuracy (mse, train.target: input); 'no
    test split' where the split is empty."""
    acc, loss = s.get(f"{split}_accuracy", math.nan), s.get(f"{split}_loss", math.nan)
    if acc is not None and math.isfinite(acc):
        return f"{split} acc {acc:.4f}"
    if loss is not None and math.isfinite(loss):
        return f"{split} loss {loss:.4f}"
    return f"no {split} split"


def run(args) -> int:
    import netspec
    try:
        spec = netspec.load(Path(args.spec))
    except netspec.SpecError as e:
        return fail(str(e))
    except OSError as e:
        return fail(f"netspec train: cannot read {args.spec!r}: {e.strerror or e}")
    out = Path(args.out) if args.out else Path("runs") / spec.name
    from runtime.rundir import existing_run
    old = existing_run(out) if not args.resume else []
    if old and not args.overwrite:
        return fail(f"netspec train: {out} already holds a run ({old[0]}); continue it with --resume, "
                    f"replace it with --overwrite, or choose another --out")
    from runtime.train import train
    from runtime.distributed import DistError                         # [distributed]
    try:
        s = train(spec, out, epochs=args.epochs, batch_size=args.batch_size, data=args.data,
                  resume=args.resume, folds=args.folds, overwrite=bool(old), progress=not args.no_progress,
                  backend=args.backend, distributed=args.distributed)
    except known_errors() + (DistError,) as e:
        return fail(f"netspec train: {e}")
    if s.get("status") == "interrupted":
        return 130
    if "distributed_rank" in s:                                       # [distributed] rank > 0
        return 0
    line = (f"{spec.name}: {s['epochs']} epoch{'' if s['epochs'] == 1 else 's'}, train loss {s['train_loss']:.4f}, "
            f"{_metric(s, 'val')}, {_metric(s, 'test')}, "
            f"{s['images_per_second']:.0f} img/s, {s['seconds']:.1f} s -> {out}")
    if "folds" in s:
        line += (f"\n{s['folds']}-fold val accuracy {s['val_accuracy']:.4f} "
                 f"+- {s['val_accuracy_std']:.4f}")
    if "ema_test_accuracy" in s:
        line += f"\nEMA weights: test acc {s['ema_test_accuracy']:.4f}"
    if "ensemble_test_accuracy" in s:
        line += f"\nsnapshot ensemble ({len(s['snapshots'])}): test acc {s['ensemble_test_accuracy']:.4f}"
    print(line)
    return 0
