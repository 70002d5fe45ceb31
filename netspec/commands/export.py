"""``netspec export SPEC --checkpoint FILE --format onnx|npz|torch -o OUT [--ema] [--verify]``.

Writes trained weights for other tools: ONNX (built from the inference IR, checked with
onnx.checker; input "input" (N, C, H, W), output "output"), a plain .npz keyed by PyTorch
names, or a torch state_dict (``torch.save`` of tensors).  ``--ema`` exports the
Polyak/EMA weights the training loop kept (``ema/arena``).  The checkpoint must fit the net
(every format).  ``--verify`` (ONNX) runs the file under onnxruntime against the compiled net
on random inputs and prints the max relative difference; above ``VERIFY_TOL`` it exits 1.
``--opset`` must lie in ``MIN_OPSET``..(the newest opset the installed onnx knows): a usage
error (exit 2) otherwise.  The output may not be the ``--checkpoint`` file (exit 2) nor a
directory.  Exit 0, or 1 with one message.
"""
from __future__ import annotations

import argparse

import numpy as np

from compiler.outputs import main_output
from ._common import (error_message, fail, fail_output, known_errors, load_spec,
                      read_checkpoint)

# The ONNX ops the exporter emits (Resize with an optional roi, Pad/Slice with tensor inputs,
# MaxPool ceil_mode ...) exist in this form from opset 13; 17 is the default.
MIN_OPSET = 13


def max_opset() -> tuple[int, str]:
    """(the newest ONNX opset the installed onnx package knows, where that bound comes
    from); (17, ...) without onnx."""
    try:
        from onnx import defs
        return int(defs.onnx_opset_version()), "the installed onnx supports up to"
    except ImportError:
        return 17, "without the onnx package the default is"


def _opset(text: str) -> int:
    """argparse type of ``--opset``: an integer in MIN_OPSET..max_opset()."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    hi, why = max_opset()
    if not MIN_OPSET <= v <= hi:
        raise argparse.ArgumentTypeError(f"ONNX opset must be in {MIN_OPSET}..{hi} ({why} {hi}), got {v}")
    return v


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("export", help="export trained weights: ONNX, .npz or a torch state_dict",
                              description="Export a checkpoint's weights as ONNX, .npz (PyTorch "
                              "names) or a torch state_dict.")
    p.add_argument("spec", metavar="SPEC", help="the spec file (.yaml)")
    p.add_argument("--checkpoint", required=True, metavar="FILE", help="checkpoint.npz / best.npz")
    p.add_argument("--format", choices=("onnx", "npz", "torch"), default="onnx")
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="output file")
    p.add_argument("--ema", action="store_true", help="export the Polyak/EMA weights (ema/arena)")
    p.add_argument("--opset", type=_opset, default=None,
                   help=f"ONNX opset, {MIN_OPSET}..the installed onnx's newest (default 17)")
    p.add_argument("--verify", action="store_true",
                   help="ONNX: compare onnxruntime with the compiled net on random inputs "
                        "(exit 1 above a relative difference of 1e-3)")
    return p


VERIFY_TOL = 1e-3      # float32 onnxruntime vs our kernels: measured <= 7e-5 over 2,000 fuzzed nets


class OnnxRuntimeFailed(Exception):
    """onnxruntime could not load or run the exported file (e.g. an opset it lacks)."""


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return (s.splitlines()[0] if s else type(e).__name__)[:300]


def verify_onnx(spec, weights, path, n: int = 4, seed: int = 0) -> float:
    """Max |ours - onnxruntime| / max |ours| on n random inputs."""
    import compiler
    from runtime.export import onnx_forward
    net = compiler.compile(spec, batch_size=n, train=False)
    net.load_params(weights)
    x = np.random.default_rng(seed).standard_normal((n, *net.input_shape)).astype(np.float32)
    a = main_output(net.forward(x))
    try:
        b = onnx_forward(path, x)
    except ImportError:
        raise
    except Exception as e:  # noqa: BLE001 -- onnxruntime raises its own exception classes
        raise OnnxRuntimeFailed(_first_line(e)) from e
    return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-30))


def run(args) -> int:
    import netspec
    from runtime.export import ExportError, export, match_weights, weights_from_arrays
    bad = fail_output("export", args.out, {"--checkpoint": args.checkpoint},
                      {"onnx": "model.onnx", "npz": "weights.npz", "torch": "model.pt"}[args.format])
    if bad is not None:
        return bad
    try:
        spec = load_spec(args.spec)
        arrays, meta = read_checkpoint(args.checkpoint)
        report = netspec.check(spec)
        if args.ema:
            from runtime.ensemble import ema_weights
            arrays = ema_weights(report, arrays)
        weights = weights_from_arrays(arrays)
        problems = match_weights(report, weights)[1]
        if problems:           # every format: an npz/torch file must fit the net as well
            raise ExportError("the checkpoint does not fit the net: " + "; ".join(problems))
        kw = {}
        if args.format == "onnx" and args.opset:
            kw["opset"] = args.opset
        if args.format == "torch":
            kw["num_batches_tracked"] = int(meta.get("step_count", 0) or 0)
        try:
            path = export(spec, weights, args.format, args.out, **kw)
        except Exception as e:  # noqa: BLE001 -- only onnx.checker's complaint is re-worded
            if args.format != "onnx" or type(e).__name__ != "ValidationError":
                raise
            raise ExportError(f"the net cannot be written as ONNX opset {kw.get('opset', 17)}: "
                              f"{_first_line(e)} (the default opset 17 works for every "
                              f"exportable layer)") from e
        extra = sum(k.endswith(".running_mean") for k in weights) if args.format == "torch" else 0
        msg = f"wrote {path} ({args.format}, {len(weights)} tensors" + (
            f" + {extra} num_batches_tracked, as nn.BatchNorm2d has them)" if extra else ")")
        if args.verify and args.format == "onnx":
            try:
                d = verify_onnx(spec, weights, path)
            except OnnxRuntimeFailed as e:
                import onnxruntime
                return fail(f"netspec export: {msg}, but onnxruntime {onnxruntime.__version__} "
                            f"cannot run it: {e}" + (" (try a lower --opset; the default is 17)"
                                                     if kw.get("opset", 17) > 17 else ""))
            msg += f"; onnxruntime vs compiled net: max relative difference {d:.2e}"
            if not d <= VERIFY_TOL:
                return fail(f"netspec export: {msg} -- above {VERIFY_TOL:g}: the exported model "
                            f"does not reproduce the net (please report this)")
    except ImportError as e:
        return fail(f"netspec export: missing package: {e.name or e}")
    except known_errors() + (ExportError,) as e:
        return fail(error_message("export", e, writes=[args.out]))
    print(msg)
    return 0
