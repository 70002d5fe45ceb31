"""CPU benchmark: our compiled train step and inference vs PyTorch eager, side by side.

    python benchmarks/bench_cpu.py [--quick]

For lenet5 (B=64), resnet20 (B=128) and digits (B=64): train-step and inference times
(minimum over interleaved windows, medians kept in the JSON; runtime/bench.py says why) and
the speedup over the faster PyTorch layout (NCHW or channels_last), same threads, same
process. Then compile time, cold (empty cache dir, fresh process) and warm (same cache,
fresh process), for lenet5, resnet20 and resnet50 (train graph, compile + first step).
Writes benchmarks/results/cpu.json and cpu.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NETS = [("specs/lenet5.yaml", 64), ("specs/resnet20.yaml", 128), ("specs/digits.yaml", 64)]
COMPILE = [("specs/lenet5.yaml", 64), ("specs/resnet20.yaml", 128), ("specs/resnet50.yaml", 2)]

_CHILD = """
import sys, time, numpy as np
t = time.perf_counter()
import netspec, compiler
net = compiler.compile(netspec.load(sys.argv[1]), batch_size=int(sys.argv[2]))
x = np.zeros((net.batch_size, *net.input_shape), np.float32)
y = np.zeros(net.batch_size, np.int64)
net.step(x, y); net.forward(x)
print(time.perf_counter() - t)
"""


def compile_times(spec: str, batch: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, NETSPEC_CACHE_DIR=d, PYTHONPATH=str(ROOT))
        out = {}
        for kind in ("cold", "warm"):
            t = time.perf_counter()
            r = subprocess.run([sys.executable, "-c", _CHILD, spec, str(batch)], cwd=ROOT, env=env,
                               capture_output=True, text=True)
            wall = time.perf_counter() - t
            if r.returncode != 0:
                out[kind] = {"error": r.stderr.strip().splitlines()[-1:]}
            else:
                out[kind] = {"process_s": wall, "compile_and_first_step_s": float(r.stdout.split()[-1])}
        return out


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    from runtime.bench import TABLE_HEAD, bench_spec, format_row
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer windows, no compile timing")
    a = ap.parse_args()
    kw = dict(steps=3, windows=3, warmup=2) if a.quick else {}
    results = {"cpu": cpu_name(), "cores": len(os.sched_getaffinity(0)), "date": time.strftime("%Y-%m-%d"),
               "nets": [], "compile": {}}
    for spec, b in NETS:
        r = bench_spec(str(ROOT / spec), b, **kw)
        results["nets"].append(r)
        print(format_row(r), flush=True)
    if not a.quick:
        for spec, b in COMPILE:
            results["compile"][spec] = compile_times(spec, b)
            print(spec, results["compile"][spec], flush=True)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "cpu.json").write_text(json.dumps(results, indent=2))
    md = [f"# CPU benchmark ({results['cpu']}, {results['cores']} cores, {results['date']})", "",
          "Times: minimum over interleaved windows (ours, torch NCHW, torch channels_last in turn; "
          "each window re-warms its candidate and lasts >= 50 ms, see runtime/bench.py); "
          "load average during each net: " + ", ".join(f"{r['name']} {r['loadavg'][0]:.1f}-{r['loadavg'][1]:.1f}"
                                                     for r in results["nets"]) + ".", "",
          TABLE_HEAD] + [format_row(r) for r in results["nets"]]
    if results["compile"]:
        md += ["", "| spec | batch | cold compile + first step (s) | warm (s) |", "|---|---|---|---|"]
        for spec, b in COMPILE:
            c = results["compile"][spec]
            f = lambda k: f"{c[k]['compile_and_first_step_s']:.1f}" if "compile_and_first_step_s" in c[k] else "error"
            md.append(f"| {spec} | {b} | {f('cold')} | {f('warm')} |")
    (out / "cpu.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
