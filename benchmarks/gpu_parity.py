"""CPU vs CUDA parity of one whole net, in float64 and float32: forward, loss, every
gradient, and the parameters and BatchNorm buffers after two SGD-momentum steps (bars: BARS).

Usage: ``python benchmarks/gpu_parity.py NET[:B] ... [--dtypes float64,float32]`` where NET is a zoo name (specs/NET.yaml)
or a spec path; B defaults to 4.  Needs a GPU (or NUMBA_ENABLE_CUDASIM=1 for tiny nets).
Prints one line per net and exits 1 if any net misses the bar.  benchmarks/gpu_check.sh runs
it for lenet5, resnet20 and unet.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# float64 is the exactness gate (same maths, only the summation order differs); float32 is
# judged like tests/test_parity_torch.py: forward and loss element-wise, gradients in norm,
# because float32 rounding alone moves some gradients far more than 1e-4 element-wise
# (measured: ResNet-20 B=4 layer1.2.bn2.bias, CPU float32 vs float64, 6.7e-3; U-Net final.bias
# is a sum of 150,544 nearly cancelling terms).
BARS = {"float64": {"forward": 1e-7, "loss": 1e-7, "grad": 1e-7, "param": 1e-7, "buffer": 1e-7},
        "float32": {"forward": 1e-4, "loss": 1e-4, "grad_norm": 1e-3, "param_norm": 1e-4, "buffer": 1e-4}}


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def rel_norm(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def parity(spec: str, B: int, dtype: str) -> dict:
    """CUDA vs CPU in one dtype -> errors {"forward", "loss", "grad", "grad_norm", "param",
    "param_norm", "buffer", "worst_grad", "compile_s"}."""
    import compiler
    from compiler.codegen.cuda import to_cuda
    opt = {"sgd": {"lr": 0.01, "momentum": 0.9}}
    dt = np.dtype(dtype)
    cpu = compiler.compile(spec, backend="cpu", batch_size=B, seed=0, optimizer=opt, dtype=dt)
    t0 = time.perf_counter()
    gpu = to_cuda(compiler.compile(spec, backend="cuda", batch_size=B, seed=0, optimizer=opt, dtype=dt))
    compile_s = time.perf_counter() - t0
    print(f"  {Path(spec).stem} {dtype}: compiled for cuda in {compile_s:.1f} s", flush=True)
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
    cpu.lr = gpu.lr = 0.01
    for _ in range(2):
        cpu.step(x, t)
        gpu.step(x, t, want_loss=False)
    gpu.synchronize()
    r["param"] = max(rel(gpu.params[k], cpu.params[k]) for k in cpu.params)
    r["param_norm"] = max(rel_norm(gpu.params[k], cpu.params[k]) for k in cpu.params)
    r["buffer"] = max((rel(gpu.buffers[k], cpu.buffers[k]) for k in cpu.buffers), default=0.0)
    r["compile_s"] = compile_s
    return r


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
        spec = name if name.endswith((".yaml", ".yml")) else str(ROOT / "specs" / f"{name}.yaml")
        for dtype in dtypes:
            t0 = time.perf_counter()
            try:
                r = parity(spec, int(b or 4), dtype)
            except Exception as e:  # noqa: BLE001 -- one line per net, then the traceback
                import traceback
                traceback.print_exc()
                print(f"{name} {dtype}: RAISED {type(e).__name__}: {e}", flush=True)
                failed.append(f"{name} {dtype}")
                continue
            ok = all(r[k] <= bar for k, bar in BARS[dtype].items())
            print(f"{name} B={int(b or 4)} {dtype}: {'ok' if ok else 'FAILED'}  forward {r['forward']:.1e}  "
                  f"loss {r['loss']:.1e}  grad {r['grad']:.1e} ({r['worst_grad']}), in norm {r['grad_norm']:.1e}  "
                  f"params after 2 steps {r['param']:.1e}, in norm {r['param_norm']:.1e}  "
                  f"buffers {r['buffer']:.1e}  (cuda compile {r['compile_s']:.1f} s, "
                  f"total {time.perf_counter() - t0:.1f} s)", flush=True)
            if not ok:
                failed.append(f"{name} {dtype}")
    print("parity:", "FAILED " + ", ".join(failed) if failed else "all ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
