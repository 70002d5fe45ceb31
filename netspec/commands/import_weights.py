"""``netspec import-weights SPEC FILE -o CKPT [--skip LAYER ...] [--allow-missing]``.

Turns weights from elsewhere -- a torch state_dict (read with ``torch.load(weights_only=True)``,
never unpickling code) or an .npz of named arrays -- into a netspec checkpoint, checking
them against the spec's net by PyTorch name: every missing, unexpected or mis-shaped tensor
is reported by name with both shapes and nothing is written (exit 1).  ``--skip LAYER``
ignores a layer's tensors in the file and initialises them fresh (e.g. a new classifier for
transfer learning); ``--allow-missing`` initialises absent tensors fresh instead of failing.
The checkpoint then serves ``init: {checkpoint: CKPT}``, ``netspec eval`` or ``export``.
CKPT may not be FILE itself (exit 2: the weights being read would be replaced) nor a directory.
"""
from __future__ import annotations

import argparse

import numpy as np

from ._common import check_npz, error_message, fail, fail_output, known_errors, load_spec


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("import-weights", help="import a torch state_dict / .npz as a checkpoint",
                              description="Check weights from a torch state_dict or .npz against "
                              "a spec (by PyTorch name and shape) and write a netspec checkpoint.")
    p.add_argument("spec", metavar="SPEC", help="the spec file (.yaml)")
    p.add_argument("file", metavar="FILE", help="state_dict (.pt/.pth) or .npz")
    p.add_argument("-o", "--out", required=True, metavar="CKPT", help="checkpoint to write (.npz)")
    p.add_argument("--skip", nargs="+", default=[], metavar="LAYER",
                   help="layers to initialise fresh (their tensors in FILE are ignored)")
    p.add_argument("--allow-missing", action="store_true",
                   help="initialise tensors absent from FILE fresh instead of failing")
    p.add_argument("--seed", type=int, default=0, help="seed for fresh initialisation")
    return p


def fresh(report, names, seed: int) -> dict[str, np.ndarray]:
    """PyTorch-default initial values for the named tensors (as compiler.compile draws them)."""
    from compiler.init import init_array
    rng = np.random.default_rng(seed)
    out = {}
    specs = {full: (ps, L) for L in report.layers for full, ps in L.param_specs}
    for n in names:
        ps, L = specs[n]
        if ps.init.startswith("norm_of:"):
            continue
        out[n] = init_array(ps.init, tuple(ps.shape), ps.fan_in, rng, np.float32, ps.fan_out)
    for n in names:      # weight norm: g = ||v|| per output unit
        ps, L = specs[n]
        if ps.init.startswith("norm_of:"):
            v = out.get(f"{L.name}.{ps.init.split(':', 1)[1]}")
            if v is None:
                raise ValueError(f"{n}: cannot initialise from a weight that is not fresh too")
            out[n] = np.sqrt((v.astype(np.float64) ** 2).reshape(v.shape[0], -1).sum(1)) \
                .reshape(ps.shape).astype(np.float32)
    return out


def import_weights(spec, file, out, skip=(), allow_missing=False, seed=0):
    """-> (checkpoint path, problems list (empty on success), counts dict)."""
    import netspec
    from runtime.checkpoint import save_checkpoint
    from runtime.export import expected_tensors, match_weights, read_weights
    from runtime.transfer import _skipped
    report = netspec.check(spec)
    src = read_weights(file)
    src = {k: v for k, v in src.items() if not _skipped(k, skip)}
    ok, problems = match_weights(report, src)
    want = expected_tensors(report)
    fresh_names = [k for k in want if k not in ok and (_skipped(k, skip) or k not in src)]
    problems = [p for p in problems if not (p.startswith("missing tensor ") and
                                            (allow_missing or _skipped(p.split()[2], skip)))]
    if problems:
        return None, problems, {}
    init = fresh(report, fresh_names, seed)
    arrays = {}
    for k, (shape, kind) in want.items():
        v = ok[k] if k in ok else init[k]
        arrays[f"{'params' if kind == 'param' else 'buffers'}/{k}"] = np.asarray(v, np.float32)
    save_checkpoint(out, arrays, {"spec": report.name, "imported_from": str(file),
                                  "fresh": fresh_names})
    return out, [], {"imported": len(ok), "fresh": len(fresh_names)}


def check_weights_file(path, error) -> None:
    """Raise ``error(message)`` for a FILE that is plainly neither an .npz (a zip) nor a torch
    file (a zip, or a legacy pickle starting with 0x80): torch.load's complaint about such
    files ends with the advice to retry with ``weights_only=False`` -- never to be followed."""
    from pathlib import Path
    p = Path(path)
    if p.suffix.lower() == ".npz" or p.is_dir():
        check_npz(p, error)
        return
    if not p.is_file():
        return
    from runtime.checkpoint import ZIP_MAGIC, file_head
    try:
        head = file_head(p)
    except OSError:
        return
    if not (head.startswith(ZIP_MAGIC) or head.startswith(b"\x80")):   # zip, or a legacy pickle
        raise error(f"{p} is neither an .npz nor a torch state_dict file (.pt/.pth)")


def _concise(e: Exception, file) -> str:
    """torch.load's weights_only refusal, without its advice to unpickle arbitrary code."""
    s = str(e)
    if "weights_only" in s or "Weights only load failed" in s:
        return (f"{file}: not a plain torch state_dict: it holds pickled objects other than "
                f"tensors, which netspec never unpickles (save model.state_dict() instead)")
    return s


def run(args) -> int:
    from runtime.export import ExportError
    bad = fail_output("import-weights", args.out, {"input weights": args.file}, "checkpoint.npz")
    if bad is not None:
        return bad
    try:
        spec = load_spec(args.spec)
        check_weights_file(args.file, ExportError)
        path, problems, n = import_weights(spec, args.file, args.out, args.skip,
                                           args.allow_missing, args.seed)
    except ExportError as e:
        return fail(f"netspec import-weights: {_concise(e, args.file)}")
    except known_errors() as e:
        return fail(error_message("import-weights", e, writes=[args.out]))
    if problems:
        return fail(f"netspec import-weights: {args.file} does not fit {spec.name} "
                    f"({len(problems)} problems):\n  " + "\n  ".join(problems)
                    + "\n(--skip LAYER initialises a layer fresh; --allow-missing fills absent tensors)")
    print(f"wrote {path}: {n['imported']} tensors imported, {n['fresh']} initialised fresh")
    return 0
