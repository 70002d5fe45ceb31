"""Shared by ``netspec train|eval|predict``: error reporting and loading a trained model
(spec + checkpoint + preprocessing) for evaluation."""
from __future__ import annotations

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
    """(arrays, meta) of a checkpoint file (CheckpointError when unusable)."""
    from runtime.checkpoint import load_checkpoint
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
        return Preprocessor.from_state(cfg, prep)
    if pre.fitted:
        return pre
    if splits is None:
        splits = load_splits(spec, None)
    return pre.fit(splits.train[0])


def load_splits(spec, data):
    from runtime import data as D
    from runtime.train_utils import data_config
    tr = spec.train or {}
    dcfg = data_config(tr.get("data"), data)
    f = getattr(spec, "file", None)
    base = Path(f).parent if f and not str(f).startswith("<") else None
    ds = D.load_dataset(dcfg, base_dir=base)
    return D.split_dataset(ds, float(dcfg.get("val_split", 0.1)), float(dcfg.get("test_split", 0.2)),
                           int(dcfg.get("seed", 0)))


def build_net(spec, arrays: dict, backend: str = "cpu"):
    """An eval-mode compiled net with the checkpoint's weights loaded."""
    import compiler
    from runtime.train_utils import load_weights
    bs = int((spec.train or {}).get("batch_size", 64) or 64)
    net = compiler.compile(spec, backend=backend, batch_size=bs, train=False)
    load_weights(net, arrays)
    return net
