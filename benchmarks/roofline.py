"""Per-layer roofline of the compiled CPU train step: GFLOP/s of every conv / linear layer of
ResNet-20 (forward and backward separately) beside the sgemm GFLOP/s of this machine,
measured in the same run.

    python benchmarks/roofline.py [--spec specs/resnet20.yaml] [--batch 128] [--windows 5]

Method: compile the train step, wrap every op's ``forward``/``backward`` launcher with a
timer, run ``windows`` timed windows of 3 steps and keep, per op call site, the minimum over
windows (the machine is shared: minima are what the code can do, medians what the
neighbours let it do).  Call sites are grouped by (op, phase, input shape, weight shape,
stride): ResNet-20's identical blocks share a row, with the count.  FLOPs: conv 2*N*O*(C/G)
*kh*kw*OH*OW per pass (backward: dX and/or dW, counted only when computed; the first conv
has no dX), linear 2*N*I*O per pass.  Other ops are listed with their time only.

The sgemm roofs: single-threaded sgemm (1024^3, numpy, BLAS pinned to 1 thread), the same
from two Python threads at once (the 2-core roof of the scheme the convs use), and one
sgemm of the shape the 16-channel convs issue (16 x 16 x 1088).
Writes benchmarks/results/roofline.json and roofline.md.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def sgemm_roofs(reps: int = 10) -> dict:
    from threadpoolctl import threadpool_limits
    out = {}
    with threadpool_limits(1, "blas"):
        for name, (M, N, K) in {"sgemm_1024": (1024, 1024, 1024), "sgemm_conv16": (16, 1088, 16)}.items():
            a = np.random.rand(M, K).astype(np.float32)
            b = np.random.rand(K, N).astype(np.float32)
            c = np.empty((M, N), np.float32)
            inner = max(1, int(2e8 // (2 * M * N * K)))
            np.dot(a, b, out=c)
            best = 1e9
            for _ in range(reps):
                t = time.perf_counter()
                for _ in range(inner):
                    np.dot(a, b, out=c)
                best = min(best, (time.perf_counter() - t) / inner)
            out[name + "_1thread_gflops"] = 2 * M * N * K / best / 1e9
        # two Python threads, each its own 1-thread sgemm (numpy releases the GIL)
        bufs = [(np.random.rand(1024, 1024).astype(np.float32), np.random.rand(1024, 1024).astype(np.float32),
                 np.empty((1024, 1024), np.float32)) for _ in range(2)]

        def work(i):
            a, b, c = bufs[i]
            for _ in range(4):
                np.dot(a, b, out=c)
        best = 1e9
        for _ in range(max(2, reps // 3)):
            ts = [threading.Thread(target=work, args=(i,)) for i in range(2)]
            t = time.perf_counter()
            for th in ts:
                th.start()
            for th in ts:
                th.join()
            best = min(best, time.perf_counter() - t)
        out["sgemm_1024_2threads_gflops"] = 2 * 2 * 4 * 1024 ** 3 / best / 1e9
    return out


def _flops(op, xs, out_shape, attrs, dxs=None):
    """FLOPs of one launcher call (conv2d / linear), or None for other ops."""
    if op == "conv2d":
        from compiler.ops.conv import conv_out_hw
        x, w = xs[0], xs[1]
        N, O = out_shape[:2]
        OH, OW = conv_out_hw(*x.shape[2:], *w.shape[2:], attrs)    # before a fused pool
        per = 2 * N * O * w.shape[1] * w.shape[2] * w.shape[3] * OH * OW
        if dxs is None:
            return per
        return per * ((dxs[0] is not None) + (dxs[1] is not None))
    if op == "linear":
        x, w = xs[0], xs[1]
        per = 2 * x.shape[0] * w.shape[0] * w.shape[1]
        if dxs is None:
            return per
        return per * ((dxs[0] is not None) + (dxs[1] is not None))
    return None


def profile(spec: str, batch: int, windows: int, infer: bool = False) -> dict:
    import compiler
    import netspec
    from compiler.ops import OPS
    times = collections.defaultdict(float)
    calls = collections.Counter()
    flops = {}

    def key(op, phase, xs, attrs):
        ws = tuple(xs[1].shape) if len(xs) > 1 and xs[1] is not None and op in ("conv2d", "linear") else None
        x0 = next((x for x in xs if x is not None), None)     # bn_fold_bias has no first input
        return (op, phase, tuple(x0.shape) if x0 is not None else (), ws, tuple(attrs.get("stride", ())) or None)

    def wrap(op):
        f, b = op.forward, op.backward

        def fwd(xs, y, saved, ws, attrs, train, rng=None):
            t = time.perf_counter()
            f(xs, y, saved, ws, attrs, train, rng)
            k = key(op.name, "fwd", xs, attrs)
            times[k] += time.perf_counter() - t
            calls[k] += 1
            flops[k] = _flops(op.name, xs, y.shape, attrs)

        def bwd(xs, y, saved, dy, dxs, ws, attrs):
            t = time.perf_counter()
            b(xs, y, saved, dy, dxs, ws, attrs)
            k = key(op.name, "bwd", xs, attrs)
            times[k] += time.perf_counter() - t
            calls[k] += 1
            flops[k] = _flops(op.name, xs, y.shape, attrs, dxs)
        op.forward, op.backward = fwd, bwd

    for op in OPS.values():
        wrap(op)
    net = compiler.compile(netspec.load(str(ROOT / spec)), batch_size=batch,
                           optimizer={"sgd": {"lr": 0.01, "momentum": 0.9}})
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *net.input_shape)).astype(np.float32)
    y = rng.integers(0, int(np.prod(net.output_shape)), batch)
    net.lr = 1e-3
    run = (lambda: net.forward(x)) if infer else (lambda: net.step(x, y))
    for _ in range(2):
        run()
    best, step_best, steps = {}, 1e9, 3
    for _ in range(windows):
        times.clear()
        calls.clear()
        t = time.perf_counter()
        for _ in range(steps):
            run()
        step_best = min(step_best, (time.perf_counter() - t) / steps)
        for k, v in times.items():
            per_call = v / calls[k]
            if k not in best or per_call < best[k][0]:
                best[k] = (per_call, calls[k] // steps)
    rows = []
    for k, (per_call, count) in best.items():
        op, phase, xs, ws, stride = k
        fl = flops.get(k)
        rows.append({"op": op, "phase": phase, "x": list(xs), "w": list(ws) if ws else None,
                     "stride": list(stride) if stride else None, "count": count,
                     "ms_per_call": per_call * 1e3, "ms_total": per_call * count * 1e3,
                     "gflops": (fl / per_call / 1e9) if fl else None})
    rows.sort(key=lambda r: -r["ms_total"])
    return {"step_ms": step_best * 1e3, "layers": rows}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default="specs/resnet20.yaml")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--windows", type=int, default=5)
    ap.add_argument("--infer", action="store_true", help="profile the eval forward instead of the train step "
                    "(writes roofline_infer.json / .md)")
    a = ap.parse_args()
    from compiler.ops import parallel
    res = {"spec": a.spec, "batch": a.batch, "threads": parallel.WORKERS, "date": time.strftime("%Y-%m-%d %H:%M"),
           "loadavg_before": os.getloadavg()}
    res["roofs"] = sgemm_roofs()
    res.update(profile(a.spec, a.batch, a.windows, a.infer))
    res["roofs_after"] = sgemm_roofs()      # the machine is shared: bracket the profile
    res["loadavg_after"] = os.getloadavg()
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    name = "roofline_infer" if a.infer else "roofline"
    (out / f"{name}.json").write_text(json.dumps(res, indent=2))
    r0, r1 = res["roofs"], res["roofs_after"]
    what = "inference forward" if a.infer else "train step"
    md = [f"# Roofline: {a.spec} B={a.batch}, {what} ({res['date']}, {res['threads']} worker threads)", "",
          f"{what.capitalize()} (min over windows): **{res['step_ms']:.1f} ms**.  Load average before/after: "
          f"{res['loadavg_before'][0]:.2f} / {res['loadavg_after'][0]:.2f}.", "",
          "Conv GFLOP/s count the direct convolution's multiplies (2*N*O*C*kh*kw*OH*OW); the 3x3 "
          "stride-1 layers run row Winograd F(4,3) (compiler/ops/conv_wino.py, half the multiplies), "
          "so they can read above the sgemm roof.", "",
          "| roof (same run, before / after) | GFLOP/s |", "|---|---|"]
    for k in r0:
        md.append(f"| {k.replace('_gflops', '')} | {r0[k]:.0f} / {r1[k]:.0f} |")
    md += ["", "| op | phase | x | w | stride | count | ms/call | ms total | GFLOP/s | % of 2-thread sgemm |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    roof = max(r0["sgemm_1024_2threads_gflops"], r1["sgemm_1024_2threads_gflops"])
    for r in res["layers"]:
        g = r["gflops"]
        md.append(f"| {r['op']} | {r['phase']} | {r['x']} | {r['w'] or ''} | {r['stride'] or ''} | {r['count']} | "
                  f"{r['ms_per_call']:.2f} | {r['ms_total']:.2f} | {'' if g is None else f'{g:.0f}'} | "
                  f"{'' if g is None else f'{100 * g / roof:.0f}%'} |")
    (out / f"{name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
