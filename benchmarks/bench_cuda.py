"""GPU training-step benchmark: netspec backend="cuda" against PyTorch (cuDNN) in the same run.

For each net (LeNet-5 at B=64, ResNet-20 at B=128, SGD momentum 0.9, softmax cross-entropy):
compile, warm up, then time ``--steps`` steps of ``net.step(x, y, want_loss=False)`` with one
synchronisation at the end (the loss is not copied back per step), and report ms/step,
images/s and the kernel launches per step (the bound launch sequence: forward, backward and
optimizer).  PyTorch is timed the same way (``torch.backends.cudnn.benchmark = True``, the
same architecture built generically by runtime/torch_twin.py) when torch with CUDA is present.

Writes ``benchmarks/results/cuda.json`` and ``cuda.md``.  Needs a GPU (exit 2 without one).
Usage: ``python benchmarks/bench_cuda.py [--steps 50] [--nets lenet5,resnet20]``.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
NETS = {"lenet5": 64, "resnet20": 128}
OPT = {"sgd": {"lr": 0.01, "momentum": 0.9}}


def bench_netspec(name, B, steps):
    import compiler
    from compiler.codegen.cuda import to_cuda
    t0 = time.perf_counter()
    net = to_cuda(compiler.compile(str(ROOT / "specs" / f"{name}.yaml"), backend="cuda", batch_size=B,
                                   optimizer=OPT, seed=0))
    compile_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, *net.input_shape)).astype(np.float32)
    y = rng.integers(0, int(np.prod(net.output_shape)), B)
    net.lr = 0.01
    t0 = time.perf_counter()
    net.step(x, y)                         # first step: kernel compilation
    first_s = time.perf_counter() - t0
    for _ in range(5):
        net.step(x, y, want_loss=False)
    net.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        net.step(x, y, want_loss=False)
    net.synchronize()
    dt = (time.perf_counter() - t0) / steps
    launches = len(net._seq("train", "grads")) + len(net._opt_seq)
    return {"ms_per_step": dt * 1e3, "images_per_s": B / dt, "launches_per_step": launches,
            "compile_s": compile_s, "first_step_s": first_s, "loss": net.step(x, y)}


def bench_torch(name, B, steps):
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    import netspec
    from runtime.torch_twin import build_torch_module
    torch.backends.cudnn.benchmark = True
    report = netspec.check(netspec.load(str(ROOT / "specs" / f"{name}.yaml")))
    m = build_torch_module(report).cuda().train()
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(B, *report.input_shape, device="cuda")
    y = torch.randint(0, 10, (B,), device="cuda")
    lossf = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        out = m(x)
        out = out.reshape(B, -1) if not isinstance(out, (tuple, list)) else out[0].reshape(B, -1)
        lossf(out, y).backward()
        opt.step()
    for _ in range(10):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    return {"ms_per_step": dt * 1e3, "images_per_s": B / dt, "device": torch.cuda.get_device_name()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--nets", default=",".join(NETS))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args(argv)
    from compiler.codegen.cuda_backend import gpu_available, simulator
    if not gpu_available() or simulator():
        print("bench_cuda: no GPU (numba.cuda.is_available() is False); nothing measured", file=sys.stderr)
        return 2
    from numba import cuda
    res = {"machine": platform.node(), "gpu": cuda.get_current_device().name.decode()
           if isinstance(cuda.get_current_device().name, bytes) else str(cuda.get_current_device().name),
           "steps": a.steps, "nets": {}}
    for name in a.nets.split(","):
        B = NETS[name]
        r = {"batch": B, "netspec": bench_netspec(name, B, a.steps), "torch": bench_torch(name, B, a.steps)}
        if r["torch"]:
            r["speed_ratio_torch_over_netspec"] = r["torch"]["ms_per_step"] / r["netspec"]["ms_per_step"]
        res["nets"][name] = r
        print(name, json.dumps(r), flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cuda.json").write_text(json.dumps(res, indent=2))
    lines = [f"# CUDA training step ({res['gpu']}, {a.steps} timed steps)", "",
             "| net | B | netspec ms/step | img/s | launches/step | torch ms/step | img/s | torch/netspec |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in res["nets"].items():
        n, t = r["netspec"], r["torch"] or {}
        lines.append(f"| {name} | {r['batch']} | {n['ms_per_step']:.2f} | {n['images_per_s']:.0f} | "
                     f"{n['launches_per_step']} | {t.get('ms_per_step', float('nan')):.2f} | "
                     f"{t.get('images_per_s', float('nan')):.0f} | "
                     f"{r.get('speed_ratio_torch_over_netspec', float('nan')):.2f} |")
    (out / "cuda.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
