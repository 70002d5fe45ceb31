"""Shared by the ``netspec`` commands: error reporting, argparse value types (a bad flag
value is a usage error, exit 2), output-path checks, and loading a trained model (spec +
checkpoint + preprocessing) for evaluation."""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path


def fail(msg: str) -> int:
    """Print one message on stderr; exit status 1."""
    print(msg, file=sys.stderr)
    return 1


def known_errors() -> tuple:
    """Exceptions that mean "bad input", reported as one message (no traceback)."""
    import netspec
    from runtime.checkpoint import CheckpointError
    from runtime.data import DataError
    from runtime.export import ExportError
    from runtime.train import TrainingDiverged
    errs = [netspec.SpecError, DataError, CheckpointError, TrainingDiverged, ExportError, ValueError,
            OSError]
    try:
        from compiler.net import CompileError
        errs.append(CompileError)
    except ImportError:
        pass
    return tuple(errs)


def load_spec(path):
    import netspec
    return netspec.load(Path(path))


def read_checkpoint(path):
    """(arrays, meta) of a checkpoint file (CheckpointError when unusable: also for a
    directory or a file that is no .npz at all, e.g. the spec given as ``--checkpoint``)."""
    from runtime.checkpoint import CheckpointError, load_checkpoint
    check_npz(path, CheckpointError)
    return load_checkpoint(Path(path))


def preprocessor(spec, arrays: dict, ckpt_path, splits=None):
    """The fitted Preprocessor of a run: from the checkpoint's ``prep/*`` arrays, else from
    ``checkpoint.npz`` beside it (best.npz / snapshot files hold weights only), else refitted
    on the training split (what training did, given the same data and seed)."""
    from runtime.preprocess import Preprocessor
    cfg = (spec.train or {}).get("preprocess")
    prep = {k[5:]: v for k, v in arrays.items() if k.startswith("prep/")}
    if not prep:
        side = Path(ckpt_path).with_name("checkpoint.npz")
        if side.is_file() and side != Path(ckpt_path):
            prep = {k[5:]: v for k, v in read_checkpoint(side)[0].items() if k.startswith("prep/")}
    pre = Preprocessor(cfg)
    if prep:
        pre = Preprocessor.from_state(cfg, prep)
    elif not pre.fitted:
        if splits is None:
            splits = load_splits(spec, None)
        pre.fit(splits.train[0])
    from runtime.augment import eval_crop
    crop = eval_crop((spec.train or {}).get("augment"))
    return _Cropped(pre, crop) if crop else pre


class _Cropped:
    """A run's evaluation-time input transform when it trained on random (h, w) crops: the
    preprocessing, then the centre (h, w) window (what validation saw during training)."""

    def __init__(self, pre, crop):
        self.pre, self.crop = pre, crop

    def apply(self, x):
        from runtime.augment import center_crop
        x = self.pre.apply(x)
        return center_crop(x, self.crop) if x.ndim >= 3 else x

    __call__ = apply


def load_splits(spec, data):
    from runtime import data as D
    from runtime.train_utils import data_config
    tr = spec.train or {}
    dcfg = data_config(tr.get("data"), data)
    base = D.spec_dir(spec)
    if dcfg.get("source") == "npz" and isinstance(dcfg.get("path"), (str, Path)):
        check_npz(D._resolve(dcfg["path"], base), D.DataError)
    ds = D.load_dataset(dcfg, base_dir=base)
    return D.split_dataset(ds, float(dcfg.get("val_split", 0.1)), float(dcfg.get("test_split", 0.2)),
                           int(dcfg.get("seed", 0)))


def with_ema(spec, arrays: dict) -> dict:
    """A checkpoint's arrays with its Polyak/EMA weights (``ema/arena``) as ``params/*``
    (ValueError naming the fix when the run kept none)."""
    import netspec
    from runtime.ensemble import ema_weights
    return {**arrays, **ema_weights(netspec.check(spec), arrays)}


def refuse_reconstruction(spec, cmd: str) -> None:
    """eval / predict report classes: a net trained to reconstruct its input has none."""
    if (getattr(spec, "train", None) or {}).get("target") == "input":
        raise ValueError(f"this net is trained to reconstruct its input (train.target: input): "
                         f"{cmd} reports classes; use `netspec features` for its outputs")


def build_net(spec, arrays: dict, backend: str = "cpu"):
    """An eval-mode compiled net with the checkpoint's weights loaded."""
    import compiler
    from runtime.train_utils import load_weights
    bs = int((spec.train or {}).get("batch_size", 64) or 64)
    net = compiler.compile(spec, backend=backend, batch_size=bs, train=False)
    load_weights(net, arrays)
    return net


# ------------------------------------------------------------------ command-line values
# argparse ``type=`` helpers: a bad value is a usage error (exit 2, argparse's own
# "netspec CMD: error: argument --flag: ..." message), never a failure deep in a run.

def positive_int(text: str) -> int:
    """An integer >= 1 (``--batch-size``, ``--threads``, ``--top``, ``--patch`` ...)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def positive_float(text: str) -> float:
    """A finite float > 0 (``--scale``), or a fraction ``a/b`` (``16/255``); nan, inf, 0 and
    negatives are refused."""
    try:
        num, _, den = str(text).partition("/")
        v = float(num) / float(den) if den else float(num)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a positive number (or a fraction like 16/255), "
                                         f"got {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return v


def int_range(lo: int, hi: int, what: str = "a value"):
    """An argparse type accepting integers in [lo, hi]."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"{what} must be in {lo}..{hi}, got {v}")
        return v
    return parse


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask; os.cpu_count() where unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# ------------------------------------------------------------------ files and messages

def error_message(cmd: str, e: BaseException, writes=()) -> str:
    """``netspec CMD: <message>`` for a bad-input exception.  An OSError becomes
    ``cannot read 'PATH': <reason>`` (``cannot write`` when PATH is one of ``writes``, or
    the exception names two paths as a failed rename onto the output does), never the raw
    ``[Errno 21] ...``."""
    if isinstance(e, OSError) and (e.filename is not None or e.filename2 is not None):
        path = e.filename2 if e.filename2 is not None else e.filename
        ap = os.path.abspath(str(path))
        outs = [os.path.abspath(str(w)) for w in writes]     # the output or a folder above it
        write = e.filename2 is not None or any(o == ap or o.startswith(ap.rstrip(os.sep) + os.sep)
                                               for o in outs)
        reason = e.strerror or str(e)
        return f"netspec {cmd}: cannot {'write' if write else 'read'} {str(path)!r}: {reason}"
    return f"netspec {cmd}: {e}"


def same_file(a, b) -> bool:
    """True when paths a and b name the same file (also via links / ``..``)."""
    try:
        return os.path.samefile(a, b)
    except OSError:                      # one does not exist (yet): compare resolved paths
        try:
            return Path(a).resolve() == Path(b).resolve()
        except (OSError, RuntimeError):
            return False


def output_problem(cmd: str, out, inputs: dict, example: str = "out") -> tuple[int, str] | None:
    """(exit status, message) when the output file ``out`` cannot be written sensibly, else
    None: it is one of the ``inputs`` ({flag or role: path}; writing would destroy the file
    being read; exit 2) or a directory (exit 1; ``example`` is the file name suggested)."""
    for what, p in inputs.items():
        if p is not None and same_file(out, p):
            return 2, (f"netspec {cmd}: the output {str(out)!r} is the {what} file {str(p)!r}; "
                       f"writing it would destroy the input -- choose another output path")
    s = str(out)
    if Path(s).is_dir() or s.endswith(("/", os.sep)):
        return 1, (f"netspec {cmd}: cannot write {s!r}: it is a directory; give a file name "
                   f"such as {os.path.join(s, example)!r}")
    return None


def fail_output(cmd: str, out, inputs: dict, example: str = "out") -> int | None:
    """Print ``output_problem``'s message and return its exit status, or None when fine."""
    p = output_problem(cmd, out, inputs, example)
    if p is None:
        return None
    print(p[1], file=sys.stderr)
    return p[0]




def check_npz(path, error):
    """Raise ``error(message)`` when ``path`` is a directory or an existing file that is not
    a zip archive: np.load would otherwise try it as a pickle and advise ``allow_pickle=``.
    Missing files and truncated zips are left to the real loader (better messages)."""
    p = Path(path)
    if p.is_dir():
        raise error(f"{p}: is a directory, not an .npz file")
    if not p.is_file():
        return
    from runtime.checkpoint import ZIP_MAGIC, file_head
    try:
        head = file_head(p)
    except OSError:
        return                          # the loader reports unreadable files
    if head.startswith(b"\x93NUMPY"):
        raise error(f"{p} is not an .npz file (it is a single .npy array)")
    if not head.startswith(ZIP_MAGIC):
        raise error(f"{p} is not an .npz file")
