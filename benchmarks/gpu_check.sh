#!/usr/bin/env bash
# One-shot device check of the numba-CUDA backend, for a session WITH an NVIDIA GPU.
# Run from the repository root:  bash benchmarks/gpu_check.sh     (about 5 minutes on an H100)
#   0. wheels: if .whl/ holds numpy<2.5 (numba 0.68 / numba-cuda 0.30 break under numpy 2.5,
#      DESIGN.md §5) it is installed into /tmp/site; a numba-cuda that finds no NVVM gets the
#      nvidia-cuda-nvcc-cu12 wheel from .whl/ (CUDA_HOME pointed at it).
#   1. probe: numba.cuda.is_available(), one kernel compiled and run.
#   2. benchmarks/bench_cuda.py alone on the GPU (netspec vs PyTorch cuDNN; cuda.json/.md),
#      then benchmarks/gpu_profile.py (every launch of a step timed with CUDA events).
#   3. in parallel (the GPU is shared; correctness only):
#      - tests/test_cuda.py gpu all: every op case of the gradient table, CUDA vs numpy reference,
#        and the tiny net (forward, loss, grads, one step);
#      - benchmarks/gpu_parity.py: lenet5 (B=8), resnet20 (B=4), unet-small (B=2) in float64
#        (<= 1e-7) and float32 (see its BARS): forward, loss, gradients, parameters and
#        buffers after two SGD steps;
#      - netspec train specs/digits.yaml --backend cuda  -> test accuracy >= 0.97.
# Logs go to ${OUT:-gpu_check_out}/ (8 files at most, for the device tool); exit status 1 if
# any part failed.  Time limits per part: T_BENCH, T_PROF, T_PAR (seconds); PARTS picks the parts
# (default "bench profile ops parity digits"), PARITY_NETS the parity nets (NET:B ...).  ALT_ENV="VAR=value ..."
# repeats the benchmark under those settings (appended to bench.txt) for an A/B in one run.
set -uo pipefail
PY=${PY:-python3}
O=${OUT:-gpu_check_out}
mkdir -p "$O"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
export NETSPEC_CACHE_DIR=${NETSPEC_CACHE_DIR:-/tmp/netspec-cache}
unset NUMBA_ENABLE_CUDASIM
T_BENCH=${T_BENCH:-90}  # seconds for the benchmark (first, alone on the GPU)
T_PROF=${T_PROF:-45}    # seconds for the per-launch profile
T_PAR=${T_PAR:-150}     # seconds for the parallel correctness part
PARTS=${PARTS:-"bench profile ops parity digits"}      # which parts run
PARITY_NETS=${PARITY_NETS:-"lenet5:8 resnet20:4 unet-small:2"}
fail=0

probe() {
    timeout 120 $PY - <<'PY'
import sys, time, numpy as np
t0 = time.time()
import numba
from numba import cuda
from importlib.metadata import version, PackageNotFoundError
try:
    nc = version("numba-cuda")
except PackageNotFoundError:
    nc = "absent"
def ver(p):
    try:
        return version(p)
    except PackageNotFoundError:
        return "absent"
print("python", sys.version.split()[0], "numpy", np.__version__, "numba", numba.__version__, "numba-cuda", nc,
      "cuda-core", ver("cuda-core"), "cuda-bindings", ver("cuda-bindings"))
assert cuda.is_available(), "numba.cuda.is_available() is False"
d = cuda.get_current_device()
print("device", getattr(d, "name", "?"), "cc", getattr(d, "compute_capability", "?"))
@cuda.jit
def k(a):
    i = cuda.grid(1)
    if i < a.size:
        a[i] = 2.0 * a[i] + 1.0
a = cuda.to_device(np.arange(1000, dtype=np.float32))
k[8, 128](a)
assert np.allclose(a.copy_to_host(), 2 * np.arange(1000) + 1)
print(f"probe ok in {time.time() - t0:.1f} s")
PY
}

setup() {   # runs in this shell (a function, not a pipe), so its exports stay
    echo "== 0. wheels"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    if ls .whl/numpy-*.whl >/dev/null 2>&1; then
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/numpy-*.whl && export PYTHONPATH="/tmp/site:$PYTHONPATH"
    fi
    echo "== 1. probe"
    if ! probe; then
        echo "-- probe failed; retrying with the nvidia-cuda-nvcc-cu12 wheel as CUDA_HOME"
        if ls .whl/nvidia_cuda_nvcc*.whl >/dev/null 2>&1; then
            $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/nvcc \
                .whl/nvidia_cuda_nvcc*.whl
            export CUDA_HOME=/tmp/nvcc/nvidia/cuda_nvcc PYTHONPATH="/tmp/nvcc:$PYTHONPATH"
        fi
        if ! probe; then
            echo "-- probe failed again; retrying with the machine's own numpy"
            export PYTHONPATH="${PYTHONPATH/\/tmp\/site:/}"
            probe || { echo "gpu_check: no usable numba-cuda; stopping"; return 1; }
        fi
    fi
}
setup >"$O/env.txt" 2>&1
rc=$?
cat "$O/env.txt"
[ "$rc" = 0 ] || exit 1

has() { case " $PARTS " in *" $1 "*) return 0;; esac; return 1; }
if has bench; then
echo "== 2. benchmark alone on the GPU (${T_BENCH} s), then the per-launch profile (${T_PROF} s)"
timeout "$T_BENCH" $PY benchmarks/bench_cuda.py --steps 50 --nets resnet20,lenet5 --out "$O" \
    >"$O/bench.txt" 2>&1 || fail=1
tail -n 6 "$O/bench.txt"
if [ -n "${ALT_ENV:-}" ]; then   # A/B: the benchmark again under other settings, e.g. ALT_ENV=NETSPEC_CUDA_THIN=0
    echo "-- again with $ALT_ENV"
    { echo "== with $ALT_ENV"; env $ALT_ENV timeout "$T_BENCH" $PY benchmarks/bench_cuda.py --steps 50 \
        --nets resnet20,lenet5 --out /tmp/bench_alt 2>&1; } >>"$O/bench.txt" || fail=1
    tail -n 4 "$O/bench.txt"
fi
fi
if has profile; then
timeout "$T_PROF" $PY benchmarks/gpu_profile.py resnet20:128 lenet5:64 >"$O/profile.txt" 2>&1 || fail=1
grep -A 12 '^==' "$O/profile.txt" || true
fi

echo "== 3. correctness, in parallel (${T_PAR} s)"
p1= p3=
if has ops; then timeout "$T_PAR" $PY tests/test_cuda.py gpu all >"$O/ops.txt" 2>&1 & p1=$!; fi
# each net in its own process (the CPU side compiles in parallel; unet-small's float64
# reference compile alone took more than 60 s on an H200 machine's CPU)
has parity || PARITY_NETS=
for net in $PARITY_NETS; do
    timeout "$T_PAR" $PY benchmarks/gpu_parity.py "$net" >"/tmp/parity_${net%%:*}.txt" 2>&1 &
    pp="${pp:-} $!"
done
digits() {
    timeout "$T_PAR" $PY -m netspec train specs/digits.yaml --backend cuda --out /tmp/digits_run --no-progress \
      && $PY - /tmp/digits_run/summary.json <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print("test_accuracy", s["test_accuracy"], "images/s", s.get("images_per_second"))
sys.exit(0 if s["test_accuracy"] >= 0.97 else "digits test accuracy below 0.97")
PY
}
if has digits; then digits >"$O/digits.txt" 2>&1 & p3=$!; fi
for p in $p1 ${pp:-} $p3; do wait $p || fail=1; done
for net in $PARITY_NETS; do cat "/tmp/parity_${net%%:*}.txt"; done >"$O/parity.txt"
tail -n 3 "$O/ops.txt" "$O/digits.txt" 2>/dev/null
grep -v '^  ' "$O/parity.txt" | grep -v -i warn | tail -n 9
[ "$fail" = 0 ] && echo "gpu_check: all passed" || echo "gpu_check: some part FAILED (see $O/)"
exit "$fail"
