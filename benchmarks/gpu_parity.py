"""CPU vs CUDA parity of one whole net, in float64 and float32: forward, loss, every
gradient, and the parameters and BatchNorm buffers after two SGD-momentum steps (bars: BARS).

Usage: ``python benchmarks/gpu_parity.py NET[:B] ... [--dtypes float64,float32]``, NET a zoo
name (specs/NET.yaml), a spec path or unet-small; B defaults to 4.  Needs a GPU (or
NUMBA_ENABLE_CUDASIM=1 for tiny nets).  Prints one line per net and dtype and exits 1 if any
misses its bar.  benchmarks/gpu_check.sh runs it for lenet5, resnet20 and unet-small.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# float64 is the exactness gate (same maths, only the summation order differs).  float32:
# forward and loss element-wise against the CPU in float32; each gradient against the CPU's
# float64 gradient, in norm, no further off than the CPU's own float32 gradient (x2), because
# float32 rounding alone moves some gradients far more than 1e-4 (measured: ResNet-20 B=4
# layer1.2.bn2.bias, CPU float32 vs float64, 6.7e-3 element-wise -- a sum that nearly cancels
# behind a training-mode BatchNorm; U-Net final.bias sums 150,544 nearly cancelling terms).
# Without a float64 run the gradients are judged in norm against the CPU's float32 (1e-2, as
# tests/test_parity_torch.py does).  Parameters after two steps likewise ("param_vs_cpu":
# they carry the same rounding).
BARS = {"float64": {"forward": 1e-7, "loss": 1e-7, "grad": 1e-7, "param": 1e-7, "buffer": 1e-7},
        "float32": {"forward": 1e-4, "loss": 1e-4, "grad_vs_cpu": 2.0, "param_vs_cpu": 2.0, "buffer": 1e-4}}


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def rel_norm(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def parity(spec: str, B: int, dtype: str, ref64: dict | None = None) -> dict:
    """CUDA vs CPU in one dtype -> errors {"forward", "loss", "grad", "grad_norm", "param",
    "param_norm", "buffer", "worst_grad", "compile_s", "grads_cpu"}; with ``ref64`` (the CPU's
    float64 gradients) also "grad_vs_cpu": max over tensors of (CUDA's norm error against
    float64) / (the CPU float32's, floored at 1e-6), and "param_vs_cpu" the same for the
    parameters after two steps."""
    import compiler
    from compiler.codegen.cuda import to_cuda
    opt = {"sgd": {"lr": 0.01, "momentum": 0.9}}
    dt = np.dtype(dtype)
    cpu = compiler.compile(spec, backend="cpu", batch_size=B, seed=0, optimizer=opt, dtype=dt)
    t0 = time.perf_counter()
    gpu = to_cuda(compiler.compile(spec, backend="cuda", batch_size=B, seed=0, optimizer=opt, dtype=dt))
    compile_s = time.perf_counter() - t0
    print(f"  {dtype}: compiled for cuda in {compile_s:.1f} s", flush=True)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, *cpu.input_shape)).astype(dt)
    (lname, _), = cpu.loss_cfg.items()
    if lname in ("softmax_cross_entropy", "hinge"):
        t = rng.integers(0, int(np.prod(cpu.output_shape)), B)
    else:
        t = rng.random((B, *cpu.output_shape)).astype(dt)
    r = {"forward": rel(gpu.forward(x), cpu.forward(x))}
    l1, g1 = cpu.loss_and_grads(x, t)
    l2, g2 = gpu.loss_and_grads(x, t)
    r["loss"] = abs(l1 - l2) / max(1.0, abs(l1))
    errs = {k: rel(g2[k], g1[k]) for k in g1}
    r["worst_grad"] = max(errs, key=errs.get)
    r["grad"] = errs[r["worst_grad"]]
    r["grad_norm"] = max(rel_norm(g2[k], g1[k]) for k in g1)
    r["grads_cpu"] = g1
    cpu.lr = gpu.lr = 0.01
    for _ in range(2):
        cpu.step(x, t)
        gpu.step(x, t, want_loss=False)
    gpu.synchronize()
    r["param"] = max(rel(gpu.params[k], cpu.params[k]) for k in cpu.params)
    r["param_norm"] = max(rel_norm(gpu.params[k], cpu.params[k]) for k in cpu.params)
    r["params_cpu"] = {k: v.copy() for k, v in cpu.params.items()}
    if ref64 is not None:       # CUDA's float32 distance to the float64 answer, over the CPU's
        def ratio(gpu_d, cpu_d, ref):
            return max(rel_norm(gpu_d[k], ref[k]) / max(rel_norm(cpu_d[k], ref[k]), 1e-6) for k in ref)
        r["grad_vs_cpu"] = ratio(g2, g1, ref64["grads"])
        r["param_vs_cpu"] = ratio(gpu.params, cpu.params, ref64["params"])
    else:
        bar = BARS["float32"]["grad_vs_cpu"]
        r["grad_vs_cpu"] = r["grad_norm"] / 1e-2 * bar
        r["param_vs_cpu"] = r["param_norm"] / 1e-2 * bar
    r["buffer"] = max((rel(gpu.buffers[k], cpu.buffers[k]) for k in cpu.buffers), default=0.0)
    r["compile_s"] = compile_s
    return r


def _spec(name: str):
    """A spec path, a zoo name, or "unet-small" (the tests' 3-level U-Net: the zoo U-Net at
    572x572 is too slow for a float64 CPU reference)."""
    if name == "unet-small":
        sys.path.insert(0, str(ROOT / "tests"))
        from test_compiler import SMALL_UNET
        return SMALL_UNET
    return name if name.endswith((".yaml", ".yml")) else str(ROOT / "specs" / f"{name}.yaml")


def main(argv) -> int:
    """argv: NET[:B] ... [--dtypes float64,float32]"""
    dtypes = ["float64", "float32"]
    if "--dtypes" in argv:
        i = argv.index("--dtypes")
        dtypes = argv[i + 1].split(",")
        argv = argv[:i] + argv[i + 2:]
    failed = []
    for arg in argv or ["lenet5"]:
        name, _, b = arg.partition(":")
        spec = _spec(name)
        ref64 = None
        for dtype in dtypes:
            t0 = time.perf_counter()
            try:
                r = parity(spec, int(b or 4), dtype, ref64)
                if dtype == "float64":
                    ref64 = {"grads": r["grads_cpu"], "params": r["params_cpu"]}
            except Exception as e:  # noqa: BLE001 -- one line per net, then the traceback
                import traceback
                traceback.print_exc()
                print(f"{name} {dtype}: RAISED {type(e).__name__}: {e}", flush=True)
                failed.append(f"{name} {dtype}")
                continue
            ok = all(r[k] <= bar for k, bar in BARS[dtype].items())
            f32 = dtype == "float32" and ref64 is not None     # ratios to the float64 run
            print(f"{name} B={int(b or 4)} {dtype}: {'ok' if ok else 'FAILED'}  forward {r['forward']:.1e}  "
                  f"loss {r['loss']:.1e}  grad {r['grad']:.1e} ({r['worst_grad']}), in norm {r['grad_norm']:.1e}"
                  + (f" (x{r['grad_vs_cpu']:.2f} the CPU float32's distance to float64)  " if f32 else "  ") +
                  f"params after 2 steps {r['param']:.1e}, in norm {r['param_norm']:.1e}"
                  + (f" (x{r['param_vs_cpu']:.2f})  " if f32 else "  ") +
                  f"buffers {r['buffer']:.1e}  (cuda compile {r['compile_s']:.1f} s, "
                  f"total {time.perf_counter() - t0:.1f} s)", flush=True)
            if not ok:
                failed.append(f"{name} {dtype}")
    print("parity:", "FAILED " + ", ".join(failed) if failed else "all ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
