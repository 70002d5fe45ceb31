"""Does the exported ONNX file compute what our compiled net computes?

Cases (each: export with ``runtime.export.export_onnx``, run with onnxruntime on the CPU,
compare with the compiled eval-mode net ``compiler.compile(spec, train=False).forward``):

* ``lenet5`` -- fresh initialisation (the compiler's init), random N(0,1) inputs;
* ``resnet20`` -- fresh initialisation, random inputs;
* ``resnet20`` with perturbed BatchNorm (random gamma/beta/running mean/var), so the BN
  folding the inference graph does is exercised with non-trivial statistics;
* ``digits`` -- a trained digits checkpoint (``--checkpoint``, else trains specs/digits.yaml
  for 20 epochs into a temp dir), on the real test images after the run's preprocessing.

Reported per case: max relative difference max|ours - ort| / max|ours|, max absolute
difference, and the fraction of inputs whose argmax agrees. Goal: relative <= 1e-4 (float32).
Writes ``benchmarks/results/onnx_parity.json`` and ``.md``.
Usage: ``python benchmarks/onnx_parity.py [--checkpoint runs/digits/checkpoint.npz]``.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
GOAL = 1e-4
N = 8


def compare(spec, weights: dict, x: np.ndarray, path: Path) -> dict:
    """Export ``weights`` to ``path``, run both on x (N, C, H, W) -> the numbers."""
    import compiler
    from runtime.export import export_onnx, onnx_forward
    net = compiler.compile(spec, batch_size=len(x), train=False)
    net.load_params(weights)
    export_onnx(spec, weights, path)
    t = time.perf_counter()
    ours = np.asarray(net.forward(x), np.float64).reshape(len(x), -1)
    ort = np.asarray(onnx_forward(path, x), np.float64).reshape(len(x), -1)
    return {"max_rel_diff": float(np.abs(ours - ort).max() / max(np.abs(ours).max(), 1e-30)),
            "max_abs_diff": float(np.abs(ours - ort).max()),
            "max_abs_output": float(np.abs(ours).max()),
            "argmax_agreement": float((ours.argmax(1) == ort.argmax(1)).mean()),
            "inputs": int(len(x)), "onnx_bytes": path.stat().st_size,
            "seconds": time.perf_counter() - t}


def fresh_weights(spec, perturb_bn: bool = False, seed: int = 0) -> dict:
    """The compiler's initial params + buffers (optionally with random BN statistics)."""
    import compiler
    net = compiler.compile(spec, batch_size=1, train=False)
    w = {k: np.array(v) for k, v in {**net.params, **net.buffers}.items()}
    if perturb_bn:
        rng = np.random.default_rng(seed)
        for k, v in w.items():
            if k.endswith("running_mean") or k.endswith(".bias") and f"{k[:-5]}.running_var" in w:
                w[k] = (0.2 * rng.standard_normal(v.shape)).astype(v.dtype)
            elif k.endswith("running_var"):
                w[k] = rng.uniform(0.5, 2.0, v.shape).astype(v.dtype)
            elif k.endswith(".weight") and f"{k[:-7]}.running_var" in w:
                w[k] = rng.uniform(0.5, 1.5, v.shape).astype(v.dtype)
    return w


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default=None, help="a trained specs/digits.yaml checkpoint")
    args = ap.parse_args(argv)
    import netspec
    from netspec.commands._common import load_splits, preprocessor
    from runtime.checkpoint import load_checkpoint
    from runtime.export import weights_from_arrays
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    cases = []
    with tempfile.TemporaryDirectory(prefix="onnx_parity_") as tmp:
        tmp = Path(tmp)
        for name, perturb in (("lenet5", False), ("resnet20", False), ("resnet20", True)):
            spec = netspec.load(ROOT / "specs" / f"{name}.yaml")
            shape = netspec.check(spec).input_shape
            x = rng.standard_normal((N, *shape)).astype(np.float32)
            r = compare(spec, fresh_weights(spec, perturb), x, tmp / f"{name}.onnx")
            r.update(case=f"{name}, fresh init" + (", random BN statistics" if perturb else ""),
                     spec=f"specs/{name}.yaml", input="N(0,1)")
            cases.append(r)
            print(f"{r['case']}: max rel diff {r['max_rel_diff']:.2e}", flush=True)
        spec = netspec.load(ROOT / "specs" / "digits.yaml")
        ck = args.checkpoint
        if ck is None:
            from runtime.train import train
            train(spec, tmp / "digits", progress=False)
            ck = tmp / "digits" / "checkpoint.npz"
        arrays = load_checkpoint(Path(ck))[0]
        splits = load_splits(spec, None)
        x = preprocessor(spec, arrays, ck, splits).apply(splits.test[0]).astype(np.float32)
        r = compare(spec, weights_from_arrays(arrays), x, tmp / "digits.onnx")
        r.update(case="digits, trained checkpoint (20 epochs)", spec="specs/digits.yaml",
                 input=f"the {len(x)} test images, preprocessed")
        cases.append(r)
        print(f"{r['case']}: max rel diff {r['max_rel_diff']:.2e}", flush=True)
    import onnxruntime
    res = {"goal_max_rel_diff": GOAL, "all_within_goal": all(c["max_rel_diff"] <= GOAL for c in cases),
           "cases": cases, "onnxruntime": onnxruntime.__version__, "opset": 17,
           "machine": f"{platform.machine()} {platform.system()}, python {platform.python_version()}",
           "seconds": time.perf_counter() - t0}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "onnx_parity.json").write_text(json.dumps(res, indent=2) + "\n")
    lines = ["# ONNX export parity: onnxruntime vs our compiled forward", "",
             f"float32, opset 17, onnxruntime {onnxruntime.__version__} (CPU). Goal: max relative "
             f"difference <= {GOAL:g}.", "",
             "| case | inputs | max rel diff | max abs diff | argmax agreement |",
             "|---|---|---|---|---|"]
    for c in cases:
        lines.append(f"| {c['case']} | {c['inputs']} ({c['input']}) | {c['max_rel_diff']:.2e} | "
                     f"{c['max_abs_diff']:.2e} | {c['argmax_agreement']:.3f} |")
    lines += ["", "Regenerate: `python benchmarks/onnx_parity.py`."]
    (RESULTS / "onnx_parity.md").write_text("\n".join(lines) + "\n")
    return 0 if res["all_within_goal"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
