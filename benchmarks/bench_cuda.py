"""GPU training-step benchmark: netspec backend="cuda" against PyTorch (cuDNN) in the same run.

For each net (LeNet-5 at B=64, ResNet-20 at B=128, SGD momentum 0.9, softmax cross-entropy):
compile and warm up; time each launch path once (numba's dispatcher per launch, pre-marshalled
launches, the step as one CUDA graph: the default, see compiler/ops/cuda/common.py); then time
the default path and PyTorch (``torch.backends.cudnn.benchmark = True``, the same architecture
built generically by runtime/torch_twin.py, when torch with CUDA is present) in ``--rounds``
alternating windows of ``--steps`` steps of ``net.step(x, y, want_loss=False)``, each window
synchronised at both ends (the loss is not copied back per step).  A candidate's time is its
fastest window; the ratio is of those.  Reports ms/step, images/s and the kernel launches per
step (the bound launch sequence: forward, backward and optimizer).

Writes ``benchmarks/results/cuda.json`` and ``cuda.md``.  Needs a GPU (exit 2 without one).
Usage: ``python benchmarks/bench_cuda.py [--steps 50] [--rounds 5] [--nets lenet5,resnet20]``.
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


def _window(step, sync, n) -> float:
    """ms per step over n steps, queue drained before and after."""
    sync()
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    sync()
    return (time.perf_counter() - t0) / n * 1e3


def bench_netspec(name, B, steps):
    """-> (results, step, sync): compile + first step, then each launch path once (numba's
    dispatcher, pre-marshalled launches, CUDA graph); the net is left on the default path."""
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
    from compiler.ops.cuda import common
    by_path = {}
    # the default path last, so the net is left as the user gets it
    for path, (fast, graphs) in (("dispatcher", (False, False)), ("fast_launch", (True, False)),
                                 ("graph", (common.FAST_LAUNCH, common.GRAPHS))):
        common.FAST_LAUNCH, common.GRAPHS = fast, graphs
        net._seqs.clear()
        net._graphs.clear()
        for _ in range(5):
            net.step(x, y, want_loss=False)
        net.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            net.step(x, y, want_loss=False)
        t1 = time.perf_counter()
        net.synchronize()
        by_path[path] = {"ms_per_step": (time.perf_counter() - t0) / steps * 1e3,
                         "host_enqueue_ms": (t1 - t0) / steps * 1e3}
    launches = len(net._seq("train", "grads")) + len(net._opt_seq)
    res = {"launches_per_step": launches,
           "graph": bool(net._graphs and all(g for _, g in net._graphs.values())),
           "by_launch_path": by_path,
           "compile_s": compile_s, "first_step_s": first_s, "loss": net.step(x, y)}
    return res, (lambda: net.step(x, y, want_loss=False)), net.synchronize


def bench_torch(name, B):
    """-> (results, step, sync) for the same net in PyTorch (cuDNN, benchmark mode), or None."""
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
    return {"device": torch.cuda.get_device_name()}, step, torch.cuda.synchronize


def bench_pair(name, B, steps, rounds):
    """netspec and torch timed in alternating windows of ``steps`` steps, ``rounds`` each;
    a candidate's time is its fastest window (medians reported too), so a slow phase of the
    machine hits both and the ratio is measured under the same conditions."""
    ns, ns_step, ns_sync = bench_netspec(name, B, steps)
    t = bench_torch(name, B)
    cands = {"netspec": (ns_step, ns_sync)}
    if t:
        cands["torch"] = (t[1], t[2])
    wins = {k: [] for k in cands}
    for _ in range(rounds):
        for k, (step, sync) in cands.items():
            for _ in range(3):
                step()
            wins[k].append(_window(step, sync, steps))
    ms = {k: min(v) for k, v in wins.items()}
    ns.update(ms_per_step=ms["netspec"], median_ms_per_step=float(np.median(wins["netspec"])),
              images_per_s=B / ms["netspec"] * 1e3, windows_ms=wins["netspec"])
    r = {"batch": B, "netspec": ns, "torch": None}
    if t:
        r["torch"] = dict(t[0], ms_per_step=ms["torch"], median_ms_per_step=float(np.median(wins["torch"])),
                          images_per_s=B / ms["torch"] * 1e3, windows_ms=wins["torch"])
        r["speed_ratio_torch_over_netspec"] = ms["torch"] / ms["netspec"]
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5, help="alternating timed windows per candidate")
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
           "steps": a.steps, "rounds": a.rounds, "nets": {}}
    for name in a.nets.split(","):
        B = NETS[name]
        r = bench_pair(name, B, a.steps, a.rounds)
        res["nets"][name] = r
        print(name, json.dumps(r), flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cuda.json").write_text(json.dumps(res, indent=2))
    lines = [f"# CUDA training step ({res['gpu']}; fastest of {a.rounds} alternating windows of {a.steps} steps)", "",
             "| net | B | netspec ms/step | img/s | launches/step | torch ms/step | img/s | torch/netspec "
             "| ms/step (host enqueue ms): dispatcher / pre-marshalled / graph |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in res["nets"].items():
        n, t = r["netspec"], r["torch"] or {}
        paths = " / ".join(f"{p['ms_per_step']:.2f} ({p['host_enqueue_ms']:.2f})"
                           for p in n["by_launch_path"].values())
        lines.append(f"| {name} | {r['batch']} | {n['ms_per_step']:.2f} | {n['images_per_s']:.0f} | "
                     f"{n['launches_per_step']} | {t.get('ms_per_step', float('nan')):.2f} | "
                     f"{t.get('images_per_s', float('nan')):.0f} | "
                     f"{r.get('speed_ratio_torch_over_netspec', float('nan')):.2f} | {paths} |")
    (out / "cuda.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
