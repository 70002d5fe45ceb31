#!/usr/bin/env bash
# One-shot device check of the numba-CUDA backend, for a session WITH an NVIDIA GPU.
# Run from the repository root:  bash benchmarks/gpu_check.sh   (about 5-8 minutes on an H100)
#   1. environment: numpy < 2.5 (numba-cuda 0.30 breaks under 2.5), numba.cuda.is_available()
#   2. tests/test_cuda.py (PTX type checks, simulator parity runs on the CPU side)
#   3. CPU vs CUDA parity, forward + every gradient, relative max error <= 1e-4:
#      lenet5 (B=8), resnet20 (B=4), unet (B=1)
#   4. netspec train specs/digits.yaml --backend cuda  -> test accuracy >= 0.97
#   5. benchmarks/bench_cuda.py (netspec vs PyTorch cuDNN, writes benchmarks/results/cuda.*)
# Writes everything under ${OUT:-gpu_check_out}/ and exits non-zero on the first failure.
set -euo pipefail
PY=${PY:-python}
OUTDIR=${OUT:-gpu_check_out}
mkdir -p "$OUTDIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset NUMBA_ENABLE_CUDASIM

echo "== 1. environment"
$PY - <<'PY'
import numpy, numba, sys
from numba import cuda
print("numpy", numpy.__version__, "numba", numba.__version__)
if tuple(int(p) for p in numpy.__version__.split(".")[:2]) >= (2, 5):
    sys.exit("numpy >= 2.5: install numpy<2.5 first (DESIGN.md §5: use a wheelhouse on offline machines)")
if not cuda.is_available():
    sys.exit("numba.cuda.is_available() is False")
print("device", cuda.get_current_device().name)
PY

echo "== 2. tests/test_cuda.py"
timeout 600 $PY -m pytest -q tests/test_cuda.py 2>&1 | tee "$OUTDIR/test_cuda.txt" | tail -3

echo "== 3. parity CPU vs CUDA"
timeout 900 $PY - <<'PY' 2>&1 | tee "$OUTDIR/parity.txt"
import sys, numpy as np, compiler
from compiler.codegen.cuda import to_cuda
def rel(a, b):
    return float(np.abs(np.asarray(a, np.float64) - b).max() / max(np.abs(b).max(), 1e-6))
bad = []
for name, B in (("lenet5", 8), ("resnet20", 4), ("unet", 1)):
    spec = f"specs/{name}.yaml"
    cpu = compiler.compile(spec, backend="cpu", batch_size=B, seed=0)
    gpu = to_cuda(compiler.compile(spec, backend="cuda", batch_size=B, seed=0))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, *cpu.input_shape)).astype(np.float32)
    (lname, _), = cpu.loss_cfg.items()
    if lname in ("softmax_cross_entropy", "hinge"):
        t = rng.integers(0, int(np.prod(cpu.output_shape)), B)
    else:
        t = rng.random((B, *cpu.output_shape)).astype(np.float32)
    e = rel(gpu.forward(x), cpu.forward(x))
    l1, g1 = cpu.loss_and_grads(x, t)
    l2, g2 = gpu.loss_and_grads(x, t)
    ge = max(rel(g2[k], g1[k]) for k in g1)
    worst = max(g1, key=lambda k: rel(g2[k], g1[k]))
    print(f"{name}: forward {e:.2e}  loss {l1:.6f} vs {l2:.6f}  worst grad {worst} {ge:.2e}", flush=True)
    if not (e <= 1e-4 and ge <= 1e-4 and abs(l1 - l2) <= 1e-4 * max(1.0, abs(l1))):
        bad.append(name)
sys.exit(f"parity FAILED: {bad}" if bad else 0)
PY

echo "== 4. train digits on the GPU"
timeout 600 $PY -m netspec train specs/digits.yaml --backend cuda --out "$OUTDIR/digits" --no-progress
$PY - "$OUTDIR/digits/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print("test_accuracy", s["test_accuracy"], "images/s", s.get("images_per_second"))
sys.exit(0 if s["test_accuracy"] >= 0.97 else "digits test accuracy below 0.97")
PY

echo "== 5. benchmark"
timeout 600 $PY benchmarks/bench_cuda.py --steps 50 | tee "$OUTDIR/bench.txt"
cp benchmarks/results/cuda.json benchmarks/results/cuda.md "$OUTDIR/" 2>/dev/null || true
echo "gpu_check: all passed"
