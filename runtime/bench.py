"""Side-by-side speed measurement: our compiled step vs PyTorch eager, same process.

Measured for
  * train step: forward + backward + SGD-momentum update (softmax cross-entropy);
  * inference: eval-mode forward of one batch.
PyTorch (optional) runs the same architecture (built generically from the checked spec by
``runtime.torch_twin``), with the same thread count, in its default NCHW layout and in
channels_last; the faster of the two is the competitor the ratio is computed against.

The machines are shared, so the candidates are measured *interleaved*: every round runs one
timed window of each candidate in turn (a few untimed calls, then at least ``steps`` calls
and 50 ms: see ``_interleaved``), and a candidate's time is the minimum over rounds (what the code can do when the neighbours leave it a core; a median
mostly measures the neighbours).  Medians are reported too.  Only ratios measured in one
run mean anything: the machine type varies between sessions.
"""
from __future__ import annotations

import os
import statistics
import time

import numpy as np


BUDGET_S = 180.0    # timed rounds of one bench run at most (about): big nets get fewer rounds


def _interleaved(fns: dict, steps: int, windows: int, warmup: int, min_window_s: float = 0.05,
                 budget_s: float | None = None, info: dict | None = None) -> dict:
    """{name: (min, median) seconds per call} over ``windows`` interleaved rounds.

    Every window starts with ``warmup`` untimed calls of its own candidate, then times
    ``steps`` calls or more, so that a window lasts at least ``min_window_s``.  Why: right
    after a PyTorch window its OpenMP workers keep spinning for a while and the caches hold
    its tensors, so the first calls of whoever runs next are slow (measured: our LeNet-5
    step took 8.2, 3.2, 2.9 ms for its first three calls after a torch window, then 2.5-2.7;
    with 3-call windows and no re-warm-up that artefact alone made it 4.0 ms).  Torch's own
    times are the same either way.

    ``budget_s`` (default BUDGET_S): when the rounds would take longer (a U-Net step takes
    seconds: 7 rounds of 5 calls of 6 candidates ran past 10 minutes), the plan shrinks:
    one warm-up call, one timed call per window, then fewer rounds (at least 2).  ``info``
    receives the plan used (windows, warmup, steps)."""
    per_call = {}
    for k, fn in fns.items():
        for _ in range(warmup):
            fn()
        t = time.perf_counter()
        fn()
        per_call[k] = time.perf_counter() - t
    budget = BUDGET_S if budget_s is None else budget_s

    def plan(steps, warmup):
        reps = {k: max(steps, int(min_window_s / max(v, 1e-6)) + 1) for k, v in per_call.items()}
        return reps, sum((warmup + reps[k]) * v for k, v in per_call.items())

    reps, round_s = plan(steps, warmup)
    if windows * round_s > budget:
        warmup, steps = min(warmup, 1), 1
        reps, round_s = plan(steps, warmup)
        windows = max(2, min(windows, int(budget / max(round_s, 1e-9))))
    if info is not None:
        info.update(windows=windows, warmup=warmup, steps=steps)
    per = {k: [] for k in fns}
    for _ in range(windows):
        for k, fn in fns.items():
            for _ in range(warmup):
                fn()
            t = time.perf_counter()
            for _ in range(reps[k]):
                fn()
            per[k].append((time.perf_counter() - t) / reps[k])
    return {k: (min(v), statistics.median(v)) for k, v in per.items()}


def _ours(spec, batch_size: int):
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
    return compile_s, (lambda: net.step(x, y)), (lambda: net.forward(x))


def _torch(report, batch_size: int, threads: int):
    try:
        import torch
    except ImportError:
        return None
    from runtime.torch_twin import build_torch_module
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    x0 = torch.tensor(rng.standard_normal((batch_size, *report.input_shape)).astype(np.float32))
    y = torch.tensor(rng.integers(0, int(np.prod(report.output_shape)), batch_size))
    fns = {}
    for layout in ("nchw", "channels_last"):
        m = build_torch_module(report)
        x = x0
        if layout == "channels_last" and x0.dim() == 4:
            m = m.to(memory_format=torch.channels_last)
            x = x0.contiguous(memory_format=torch.channels_last)
        opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)
        lossf = torch.nn.CrossEntropyLoss()

        def step(m=m, x=x, opt=opt, lossf=lossf):
            m.train()
            opt.zero_grad(set_to_none=True)
            loss = lossf(m(x).reshape(batch_size, -1), y)
            loss.backward()
            opt.step()

        def infer(m=m, x=x):
            m.eval()
            with torch.no_grad():
                m(x)
        fns[layout] = (step, infer)
    return torch.__version__, fns


def bench_spec(spec, batch_size: int, threads: int | None = None, steps=3, windows=7, warmup=2) -> dict:
    import netspec
    if not hasattr(spec, "layers"):
        spec = netspec.load(spec)
    threads = threads or len(os.sched_getaffinity(0))
    report = netspec.check(spec)
    compile_s, ours_train, ours_infer = _ours(spec, batch_size)
    fns = {"ours/train": ours_train, "ours/infer": ours_infer}
    t = _torch(report, batch_size, threads)
    if t:
        for layout, (step, infer) in t[1].items():
            fns[f"{layout}/train"], fns[f"{layout}/infer"] = step, infer
    load0 = os.getloadavg()[0]
    used: dict = {}
    m = _interleaved(fns, steps, windows, warmup, info=used)
    res = {"name": spec.name, "batch_size": batch_size, "threads": threads,
           "method": f"min over {used['windows']} interleaved windows of >= {used['steps']} calls (>= 50 ms), "
                     f"each after {used['warmup']} untimed calls",
           "loadavg": [load0, os.getloadavg()[0]],
           "ours": {"compile_and_first_call_s": compile_s,
                    "train_step_ms": m["ours/train"][0] * 1e3, "train_step_median_ms": m["ours/train"][1] * 1e3,
                    "train_images_per_s": batch_size / m["ours/train"][0],
                    "infer_ms": m["ours/infer"][0] * 1e3, "infer_median_ms": m["ours/infer"][1] * 1e3,
                    "infer_images_per_s": batch_size / m["ours/infer"][0]}}
    if t:
        res["torch"] = {"torch_version": t[0], "threads": threads}
        for layout in ("nchw", "channels_last"):
            res["torch"][layout] = {"train_step_ms": m[f"{layout}/train"][0] * 1e3,
                                    "train_step_median_ms": m[f"{layout}/train"][1] * 1e3,
                                    "infer_ms": m[f"{layout}/infer"][0] * 1e3,
                                    "infer_median_ms": m[f"{layout}/infer"][1] * 1e3}
        tt = res["torch"]
        best_train = min(tt["nchw"]["train_step_ms"], tt["channels_last"]["train_step_ms"])
        best_infer = min(tt["nchw"]["infer_ms"], tt["channels_last"]["infer_ms"])
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
