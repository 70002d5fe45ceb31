"""Side-by-side speed measurement: our compiled step vs PyTorch eager, same process.

Medians over repeated timed windows after warm-up (each window = ``steps`` calls), for
  * train step: forward + backward + SGD-momentum update (softmax cross-entropy);
  * inference: eval-mode forward of one batch.
PyTorch (optional) runs the same architecture (built generically from the checked spec by
``runtime.torch_twin``), with the same thread count, in its default NCHW layout and in
channels_last; the faster of the two is the competitor the ratio is computed against.
Only ratios measured in one run mean anything: the machine type varies between sessions.
"""
from __future__ import annotations

import os
import statistics
import time

import numpy as np


def _windows(fn, steps: int, windows: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    meds = []
    for _ in range(windows):
        t = time.perf_counter()
        for _ in range(steps):
            fn()
        meds.append((time.perf_counter() - t) / steps)
    return statistics.median(meds)


def bench_ours(spec, batch_size: int, steps=5, windows=5, warmup=3) -> dict:
    import compiler
    t0 = time.perf_counter()
    net = compiler.compile(spec, batch_size=batch_size,
                           optimizer={"sgd": {"lr": 0.01, "momentum": 0.9}})
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch_size, *net.input_shape)).astype(np.float32)
    k = int(np.prod(net.output_shape))
    y = rng.integers(0, k, batch_size)
    net.lr = 1e-3
    net.step(x, y)
    net.forward(x)
    compile_s = time.perf_counter() - t0
    train = _windows(lambda: net.step(x, y), steps, windows, warmup)
    infer = _windows(lambda: net.forward(x), steps, windows, warmup)
    return {"compile_and_first_call_s": compile_s, "train_step_ms": train * 1e3,
            "train_images_per_s": batch_size / train, "infer_ms": infer * 1e3,
            "infer_images_per_s": batch_size / infer}


def bench_torch(report, batch_size: int, threads: int, steps=5, windows=5, warmup=3) -> dict | None:
    try:
        import torch
    except ImportError:
        return None
    from runtime.torch_twin import build_torch_module
    torch.set_num_threads(threads)
    out = {"torch_version": torch.__version__, "threads": threads}
    rng = np.random.default_rng(0)
    x0 = torch.tensor(rng.standard_normal((batch_size, *report.input_shape)).astype(np.float32))
    y = torch.tensor(rng.integers(0, int(np.prod(report.output_shape)), batch_size))
    for layout in ("nchw", "channels_last"):
        m = build_torch_module(report)
        x = x0
        if layout == "channels_last" and x0.dim() == 4:
            m = m.to(memory_format=torch.channels_last)
            x = x0.contiguous(memory_format=torch.channels_last)
        opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)
        lossf = torch.nn.CrossEntropyLoss()

        def step():
            opt.zero_grad(set_to_none=True)
            loss = lossf(m(x).reshape(batch_size, -1), y)
            loss.backward()
            opt.step()

        m.train()
        train = _windows(step, steps, windows, warmup)
        m.eval()
        with torch.no_grad():
            infer = _windows(lambda: m(x), steps, windows, warmup)
        out[layout] = {"train_step_ms": train * 1e3, "infer_ms": infer * 1e3}
    return out


def bench_spec(spec, batch_size: int, threads: int | None = None, **kw) -> dict:
    import netspec
    if not hasattr(spec, "layers"):
        spec = netspec.load(spec)
    threads = threads or len(os.sched_getaffinity(0))
    report = netspec.check(spec)
    res = {"name": spec.name, "batch_size": batch_size, "threads": threads,
           "ours": bench_ours(spec, batch_size, **kw)}
    t = bench_torch(report, batch_size, threads, **kw)
    if t:
        res["torch"] = t
        best_train = min(t["nchw"]["train_step_ms"], t["channels_last"]["train_step_ms"])
        best_infer = min(t["nchw"]["infer_ms"], t["channels_last"]["infer_ms"])
        res["train_speedup_vs_torch"] = best_train / res["ours"]["train_step_ms"]
        res["infer_speedup_vs_torch"] = best_infer / res["ours"]["infer_ms"]
    return res


def format_row(r: dict) -> str:
    o = r["ours"]
    s = (f"| {r['name']} | {r['batch_size']} | {o['train_step_ms']:.2f} | {o['infer_ms']:.2f} | ")
    if "torch" in r:
        t = r["torch"]
        s += (f"{t['nchw']['train_step_ms']:.2f} / {t['channels_last']['train_step_ms']:.2f} | "
              f"{t['nchw']['infer_ms']:.2f} / {t['channels_last']['infer_ms']:.2f} | "
              f"**{r['train_speedup_vs_torch']:.2f}x** | **{r['infer_speedup_vs_torch']:.2f}x** |")
    else:
        s += "– | – | – | – |"
    return s


TABLE_HEAD = ("| net | batch | ours train ms | ours infer ms | torch train ms (NCHW / CL) | "
              "torch infer ms (NCHW / CL) | train speedup | infer speedup |\n"
              "|---|---|---|---|---|---|---|---|")
